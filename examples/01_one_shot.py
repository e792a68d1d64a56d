"""01. Load a model and run a one-shot completion; the same call again is an exact cache hit.

The first call prefills the prompt (cold) and saves its KV state, with the logits of the last prompt
position, to the cache. Repeating the call restores that row instead of recomputing it: the first token
is sampled with no prefill at all, and the reply is token for token the same as the cold one. This is
what a batch job or a retrying client gets for free when it sends the same prompt twice.

    .venv/bin/python examples/01_one_shot.py
"""

from __future__ import annotations

from _common import MODEL, fact, parser, running_system

PROMPT = (
    "Once upon a time, in a quiet village at the edge of a great pine forest, there lived an old clockmaker "
    "named Elias. Every morning he opened his small shop, wound the hundred clocks on its walls, and waited "
    "for customers who rarely came. One winter evening, a girl knocked on his door holding a broken pocket "
    "watch that had belonged to her grandmother, and she asked him"
)


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL)
        first = system.complete(MODEL, PROMPT, max_tokens=24)
        again = system.complete(MODEL, PROMPT, max_tokens=24)
        fact("reply", repr(first.reply.strip()))
        fact("prompt tokens", first.stats["prompt_tokens"])
        fact("first cache_hit_kind", first.cache_hit_kind)
        fact("repeat cache_hit_kind", again.cache_hit_kind)
        fact("first ttft_ms", round(first.stats["ttft_ms"], 2))
        fact("repeat ttft_ms", round(again.stats["ttft_ms"], 2))
        fact("identical replies", first.generated == again.generated)
        system.unload_model(MODEL)
        fact("models after unload", [m["model_id"] for m in system.list_models()])


if __name__ == "__main__":
    main()
