"""Concurrent agents on one model: a shared system prompt, short distinct user turns.

Why: the common agent workload is many callers resending the same long system
prompt with a short question each.  The cache turns each request into a
restore + a short prefill; what is left is generation, and with
``n_seq_max > 1`` the model decodes the callers' sequences in one batch.
This measures whether that batching pays: per-request latency and the
aggregate generated tokens/s of 4 and 8 threads each calling
``system.complete`` at once, on a model loaded with ``n_seq_max=1``
(requests queue) and one with ``n_seq_max=4`` (they share each decode step),
against one stream (the same requests one after another).

Goal (issue 7): 4 concurrent requests with ``n_seq_max=4`` reach >= 2x the
aggregate tokens/s of one stream.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

from bench_util import QUESTIONS, context_for, latency, log, running_system, spread, text_tokens, tier_dirs

from actors.cache.config import CacheConfig

_serial = iter(range(1, 1 << 30))
_serial_lock = threading.Lock()


def next_serial() -> int:
    """A number no other request of this run used: every user turn differs, so no request is an exact hit."""
    with _serial_lock:
        return next(_serial)


def user_suffix(system: Any, model: str) -> list[int]:
    i = next_serial()
    text = f"\nUser {i}: {QUESTIONS[i % len(QUESTIONS)]}\nAssistant:"
    return system.tokenize(model, text, add_special=False)


def one_request(system: Any, model: str, prompt: list[int], max_tokens: int) -> dict[str, Any]:
    t = time.perf_counter()
    r = system.complete(model, prompt, max_tokens=max_tokens)
    t_end = time.perf_counter()
    return {"start": t, "end": t_end, "generated": len(r.generated), "kind": r.cache_hit_kind,
            "read": r.cache_delta.read, "queue_ms": r.stats["queue_ms"], "ttft_ms": r.stats["ttft_ms"]}


def single_stream(system: Any, model: str, sys_toks: list[int], n: int, max_tokens: int) -> list[dict[str, Any]]:
    """The same kind of request, one at a time: the one-stream baseline."""
    return [one_request(system, model, sys_toks + user_suffix(system, model), max_tokens) for _ in range(n)]


def concurrent(system: Any, model: str, sys_toks: list[int], n: int, max_tokens: int) -> list[dict[str, Any]]:
    """``n`` threads released together by a barrier, each calling ``system.complete`` once."""
    prompts = [sys_toks + user_suffix(system, model) for _ in range(n)]
    results: list[dict[str, Any] | BaseException | None] = [None] * n
    barrier = threading.Barrier(n)

    def agent(i: int) -> None:
        try:
            barrier.wait(30)
            results[i] = one_request(system, model, prompts[i], max_tokens)
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=agent, args=(i,), name=f"agent-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    for r in results:
        if not isinstance(r, dict):
            raise RuntimeError(f"agent failed: {r!r}")
    return [r for r in results if isinstance(r, dict)]


def summarize(rounds: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Aggregate tokens/s per round (all tokens / first start to last end), latencies pooled over rounds."""
    agg = []
    lat = []
    for rs in rounds:
        wall = max(r["end"] for r in rs) - min(r["start"] for r in rs)
        agg.append(sum(r["generated"] for r in rs) / wall)
        lat += [r["end"] - r["start"] for r in rs]
    kinds = sorted({r["kind"] for rs in rounds for r in rs})
    return {"aggregate_tok_s": spread(agg, nd=1), "latency_ms": latency(lat),
            "generated_per_request": statistics.median(r["generated"] for rs in rounds for r in rs),
            "queue_ms": spread([r["queue_ms"] for rs in rounds for r in rs], nd=2), "hit_kinds": kinds}


