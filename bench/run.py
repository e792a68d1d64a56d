"""All benchmarks in one run: a JSON report on stdout and in bench/out/, plus PNG plots.

Sections run one after another on the same machine so every ratio compares
figures taken minutes apart: the binding against llama-bench, the cache's
lookup and per-tier bandwidth against memcpy, time to first token cold vs warm
per tier, llama-cpp-python (same llama.cpp commit, its RAM and disk caches),
and the actor runtime when bench/actor_bench.py is present. `--smoke` shrinks
every size so CI proves the harness still works; its figures are not for quoting.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "bench"))


def machine() -> dict[str, Any]:
    import psutil

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    return {"cpu": model, "cores": psutil.cpu_count(logical=True), "memory_gb": memory_gb,
            "python": platform.python_version(), "platform": platform.platform()}


def run_script(name: str, args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "bench" / name), *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def cache_args(smoke: bool) -> list[str]:
    return ["--rows", "500", "--prompt-tokens", "2048", "--blob-mb", "4", "--lookup-reps", "20",
            "--load-reps", "2"] if smoke else []


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure with a goal, its value and whether it is met (the report says misses plainly)."""
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, target: str, met: bool | None) -> None:
        rows.append({"goal": name, "value": value, "target": target, "met": met})

    nat = report["native"]["ratios"]
    add("binding prefill / llama-bench pp", nat["prefill_binding_over_llama_bench"], ">= 0.95",
        nat["prefill_binding_over_llama_bench"] >= 0.95)
    add("binding decode / llama-bench tg", nat["decode_binding_over_llama_bench"], ">= 0.95",
        nat["decode_binding_over_llama_bench"] >= 0.95)
    cache = report.get("cache", {})
    lookup = cache.get("lookup", {})
    deep = lookup.get("cases", {}).get("prefix_deep", {}).get("cold", {}).get("median_ms")
    if deep is not None:
        add(f"longest-prefix lookup, {lookup['prompt_tokens']}-token prompt, {lookup['rows']} rows (ms)", deep,
            "<= 1", deep <= 1.0)
    for tier, row in cache.get("bandwidth", {}).items():
        if isinstance(row, dict) and "load_vs_memcpy" in row:
            add(f"{tier} load bandwidth / memcpy", row["load_vs_memcpy"], f">= {row['target']}", bool(row["pass"]))
    ttft = report.get("ttft", {}).get("rows", {})
    for n, tgt in (("2048", 300.0), ("512", 100.0)):
        if n in ttft:
            v = ttft[n]["ram"]["cold_over_exact"]
            add(f"cold/exact TTFT at {n} tokens (ram)", v, f">= {tgt:.0f}", v >= tgt)
    for n, row in ttft.items():
        v = row["ram"]["exact_over_raw_unpack"]
        add(f"exact-hit TTFT / raw kv_unpack at {n} tokens (ram)", v, "<= 2", v <= 2.0)
    peer = report.get("peers", {}).get("llama_cpp_python")
    if peer:
        v = report["native"]["binding"]["tg"]["median"] / peer["tg"]["median"]
        add("binding decode / llama-cpp-python decode", v, ">= 1", v >= 1.0)
    for g in report.get("actor", {}).get("goals", []):
        if g.get("met") is not None:
            add(f"actor: {g['goal']}", g["value"], g["target"], bool(g["met"]))
    return rows


