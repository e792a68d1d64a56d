"""Runs inside bench/.peers-venv: measures llama-cpp-python on a task read from stdin (JSON out).

Figures: prefill and decode tokens/s (greedy, sampling included, as ours),
and time to first token cold vs warm with its LlamaRAMCache and LlamaDiskCache
(the Llama object is reset between calls so a warm call really goes through
the cache, not the context it still holds).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time

from llama_cpp import Llama, LlamaDiskCache, LlamaRAMCache


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    task = json.loads(sys.stdin.read())
    threads = task["threads"]
    llm = Llama(model_path=task["model"], n_ctx=4096, n_batch=2048, n_ubatch=512, n_threads=threads,
                n_threads_batch=threads, verbose=False, seed=0)
    rng = random.Random(0)
    n_vocab = llm.n_vocab()
    reps = task["reps"]
    out: dict = {"version": __import__("llama_cpp").__version__}

    # prefill rate
    prompt = [rng.randrange(100, n_vocab) for _ in range(task.get("n_prompt", 512))]
    rates = []
    for _ in range(reps):
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        rates.append(len(prompt) / (time.perf_counter() - t))
    out["pp"] = {"median": med(rates), "n": reps}

    # decode rate: greedy sampling + one-token evals
    rates = []
    for _ in range(reps):
        llm.reset()
        llm.eval([llm.token_bos()])
        t = time.perf_counter()
        for _ in range(task["n_gen"]):
            tok = llm.sample(temp=0.0)
            llm.eval([tok])
        rates.append(task["n_gen"] / (time.perf_counter() - t))
    out["tg"] = {"median": med(rates), "n": reps}

    # TTFT cold vs warm with its caches
    ttft: dict = {}
    for kind in ("none", "ram", "disk"):
        tmp = tempfile.TemporaryDirectory() if kind == "disk" else None
        cache = LlamaRAMCache(capacity_bytes=2 << 30) if kind == "ram" else (
            LlamaDiskCache(cache_dir=tmp.name) if tmp else None)
        llm.set_cache(cache)
        for n in task["prompt_lengths"]:
            toks = [rng.randrange(100, n_vocab) for _ in range(n)]
            cold, warm = [], []
            for r in range(reps):
                toks_r = toks if kind != "none" else [rng.randrange(100, n_vocab) for _ in range(n)]
                llm.reset()  # drop the context's own token prefix: a warm call must go through the cache
                t = time.perf_counter()
                llm.create_completion(toks_r, max_tokens=1, temperature=0.0)
                dt = time.perf_counter() - t
                (cold if r == 0 or kind == "none" else warm).append(dt)
            ttft.setdefault(kind, {})[str(n)] = {"cold_s": med(cold), "warm_s": med(warm) if warm else None}
        if tmp:
            tmp.cleanup()
    llm.set_cache(None)
    out["ttft"] = ttft
    print(json.dumps(out))


if __name__ == "__main__":
    main()
