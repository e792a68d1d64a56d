"""Time to first token, cold vs warm, through the binding and the cache (no actors).

For each prompt length: cold = prefill the whole prompt and sample one token;
warm exact = cache lookup + load + kv_unpack + set_logits + sample (no decode);
warm partial = the row of a prompt sharing all but the last 17 tokens, truncated
to the matched prefix, then the 17-token suffix prefilled. Each warm mode runs
per tier (ram, ram_file, disk). Also the raw kv_unpack time of the same row,
the goal being exact-hit TTFT within 2x of it, and a memcpy of the row's bytes:
the exact restore as bandwidth against memcpy. Every warm reply's first token
is checked against the cold one.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from actors.cache import CacheConfig, CacheService, RowMeta, ctx_params_hash, quant_byte
from actors.model.llama import Context, Model, Sampler, default_model_path
from actors.model.options import default_threads

SUFFIX = 17


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def memcpy_s(blob: bytes, reps: int) -> float:
    """Median time of one memcpy of ``blob`` into a pre-faulted buffer."""
    dst = ctypes.create_string_buffer(len(blob))
    ctypes.memmove(dst, blob, len(blob))
    times = []
    for _ in range(max(reps, 3)):
        t = time.perf_counter()
        ctypes.memmove(dst, blob, len(blob))
        times.append(time.perf_counter() - t)
    return med(times)


def first_token(ctx: Context, sampler: Sampler) -> int:
    sampler.reset()
    r = ctx.sample(0, sampler)  # the first token is known here; its decode belongs to the next tick
    return int(r.token)  # type: ignore[arg-type]


def run(lengths: list[int], reps: int) -> dict[str, Any]:
    rng = random.Random(7)
    threads = default_threads()
    report: dict[str, Any] = {"lengths": lengths, "reps": reps, "threads": threads, "rows": {}}
    with tempfile.TemporaryDirectory() as tmp, Model(default_model_path()) as model:
        n_ctx = max(lengths) + 64
        ctx = model.new_context(n_ctx=n_ctx, n_batch=2048, n_ubatch=512, n_threads=threads, flash_attn=False)
        greedy = model.sampler()
        fp = model.fingerprint
        quant = quant_byte(model.info.ftype)
        chash = ctx_params_hash({"type_k": "f16", "type_v": "f16", "flash_attn": False})
        cfg = CacheConfig.create(Path(tmp) / "run", ram=8 << 30, ram_file=(Path(tmp) / "shm", 8 << 30),
                                 disk=(Path(tmp) / "disk", 8 << 30), demote_to_disk=False,
                                 write_behind=False)  # each tier is saved to explicitly: no copies behind
        svc = CacheService(cfg, writers=0)
        client = svc.client()
        try:
            for n in lengths:
                base = [rng.randrange(100, model.info.n_vocab) for _ in range(n)]
                row: dict[str, Any] = {}
                cold_t: list[float] = []
                for _ in range(reps):
                    ctx.seq_clear(0)
                    t = time.perf_counter()
                    ctx.prefill(0, base)
                    tok_cold = first_token(ctx, greedy)
                    cold_t.append(time.perf_counter() - t)
                row["cold_s"] = med(cold_t)
                ctx.seq_clear(0)
                ctx.prefill(0, base)
                kv, logits = bytes(ctx.kv_pack(0)), ctx.get_logits(0)
                row["state_bytes"] = len(kv)
                unpack_t = []
                for _ in range(reps):
                    t = time.perf_counter()
                    ctx.kv_unpack(0, kv)
                    unpack_t.append(time.perf_counter() - t)
                row["raw_kv_unpack_s"] = med(unpack_t)
                row["memcpy_s"] = memcpy_s(kv + bytes(logits), reps)  # the row's bytes, same run
                # a prompt that shares all but the last SUFFIX tokens with `base`
                other = base[:-SUFFIX] + [rng.randrange(100, model.info.n_vocab) for _ in range(SUFFIX)]
                ctx.seq_clear(0)
                ctx.prefill(0, other)
                tok_other = first_token(ctx, greedy)
                for tier in ("ram", "ram_file", "disk"):
                    meta = RowMeta(fingerprint=fp, quant=quant, ctx_hash=chash, tokens=base, context_size=n_ctx,
                                   model=model.path.name)
                    saved = client.save("finish", meta, kv=kv, logits=logits, tier=tier)
                    assert saved.accepted, (tier, saved)
                    svc.wait_idle()
                    exact_t, partial_t = [], []
                    for _ in range(reps):
                        ctx.seq_clear(0)
                        t = time.perf_counter()
                        hit = client.lookup(fp, quant, chash, base)
                        loaded = client.load(hit) if hit else None
                        assert hit is not None and hit.kind == "exact" and loaded is not None
                        ctx.kv_unpack(0, loaded.kv)
                        ctx.set_logits(0, loaded.logits)  # type: ignore[arg-type]
                        tok = first_token(ctx, greedy)
                        exact_t.append(time.perf_counter() - t)
                        assert tok == tok_cold, "warm exact reply differs from cold"
                        ctx.seq_clear(0)
                        t = time.perf_counter()
                        hit = client.lookup(fp, quant, chash, other)
                        loaded = client.load(hit) if hit else None
                        assert hit is not None and loaded is not None and hit.matched == n - SUFFIX
                        ctx.kv_unpack(0, loaded.kv)
                        ctx.seq_rm(0, hit.matched, -1)
                        ctx.prefill(0, other[hit.matched:])
                        tok = first_token(ctx, greedy)
                        partial_t.append(time.perf_counter() - t)
                        assert tok == tok_other, "warm partial reply differs from cold"
                    row[tier] = {"exact_s": med(exact_t), "partial_s": med(partial_t),
                                 "exact_over_raw_unpack": med(exact_t) / row["raw_kv_unpack_s"],
                                 "cold_over_exact": row["cold_s"] / med(exact_t),
                                 # the whole exact restore (lookup, load, kv_unpack, logits, sample) as bandwidth
                                 "restore_gbps": (len(kv) + len(logits)) / med(exact_t) / 1e9,
                                 "restore_vs_memcpy": row["memcpy_s"] / med(exact_t)}
                    svc.evict_bytes(1 << 40, [tier])
                    svc.wait_idle()
                report["rows"][str(n)] = row
        finally:
            client.close()
            svc.close()
            ctx.close()
            greedy.close()
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    lengths, reps = ([128, 512], 2) if args.smoke else ([128, 512, 1024, 2048], 3)
    print(json.dumps(run(lengths, reps), indent=2))


if __name__ == "__main__":
    main()
