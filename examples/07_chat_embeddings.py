"""07. Render a chat through the model's own template, and compute sentence embeddings.

``apply_chat_template`` renders messages with the chat template stored in the GGUF (the same one the
model was trained with), optionally straight to token ids, so the prompt you send matches what the
model expects. ``embed`` returns a pooled (mean) embedding of a text from a small embeddings context
the model keeps beside its generation context (``load_model(..., embeddings=True)``): enough for
similarity search or clustering with the model you already run.

    .venv/bin/python examples/07_chat_embeddings.py
"""

from __future__ import annotations

from _common import MODEL, cosine, fact, parser, running_system

SENTENCES = {
    "a": "The cat is sleeping on the warm windowsill.",
    "b": "A kitten naps in the sun by the window.",
    "c": "Quarterly tax filings are due at the end of the month.",
}


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL, embeddings=True)
        messages = [{"role": "system", "content": "You are concise."}, {"role": "user", "content": "What's 2+2?"}]
        text = system.apply_chat_template(MODEL, messages)
        ids = system.apply_chat_template(MODEL, messages, tokenize=True)
        reply = system.complete(MODEL, ids, max_tokens=8)
        fact("rendered prompt", repr(text))
        fact("prompt tokens", len(ids))
        fact("reply", repr(reply.reply.strip()))
        fact("finish_reason", reply.finish_reason)
        vecs = {k: system.embed(MODEL, s) for k, s in SENTENCES.items()}
        fact("embedding size", len(vecs["a"]))
        similar = cosine(vecs["a"], vecs["b"])
        unrelated = max(cosine(vecs["a"], vecs["c"]), cosine(vecs["b"], vecs["c"]))
        fact("cosine similar", round(similar, 4))
        fact("cosine unrelated", round(unrelated, 4))
        fact("similar closer than unrelated", similar > unrelated)


if __name__ == "__main__":
    main()