def plot(report: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    ttft = report.get("ttft", {}).get("rows", {})
    if ttft:
        lengths = sorted(int(n) for n in ttft)
        fig, ax = plt.subplots(figsize=(10, 4.8))
        ax.plot(lengths, [ttft[str(n)]["cold_s"] * 1000 for n in lengths], "o-", label="cold (prefill)")
        for tier, style in (("ram", "s-"), ("ram_file", "^-"), ("disk", "v-")):
            ax.plot(lengths, [ttft[str(n)][tier]["exact_s"] * 1000 for n in lengths], style, label=f"exact hit, {tier}")
        ax.plot(lengths, [ttft[str(n)]["ram"]["partial_s"] * 1000 for n in lengths], "x--",
                label="prefix hit + 17-token suffix, ram")
        ax.plot(lengths, [ttft[str(n)]["raw_kv_unpack_s"] * 1000 for n in lengths], ":", color="gray",
                label="raw kv_unpack")
        peer = report.get("peers", {}).get("llama_cpp_python", {}).get("ttft", {})
        for kind, label in (("ram", "llama-cpp-python warm, LlamaRAMCache"), ("disk", "llama-cpp-python warm, disk")):
            pts = [(int(n), v["warm_s"] * 1000) for n, v in peer.get(kind, {}).items() if v.get("warm_s")]
            if pts:
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "d-.", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("prompt tokens")
        ax.set_ylabel("time to first token (ms, log)")
        ax.set_title("Time to first token: cold vs warm")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = OUT / "ttft.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    nat = report["native"]
    labels = ["llama-bench", "binding"]
    pp = [nat["llama_bench"]["pp"]["median"], nat["binding"]["pp"]["median"]]
    tg = [nat["llama_bench"]["tg"]["median"], nat["binding"]["tg"]["median"]]
    peer = report.get("peers", {}).get("llama_cpp_python")
    if peer:
        labels.append("llama-cpp-python")
        pp.append(peer["pp"]["median"])
        tg.append(peer["tg"]["median"])
    actor = report.get("actor", {})
    if isinstance(actor.get("decode_tok_s"), (int, float)):
        labels.append("actor (streaming)")
        pp.append(0.0)
        tg.append(actor["decode_tok_s"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, vals, title in ((axes[0], pp, "prefill tokens/s"), (axes[1], tg, "decode tokens/s")):
        ax.bar(range(len(labels)), vals, color=["#777", "#1f77b4", "#ff7f0e", "#2ca02c"][: len(labels)])
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
        ax.set_title(title)
    fig.suptitle(f"{nat['model']}, {nat['threads']} threads, same llama.cpp commit")
    fig.tight_layout()
    path = OUT / "rates.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    ap.add_argument("--compare-flags", action="store_true", help="also build an AVX2-only llama.cpp and compare")
    ap.add_argument("--no-peers", action="store_true", help="skip llama-cpp-python (it builds for minutes)")
    args = ap.parse_args()
    import native_bench

    OUT.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"smoke": args.smoke, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "machine": machine()}
    smoke = ["--smoke"] if args.smoke else []
    print("[bench] binding vs llama-bench", file=sys.stderr, flush=True)
    report["native"] = native_bench.run(args.smoke, args.compare_flags)
    print("[bench] cache lookup and bandwidth", file=sys.stderr, flush=True)
    report["cache"] = run_script("cache_bench.py", cache_args(args.smoke))
    print("[bench] time to first token, cold vs warm", file=sys.stderr, flush=True)
    report["ttft"] = run_script("ttft_bench.py", smoke)
    if not args.no_peers:
        import peers

        from actors.model.llama import default_model_path
        from actors.model.options import default_threads

        print("[bench] llama-cpp-python (same llama.cpp commit)", file=sys.stderr, flush=True)
        lengths = [int(n) for n in report["ttft"]["rows"]]
        task = {"model": str(default_model_path()), "threads": default_threads(), "prompt_lengths": lengths,
                "n_gen": report["native"]["n_gen"], "n_prompt": report["native"]["n_prompt"],
                "reps": report["native"]["reps"]}
        report["peers"] = {"llama_cpp_python": peers.run_llama_cpp_python(task)}
    if (ROOT / "bench" / "actor_bench.py").exists():
        print("[bench] actor runtime", file=sys.stderr, flush=True)
        report["actor"] = run_script("actor_bench.py", smoke)
    report["goals"] = goals(report)
    written = plot(report)
    (OUT / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"\nwrote {OUT / 'report.json'} and {', '.join(str(p) for p in written)}", file=sys.stderr)
    for g in report["goals"]:
        mark = "ok  " if g["met"] else "MISS"
        print(f"  {mark} {g['goal']}: {g['value']:.3g} (goal {g['target']})", file=sys.stderr)


if __name__ == "__main__":
    main()
