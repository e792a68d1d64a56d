"""21. Speculative decoding: a draft model proposes tokens, the target model checks them in one pass.

``draft_tokens(draft_model, prefix, k)`` asks a (small, fast) model for its greedy continuation, at
most ``k`` tokens, within a deadline enforced by the model itself. ``verify(target_model, prefix,
candidates)`` runs all candidates through the target in a single forward pass and answers how many
leading ones it agrees with (``accepted``) and its own ``next`` token after them. Accept those, append
``next``, repeat: the output is exactly the target's greedy output, but each round costs one target
pass for up to ``k + 1`` tokens. Verification uses a scratch sequence, so sessions and the cache are
untouched.

Here both models are the bundled SmolLM2 loaded twice (a real setup drafts with a smaller model of the
same tokenizer), so every draft is accepted; a corrupted candidate shows where acceptance stops.

    .venv/bin/python examples/21_speculative.py
"""

from __future__ import annotations

from _common import MODEL, fact, parser, running_system

DRAFT = "draft"  # same bundled model under a second id: its own process, its own context
QUESTION = "Count from one to ten in words."
TARGET_LEN = 24  # tokens the speculative loop produces
K = 6  # tokens drafted per round


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL)
        system.load_model(DRAFT)
        prefix = system.apply_chat_template(MODEL, [{"role": "user", "content": QUESTION}], tokenize=True)

        draft = system.draft_tokens(DRAFT, prefix, 8)
        fact("draft", draft)
        fact("draft text", repr(system.detokenize(MODEL, draft)))
        v = system.verify(MODEL, prefix, draft)
        fact("verify accepted", v.accepted)
        fact("verify next", v.next)
        fact("verify eog", v.eog)

        bad = list(draft)
        bad[3] = (bad[3] + 1) % 49152  # any other token at index 3
        v2 = system.verify(MODEL, prefix, bad)
        fact("corrupted index", 3)
        fact("corrupted verify accepted", v2.accepted)
        fact("corrupted verify next equals draft[3]", v2.next == draft[3])

        out: list[int] = []
        rounds = 0
        while len(out) < TARGET_LEN:
            proposal = system.draft_tokens(DRAFT, prefix + out, K)
            check = system.verify(MODEL, prefix + out, proposal)
            rounds += 1
            out += proposal[:check.accepted]
            if check.eog or check.next is None:
                break
            out.append(check.next)
        reference = system.complete(MODEL, prefix, max_tokens=len(out), cache=False).generated
        fact("speculative text", repr(system.detokenize(MODEL, out)))
        fact("speculative tokens", len(out))
        fact("target passes", rounds)
        fact("equals target greedy output", list(reference[:len(out)]) == out)

        quick = system.draft_tokens(DRAFT, prefix, 500, timeout=0.3)  # the deadline ends the draft early
        fact("draft with 0.3s deadline", len(quick))
        fact("fewer than asked", len(quick) < 500)
        fact("draft phase after deadline", system.status(DRAFT)["phase"])


if __name__ == "__main__":
    main()
