"""The binding's prefill and decode rates against llama-bench from the same llama.cpp tree.

Both run in this process's run, back to back, same model, threads, batch sizes
and flash-attention setting, so the ratio is what the binding costs (sampling
included on our side: llama-bench's tg samples nothing). Optionally also
compares the build's CPU flags against an AVX2-only build (--compare-flags) to
show the chosen flags are the faster ones.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import build_llama  # noqa: E402

from actors.model.llama import Decode, Model, default_model_path  # noqa: E402
from actors.model.options import default_threads  # noqa: E402


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def llama_bench(bdir: Path, model: Path, threads: int, n_prompt: int, n_gen: int, reps: int) -> dict[str, Any]:
    exe = bdir / "bin" / "llama-bench"
    if not exe.exists():
        build_llama.build(["llama-bench"], bdir)
    cmd = [str(exe), "-m", str(model), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen), "-r", str(reps),
           "-b", "2048", "-ub", "512", "-o", "json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res: dict[str, Any] = {}
    for row in json.loads(out):
        key = "pp" if row["n_prompt"] else "tg"
        samples = row.get("samples_ts") or [row["avg_ts"]]
        res[key] = {"median": statistics.median(samples), "mean": row["avg_ts"], "stdev": row["stddev_ts"],
                    "samples": samples}
    return res


def binding_rates(model_path: Path, threads: int, n_prompt: int, n_gen: int, reps: int) -> dict[str, Any]:
    rng = random.Random(0)
    pp: list[float] = []
    tg: list[float] = []
    with Model(model_path) as m:
        prompt = [rng.randrange(100, m.info.n_vocab) for _ in range(n_prompt)]
        opts = {"n_ctx": n_prompt + n_gen + 16, "n_batch": 2048, "n_ubatch": 512, "n_threads": threads,
                "n_threads_batch": threads}
        with m.new_context(**opts) as warm:  # warm caches and thread pools, like llama-bench's warmup run
            warm.prefill(0, prompt[:64])
        for _ in range(reps):
            with m.new_context(**opts) as c:
                t = time.perf_counter()
                c.prefill(0, prompt)
                pp.append(n_prompt / (time.perf_counter() - t))
        for _ in range(reps):
            with m.new_context(**opts) as c, m.sampler() as s:
                c.prefill(0, [m.info.token_bos])
                t = time.perf_counter()
                for _ in range(n_gen):
                    c.step([Decode(0, s)])  # an EOG is still sampled and timed; it just is not appended
                tg.append(n_gen / (time.perf_counter() - t))
    return {"pp": summary(pp), "tg": summary(tg)}


def cmake_flags(bdir: Path) -> dict[str, str]:
    flags = {}
    for line in (bdir / "CMakeCache.txt").read_text().splitlines():
        if line.startswith(("GGML_AVX", "GGML_AMX", "GGML_FMA", "GGML_F16C", "GGML_BMI2", "GGML_NATIVE", "GGML_SSE")):
            name, _, value = line.partition("=")
            flags[name.split(":")[0]] = value
    return flags


def run(smoke: bool = False, compare_flags: bool = False) -> dict[str, Any]:
    model = default_model_path()
    threads = default_threads()
    n_prompt, n_gen, reps = (128, 32, 2) if smoke else (512, 128, 5)
    bdir = build_llama.build_dir()
    ref = llama_bench(bdir, model, threads, n_prompt, n_gen, reps)
    ours = binding_rates(model, threads, n_prompt, n_gen, reps)
    report: dict[str, Any] = {
        "model": model.name, "threads": threads, "n_prompt": n_prompt, "n_gen": n_gen, "reps": reps,
        "cpu_flags": cmake_flags(bdir),
        "llama_bench": ref, "binding": ours,
        "ratios": {
            "prefill_binding_over_llama_bench": ours["pp"]["median"] / ref["pp"]["median"],
            "decode_binding_over_llama_bench": ours["tg"]["median"] / ref["tg"]["median"],
        },
        "goals": {"prefill_ratio_min": 0.95, "decode_ratio_min": 0.95},
    }
    report["goals_met"] = {
        "prefill": report["ratios"]["prefill_binding_over_llama_bench"] >= 0.95,
        "decode": report["ratios"]["decode_binding_over_llama_bench"] >= 0.95,
    }
    if compare_flags:
        avx2_dir = bdir.parent / "llama-avx2"
        build_llama.build(["llama-bench"], avx2_dir, ceiling="avx2")
        alt = llama_bench(avx2_dir, model, threads, n_prompt, n_gen, reps)
        report["flags_comparison"] = {
            "chosen": {"flags": cmake_flags(bdir), "pp": ref["pp"]["median"], "tg": ref["tg"]["median"]},
            "avx2_only": {"flags": cmake_flags(avx2_dir), "pp": alt["pp"]["median"], "tg": alt["tg"]["median"]},
            "pp_ratio_chosen_over_avx2": ref["pp"]["median"] / alt["pp"]["median"],
            "tg_ratio_chosen_over_avx2": ref["tg"]["median"] / alt["tg"]["median"],
        }
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    ap.add_argument("--compare-flags", action="store_true", help="also build and time an AVX2-only llama.cpp")
    args = ap.parse_args()
    print(json.dumps(run(args.smoke, args.compare_flags), indent=2))


if __name__ == "__main__":
    main()
