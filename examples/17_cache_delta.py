"""17. Per-request cache accounting: ``cache_delta.read`` and ``cache_delta.created``.

Every result (and a stream's final result) carries ``cache_delta``: ``read`` counts prompt tokens
served from the cache (a restored row or a live sticky sequence), ``created`` counts tokens this
request added to the cache beyond that prefix. They map directly onto the
``cache_read_input_tokens`` / ``cache_creation_input_tokens`` fields of Anthropic-style usage
reports, for billing or dashboards. The four requests below show the typical combinations:

    cold                     read 0             created = committed tokens (prompt + generated)
    exact                    read = prompt      created = only what was not saved before
    partial                  read = warm prefix created = committed - warm prefix
    below min_tokens         read 0             created 0 (too short to be worth a save)

    .venv/bin/python examples/17_cache_delta.py
"""

from __future__ import annotations

import json

from _common import MODEL, parser, running_system

from actors.model.messages import Completion

PROMPT = (
    "Product description: a stainless steel water bottle that keeps drinks cold for 24 hours and hot for "
    "12 hours. It holds 750 millilitres, weighs 350 grams, fits in car cup holders and has a leak-proof lid "
    "with a carrying loop. It comes in six colours and is dishwasher safe.\n"
)


def row(label: str, r: Completion) -> dict[str, object]:
    return {"request": label, "cache_hit_kind": r.cache_hit_kind, "read": r.cache_delta.read,
            "created": r.cache_delta.created, "prompt_tokens": r.stats["prompt_tokens"],
            "committed_tokens": r.committed_tokens}


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL)
        rows = [
            row("cold", system.complete(MODEL, PROMPT + "Slogan:", max_tokens=12)),
            row("exact", system.complete(MODEL, PROMPT + "Slogan:", max_tokens=12)),
            row("partial", system.complete(MODEL, PROMPT + "Three keywords:", max_tokens=12)),
            row("short", system.complete(MODEL, "Slogan for a bottle:", max_tokens=12)),
        ]
        print(f"{'request':8} {'hit':8} {'read':>5} {'created':>8} {'prompt':>7} {'committed':>10}")
        for r in rows:
            print(f"{r['request']:8} {r['cache_hit_kind']:8} {r['read']:>5} {r['created']:>8} "
                  f"{r['prompt_tokens']:>7} {r['committed_tokens']:>10}")
        for r in rows:
            print(json.dumps(r, sort_keys=True))


if __name__ == "__main__":
    main()
