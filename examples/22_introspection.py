"""22. Introspection: what is loaded, how it is configured, what is cached, and what it is doing now.

A dashboard, a router or an operator's shell wants answers without reading logs:

* ``list_models()``: every model the supervisor knows, with its state, process id and restarts;
* ``model_info(model)``: one dict with context size, quantisation, cache fingerprint, free sequences,
  adapters and a memory estimate (weights and KV bytes);
* ``list_cached_prefixes(model, tokens)``: how much of a prompt is already cached, in which tier, and
  whether it is an exact or a prefix match, without touching the row or counting a hit: ask it before
  routing a request to the model that holds the longest prefix;
* ``vram_info(model)``: GPU memory as the model's process sees it (``available: False`` on a CPU host);
* ``phase`` / ``pending_len`` / ``last_cache_hit``: read from shared memory, no message, and
  ``counters()``: the cache's hit, miss and save counters, read from files.

    .venv/bin/python examples/22_introspection.py
"""

from __future__ import annotations

from _common import MODEL, fact, parser, running_system

PROMPT = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, lit the great lamp, and wrote "
    "one line in the logbook about the weather, the ships and the birds. The island was small and rocky, with "
    "a garden of cabbages behind the house and a goat that ate everything else. Supplies came by boat once a "
    "month, with letters from his sister in the city. On the last night of autumn he wrote"
)
INFO_KEYS = ("status", "phase", "pending", "context_size", "n_ctx_seq", "quant", "n_seq_max", "free_sequences",
             "adapters", "last_cache_hit")


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        fact("models before load", system.list_models())
        system.load_model(MODEL)
        fact("list_models", [(m["model_id"], m["state"], m["restarts"]) for m in system.list_models()])
        info = system.model_info(MODEL)
        fact("model_info", {k: info[k] for k in INFO_KEYS})
        fact("fingerprint", str(info["fingerprint"])[:16] + "...")
        memory = info["memory"] or {}
        fact("memory MiB", {k.removesuffix("_b"): round(v / (1 << 20), 1) for k, v in memory.items()
                            if isinstance(v, int)})

        tokens = system.tokenize(MODEL, PROMPT)
        fact("prompt tokens", len(tokens))
        fact("cached prefix before", system.list_cached_prefixes(MODEL, tokens))
        before = system.cache_counters()
        r = system.complete(MODEL, tokens, max_tokens=8)
        fact("reply", repr(r.reply))
        after = system.list_cached_prefixes(MODEL, tokens)
        fact("cached prefix after", {k: v for k, v in after.items() if k != "key"})
        longer = tokens + system.tokenize(MODEL, " a poem about the sea.", add_special=False)
        fact("cached prefix of a longer prompt", {k: v for k, v in system.list_cached_prefixes(MODEL, longer).items()
                                                  if k != "key"})
        fact("inspection counted no hit", system.cache_counters()["hits_exact"] == before.get("hits_exact", 0))

        fact("vram_info", system.vram_info(MODEL))
        fact("phase", system.phase(MODEL))
        fact("pending_len", system.pending_len(MODEL))
        fact("last_cache_hit", system.last_cache_hit(MODEL))
        again = system.complete(MODEL, tokens, max_tokens=8)
        fact("repeat cache_hit_kind", again.cache_hit_kind)
        fact("last_cache_hit after repeat", system.last_cache_hit(MODEL))
        counters = system.cache_counters()
        fact("counters", {k: counters[k] for k in ("hits_exact", "hits_partial", "misses") if k in counters})
        fact("saves", {k: v for k, v in counters.items() if k.startswith("saves") and v})


if __name__ == "__main__":
    main()
