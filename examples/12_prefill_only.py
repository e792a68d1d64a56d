"""12. Warm the cache without sampling: ``prefill_only``, then complete from the warm row.

``prefill_only`` runs a prompt through the model (restoring whatever prefix the cache already has),
saves the state and samples nothing. Use it to prime a system prompt before a burst of requests, or
to keep a session warm across a long pause without spending generation budget. It returns a
``finish_key``: pass it as ``parent_key`` to chain further warm-ups (only the new suffix is prefilled)
or to the request that finally generates. That request is then an exact hit: its first token comes
straight from the restored logits, so its time to first token is a fraction of a cold one.

    .venv/bin/python examples/12_prefill_only.py
"""

from __future__ import annotations

from _common import MODEL, fact, parser, running_system

SYSTEM_PROMPT = (
    "You are the booking assistant of a mountain hut. Answer in one sentence. The hut has 24 beds in four "
    "dormitories and two private rooms. Dinner is served at 7pm and breakfast at 6:30am. Bookings are "
    "required from June to September. Dogs are allowed in the private rooms only."
)


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL)
        turn1 = [{"role": "user", "content": "Hello! Do you have beds free in July?"}]
        turn2 = [*turn1, {"role": "assistant", "content": "Yes, we have beds free in July."},
                 {"role": "user", "content": "Can I bring my dog?"}]
        t1 = system.apply_chat_template(MODEL, turn1, system=SYSTEM_PROMPT, add_assistant=False, tokenize=True)
        t2 = system.apply_chat_template(MODEL, turn2, system=SYSTEM_PROMPT, tokenize=True)
        assert t2[: len(t1)] == t1, "the template renders turn 1 the same inside turn 2"

        # The same final prompt computed from scratch, for comparison (cache=False: no lookup, no save).
        cold = system.complete(MODEL, t2, max_tokens=16, cache=False)

        w1 = system.prefill_only(MODEL, t1)  # cold prefill of the first turn, saved
        w2 = system.prefill_only(MODEL, t2, parent_key=w1.finish_key)  # only turn 2's tokens are prefilled
        warm = system.complete(MODEL, t2, max_tokens=16, parent_key=w2.finish_key)
        fact("warm1 cache_hit_kind", w1.cache_hit_kind)
        fact("warm1 finish_reason", w1.finish_reason)
        fact("warm1 committed_tokens", w1.committed_tokens)
        fact("warm1 generated", len(w1.generated))
        fact("warm2 cache_hit_kind", w2.cache_hit_kind)
        fact("warm2 cache_delta", {"read": w2.cache_delta.read, "created": w2.cache_delta.created})
        fact("warm2 suffix tokens", len(t2) - len(t1))
        fact("complete cache_hit_kind", warm.cache_hit_kind)
        fact("complete cache_delta.read", warm.cache_delta.read)
        fact("prompt tokens", len(t2))
        fact("cold ttft_ms", round(cold.stats["ttft_ms"], 2))
        fact("warm ttft_ms", round(warm.stats["ttft_ms"], 2))
        fact("warm faster", warm.stats["ttft_ms"] < cold.stats["ttft_ms"])
        fact("reply", repr(warm.reply.strip()))


if __name__ == "__main__":
    main()