def raw_batch_ceiling(sys_toks: list[int], n_seq: int, steps: int, rounds: int) -> dict[str, Any]:
    """What llama.cpp itself gains from batching here: one ``step`` of ``n_seq`` decode rows vs one row.

    The raw binding, no actors, the same context settings as the n_seq_max=4
    model, every sequence holding the shared system prompt (one prefill, then
    ``kv_unpack`` into the others).  The actor's concurrent/one-stream ratio
    cannot exceed this one, so it tells a runtime cost from a hardware limit.
    """
    from actors.model.llama import Decode, Model, Prefill

    out: dict[str, Any] = {}
    with Model() as model:
        ctx = model.new_context(**context_for(n_seq, len(sys_toks) + 64 + steps))
        samplers = [model.sampler() for _ in range(n_seq)]
        try:
            ctx.prefill(0, sys_toks)
            blob = bytes(ctx.kv_pack(0))
            rates: dict[int, list[float]] = {1: [], n_seq: []}
            for _ in range(rounds):
                for rows in (1, n_seq):
                    for s in range(rows):  # each row back to the system prompt, its last position re-decoded
                        ctx.seq_clear(s)
                        ctx.kv_unpack(s, blob)
                        ctx.seq_rm(s, len(sys_toks) - 1, -1)
                    ctx.step([Prefill(s, sys_toks[-1:]) for s in range(rows)])
                    t = time.perf_counter()
                    for _ in range(steps):
                        ctx.step([Decode(s, samplers[s]) for s in range(rows)])
                    rates[rows].append(rows * steps / (time.perf_counter() - t))
        finally:
            for smp in samplers:
                smp.close()
            ctx.close()
    out["one_row_tok_s"] = spread(rates[1], nd=1)
    out[f"{n_seq}_rows_tok_s"] = spread(rates[n_seq], nd=1)
    out["ratio"] = round(statistics.median(rates[n_seq]) / statistics.median(rates[1]), 3)
    return out


def run(sys_len: int, agent_counts: list[int], max_tokens: int, rounds: int) -> dict[str, Any]:
    report: dict[str, Any] = {"system_prompt_tokens": sys_len, "max_tokens": max_tokens, "rounds": rounds,
                              "agents": agent_counts, "configs": {}}
    with tier_dirs() as (tmp, _shm):
        cfg = CacheConfig.create(tmp / "run", ram=1 << 30, default_tier="ram", fsync=False)
        with running_system(cfg) as system:
            for n_seq in (1, 4):
                model = f"agents-seq{n_seq}"
                ctx = context_for(n_seq, sys_len + 64 + max_tokens)
                system.load_model(model, context=ctx)
                sys_toks = text_tokens(system, model, sys_len)
                system.prefill_only(model, sys_toks)  # the shared system prompt, cached once (its ram is per model)
                single_stream(system, model, sys_toks, 2, max_tokens)  # warm: thread pools, first messages
                row: dict[str, Any] = {"context": ctx}
                row["single"] = summarize([single_stream(system, model, sys_toks, max(agent_counts), max_tokens)
                                           for _ in range(rounds)])
                for n in agent_counts:
                    row[f"concurrent_{n}"] = summarize([concurrent(system, model, sys_toks, n, max_tokens)
                                                        for _ in range(rounds)])
                    c = row[f"concurrent_{n}"]["aggregate_tok_s"]["median"]
                    row[f"concurrent_{n}"]["over_single"] = round(c / row["single"]["aggregate_tok_s"]["median"], 3)
                report["configs"][f"n_seq_max={n_seq}"] = row
                system.unload_model(model, save=False)
                log(f"agents n_seq_max={n_seq} done")
    # after the tree is gone, so nothing else competes for the cores
    report["raw_batch_ceiling"] = raw_batch_ceiling(sys_toks, 4, max_tokens, max(rounds, 3))
    log("raw batched decode done")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="4 agents, a 256-token system prompt: proves the harness")
    ap.add_argument("--system-tokens", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    a = ap.parse_args()
    report = run(a.system_tokens or (256 if a.smoke else 1024), [4] if a.smoke else [4, 8],
                 a.max_tokens or (16 if a.smoke else 24), a.rounds or (1 if a.smoke else 5))
    report["smoke"] = a.smoke
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
