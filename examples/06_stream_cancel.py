"""06. Streaming tokens with ``infer``, and cancelling a stream by leaving the loop.

``system.infer`` returns an iterator of ``TokenChunk``s as the model samples them (text holds only
complete UTF-8 characters). Leaving the loop early, with ``break`` or an exception, cancels the request:
the model stops at the next token boundary, frees the sequence and still sends its final result, whose
``finish_reason`` is ``cancelled``. A chat UI's "stop" button is exactly this.

    .venv/bin/python examples/06_stream_cancel.py
"""

from __future__ import annotations

from _common import MODEL, fact, parser, running_system

MAX_TOKENS = 200


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL)
        tokens = system.tokenize(MODEL, "Once upon a time")
        stream = system.infer(MODEL, tokens, max_tokens=MAX_TOKENS)
        chunks = []
        for chunk in stream:
            chunks.append(chunk.text)
            if len(chunks) == 3:
                break  # leaving the loop cancels the request and waits for its final result
        result = stream.result
        assert result is not None
        fact("streamed text", repr("".join(chunks)))
        fact("chunks received", len(chunks))
        fact("finish_reason", result.finish_reason)
        fact("generated tokens", len(result.generated))
        fact("max_tokens", MAX_TOKENS)
        fact("phase after cancel", system.status(MODEL)["phase"])
        # A stream left to run to its end finishes with "length" (max_tokens) or "stop" (end of generation).
        full = system.infer(MODEL, tokens, max_tokens=8)
        text = full.text()
        assert full.result is not None
        fact("full stream", repr(text))
        fact("full stream finish_reason", full.result.finish_reason)


if __name__ == "__main__":
    main()
