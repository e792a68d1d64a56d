"""All benchmarks in one run: a JSON report on stdout and in bench/out/, PNG plots, and the README's table.

Sections run one after another on the same machine so every ratio compares
figures taken minutes apart: the binding against llama-bench, the cache's
lookup and per-tier restore bandwidth against memcpy, time to first token cold
vs warm per tier on the raw binding, llama-cpp-python (same llama.cpp commit,
its RAM and disk caches), and the actor runtime: its overheads
(actor_bench.py), TTFT per cache mode and cache on vs off
(actor_modes_bench.py), concurrent agents (agents_bench.py), a multi-turn
chat (chat_bench.py) and how many warm replies equal a cold replay, per cache
hit kind (determinism_bench.py).  Each section is its own process, so a crash in one
leaves no state in the next.

``--smoke`` shrinks every size so CI proves the harness still works; its
figures are not for quoting and it never rewrites the README.  A full run
rewrites the table between ``<!-- bench:begin -->`` and ``<!-- bench:end -->``
in README.md (``--no-readme`` to skip).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
README = ROOT / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
sys.path.insert(0, str(ROOT / "bench"))

# The CPU features llama.cpp's CPU backend can use: what the report names among /proc/cpuinfo's flags.
SIMD_FLAGS = ("sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw",
              "avx512vl", "avx512dq", "avx512cd", "avx512_vnni", "avx512_bf16", "avx512vbmi", "avx512_vbmi2",
              "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "sve")
TIERS = ("ram", "ram_file", "disk")
ACTOR_MODES = (("cold", "cold (prefill)", "o-"), ("exact_ram", "exact hit, ram", "s-"),
               ("exact_ram_file", "exact hit, ram_file", "^-"), ("exact_disk", "exact hit, disk (warm)", "v-"),
               ("partial", "block-prefix hit, 17-token new tail", "x--"),
               ("parent", "parent_key resume, 18-token turn", "P--"),
               ("sticky", "sticky session, 18-token turn", "*--"),
               ("continue", "continue_, 18-token turn", "D:"))


def log(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """Facts every figure depends on: CPU model, cores, SIMD flags, memory, load when the run started."""
    import psutil

    model = ""
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in SIMD_FLAGS if f in have]
    except OSError:
        pass
    memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    return {"cpu": model or platform.processor(), "cores": psutil.cpu_count(logical=True),
            "physical_cores": psutil.cpu_count(logical=False), "cpu_flags": flags, "memory_gb": memory_gb,
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform()}


def run_script(name: str, args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "bench" / name), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-6000:])
        raise RuntimeError(f"{name} failed with exit status {proc.returncode}")
    return json.loads(proc.stdout)


def cache_args(smoke: bool) -> list[str]:
    return ["--rows", "500", "--prompt-tokens", "2048", "--blob-mb", "4", "--lookup-reps", "20",
            "--load-reps", "2"] if smoke else []


def _get(d: Any, *path: Any) -> Any:
    """``d[path[0]][path[1]]...`` or None when any step is missing (a section may be skipped)."""
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def figures(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, each with its spread, in one place (the README table and the goals read these)."""
    f: dict[str, Any] = {}
    nat = report["native"]
    f["decode_tok_s"] = {"llama_bench_tg": nat["llama_bench"]["tg"], "binding": nat["binding"]["tg"]}
    f["prefill_tok_s"] = {"llama_bench_pp": nat["llama_bench"]["pp"], "binding": nat["binding"]["pp"]}
    actor_dec = _get(report, "actor", "decode_tok_s_spread")
    if actor_dec:
        f["decode_tok_s"]["actor_streaming"] = actor_dec
    peer = _get(report, "peers", "llama_cpp_python")
    if peer:
        f["decode_tok_s"]["llama_cpp_python"] = peer["tg"]
        f["prefill_tok_s"]["llama_cpp_python"] = peer["pp"]
    tg = nat["llama_bench"]["tg"]["median"]
    f["decode_vs_llama_bench_tg"] = {k: round(v["median"] / tg, 3) for k, v in f["decode_tok_s"].items()}
    if peer:
        f["decode_vs_llama_cpp_python"] = {k: round(v["median"] / peer["tg"]["median"], 3)
                                           for k, v in f["decode_tok_s"].items()}
    bw = _get(report, "cache", "bandwidth") or {}
    f["restore_vs_memcpy"] = {t: {"restore_gbps": bw[t]["restore_gbps"], "memcpy_gbps": bw[t]["memcpy_gbps_same_run"],
                                  "ratio": bw[t]["restore_vs_memcpy"], "load_only_ratio": bw[t]["load_vs_memcpy"],
                                  "target": bw[t]["target"]} for t in TIERS if t in bw}
    modes = _get(report, "actor_modes", "rows") or {}
    f["actor_ttft_ms"] = {n: {m: row[m]["ttft_ms"] for m, _, _ in ACTOR_MODES} for n, row in modes.items()}
    peer_ttft = _get(report, "peers", "llama_cpp_python", "ttft") or {}
    f["llama_cpp_python_warm_over_actor_exact"] = {
        n: {kind: round(peer_ttft[kind][n]["warm_s"] * 1e3 / row[f"exact_{tier}"]["ttft_ms"]["median"], 1)
            for kind, tier in (("ram", "ram"), ("disk", "disk")) if _get(peer_ttft, kind, n, "warm_s")}
        for n, row in modes.items()}
    raw = _get(report, "ttft", "rows") or {}
    f["actor_exact_over_raw_unpack"] = {
        n: round(row["exact_ram"]["ttft_ms"]["median"] / (raw[n]["raw_kv_unpack_s"] * 1e3), 3)
        for n, row in modes.items() if n in raw}
    return f


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
        if isinstance(row, dict) and "restore_vs_memcpy" in row:
            add(f"{tier} restore (load + copy into place) bandwidth / same-run memcpy", row["restore_vs_memcpy"],
                f">= {row['target']}", bool(row["pass"]))
    ttft = report.get("ttft", {}).get("rows", {})
    for n, tgt in (("2048", 300.0), ("512", 100.0)):
        if n in ttft:
            v = ttft[n]["ram"]["cold_over_exact"]
            add(f"raw binding: cold/exact TTFT at {n} tokens (ram)", v, f">= {tgt:.0f}", v >= tgt)
    for n, row in ttft.items():
        v = row["ram"]["exact_over_raw_unpack"]
        add(f"raw binding: exact-hit TTFT / raw kv_unpack at {n} tokens (ram)", v, "<= 2", v <= 2.0)
    modes = report.get("actor_modes", {}).get("rows", {})
    for n, tgt in (("2048", 300.0), ("512", 100.0)):
        if n in modes:
            v = modes[n]["cold_over"]["exact_ram"]
            add(f"actor: cold/exact TTFT at {n} tokens (ram)", v, f">= {tgt:.0f}", v >= tgt)
    for n, v in report.get("figures", {}).get("actor_exact_over_raw_unpack", {}).items():
        add(f"actor: exact-hit TTFT / raw kv_unpack of the same row at {n} tokens (ram)", v, "<= 2", v <= 2.0)
    onoff = _get(report, "actor_modes", "cache_on_off")
    if onoff:
        v = onoff["on_over_off"]
        add(f"actor: cold TTFT cache on / cache off, {onoff['prompt_tokens']} tokens", v, "<= 1.05", v <= 1.05)
    dec = report.get("figures", {}).get("decode_vs_llama_bench_tg", {})
    if "actor_streaming" in dec:
        add("actor: streaming decode / llama-bench tg", dec["actor_streaming"], ">= 0.95",
            dec["actor_streaming"] >= 0.95)
    peer = report.get("peers", {}).get("llama_cpp_python")
    if peer:
        v = report["native"]["binding"]["tg"]["median"] / peer["tg"]["median"]
        add("binding decode / llama-cpp-python decode", v, ">= 1", v >= 1.0)
        vs = report.get("figures", {}).get("decode_vs_llama_cpp_python", {})
        if "actor_streaming" in vs:
            add("actor: streaming decode / llama-cpp-python decode", vs["actor_streaming"], ">= 1",
                vs["actor_streaming"] >= 1.0)
    c4 = _get(report, "agents", "configs", "n_seq_max=4", "concurrent_4", "over_single")
    if c4 is not None:
        add("agents: 4 concurrent (n_seq_max=4) aggregate tok/s / one stream", c4, ">= 2", c4 >= 2.0)
    ceiling = _get(report, "agents", "raw_batch_ceiling", "ratio")
    if ceiling is not None:
        add("agents: raw llama.cpp, one step of 4 decode rows / 1 row, tok/s (the ceiling of the above)", ceiling,
            "(info)", None)
    chat = report.get("chat", {})
    if "same_replies_cached_modes" in chat:
        same = bool(chat["same_replies_cached_modes"])
        add("chat: stateless, sticky and continue replies identical (1 = yes)", float(same), "= 1", same)
    for g in report.get("actor", {}).get("goals", []):
        if g.get("met") is not None:
            add(f"actor: {g['goal']}", g["value"], g["target"], bool(g["met"]))
    if report.get("server"):
        import server_report

        rows += server_report.goals(report["server"])
    over = report.get("http_overhead")
    if over:
        v = over["http_overhead_ms"]
        add("HTTP: exact-hit TTFT through HTTP - through the Python API (ms, medians)", v, "<= 2", v <= 2.0)
        v = over["disconnect_to_idle_ms"]["median"]
        add("HTTP: client disconnect mid-stream to the model idle (ms, median)", v, "<= 100", v <= 100.0)
    if report.get("http"):
        import http_report

        rows += http_report.goals(report["http"])
    return rows


# --------------------------------------------------------------------------- plots


def _err(stats: dict[str, Any]) -> tuple[float, float]:
    lo, hi = stats.get("min", stats["median"]), stats.get("max", stats["median"])
    return max(0.0, stats["median"] - lo), max(0.0, hi - stats["median"])


def plot_ttft(plt: Any, report: dict[str, Any]) -> Path | None:
    modes = _get(report, "actor_modes", "rows") or {}
    ttft = _get(report, "ttft", "rows") or {}
    if not modes and not ttft:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.2), sharey=True)
    ax = axes[0]
    if modes:
        lengths = sorted(int(n) for n in modes)
        for key, label, style in ACTOR_MODES:
            med = [modes[str(n)][key]["ttft_ms"]["median"] for n in lengths]
            lo = [modes[str(n)][key]["ttft_ms"]["min"] for n in lengths]
            hi = [modes[str(n)][key]["ttft_ms"]["max"] for n in lengths]
            ax.errorbar(lengths, med, yerr=[[m - a for m, a in zip(med, lo, strict=True)],
                                            [b - m for m, b in zip(med, hi, strict=True)]],
                        fmt=style, capsize=2, label=label)
    ax.set_title("through the actor runtime (engine TTFT, min-max bars)")
    ax2 = axes[1]
    if ttft:
        lengths = sorted(int(n) for n in ttft)
        ax2.plot(lengths, [ttft[str(n)]["cold_s"] * 1000 for n in lengths], "o-", label="cold (prefill)")
        for tier, style in (("ram", "s-"), ("ram_file", "^-"), ("disk", "v-")):
            ax2.plot(lengths, [ttft[str(n)][tier]["exact_s"] * 1000 for n in lengths], style,
                     label=f"exact hit, {tier}")
        ax2.plot(lengths, [ttft[str(n)]["ram"]["partial_s"] * 1000 for n in lengths], "x--",
                 label="prefix hit + 17-token suffix, ram")
        ax2.plot(lengths, [ttft[str(n)]["raw_kv_unpack_s"] * 1000 for n in lengths], ":", color="gray",
                 label="raw kv_unpack")
    peer = _get(report, "peers", "llama_cpp_python", "ttft") or {}
    for kind, label in (("none", "llama-cpp-python cold"), ("ram", "llama-cpp-python warm, LlamaRAMCache"),
                        ("disk", "llama-cpp-python warm, LlamaDiskCache")):
        key = "cold_s" if kind == "none" else "warm_s"
        pts = sorted((int(n), v[key] * 1000) for n, v in peer.get(kind, {}).items() if v.get(key))
        if pts:
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], "d-.", label=label)
    ax2.set_title("raw binding (no actors) and llama-cpp-python")
    for a in axes:
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel("prompt tokens")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("time to first token (ms, log)")
    fig.suptitle("Time to first token: cold vs warm, per cache mode")
    fig.tight_layout()
    path = OUT / "ttft.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(ax: Any, labels: list[str], stats: list[dict[str, Any]], colors: list[str], ref: float | None,
          title: str) -> None:
    vals = [s["median"] for s in stats]
    errs = list(zip(*[_err(s) for s in stats], strict=True)) if stats else [[], []]
    ax.bar(range(len(labels)), vals, yerr=errs, capsize=3, color=colors[: len(labels)])
    for i, v in enumerate(vals):
        note = f"{v:.0f}" + (f"\n{v / ref:.2f}x" if ref else "")
        ax.text(i, v, note, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(labels)), labels, rotation=15, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.18)


def plot_rates(plt: Any, report: dict[str, Any]) -> Path:
    f = report["figures"]
    colors = ["#777", "#1f77b4", "#2ca02c", "#ff7f0e"]
    names = {"llama_bench_pp": "llama-bench pp", "llama_bench_tg": "llama-bench tg", "binding": "binding",
             "actor_streaming": "actor, streaming\nto a subscriber", "llama_cpp_python": "llama-cpp-python"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    pp = f["prefill_tok_s"]
    _bars(axes[0], [names[k] for k in pp], list(pp.values()), ["#777", "#1f77b4", "#ff7f0e"],
          pp["llama_bench_pp"]["median"], "prefill tokens/s (x llama-bench)")
    order = [k for k in ("llama_bench_tg", "binding", "actor_streaming", "llama_cpp_python") if k in f["decode_tok_s"]]
    _bars(axes[1], [names[k] for k in order], [f["decode_tok_s"][k] for k in order],
          [colors[("llama_bench_tg", "binding", "actor_streaming", "llama_cpp_python").index(k)] for k in order],
          f["decode_tok_s"]["llama_bench_tg"]["median"], "decode tokens/s (x llama-bench tg)")
    nat = report["native"]
    fig.suptitle(f"{nat['model']}, {nat['threads']} threads, same llama.cpp commit (bars: median, whiskers: min-max)",
                 fontsize=10)
    fig.tight_layout()
    path = OUT / "rates.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_restore(plt: Any, report: dict[str, Any]) -> Path | None:
    bw = report["figures"].get("restore_vs_memcpy", {})
    if not bw:
        return None
    ttft = _get(report, "ttft", "rows") or {}
    fig, axes = plt.subplots(1, 2 if ttft else 1, figsize=(11 if ttft else 6, 4.2), squeeze=False)
    ax = axes[0][0]
    tiers = [t for t in TIERS if t in bw]
    x = range(len(tiers))
    ax.bar([i - 0.2 for i in x], [bw[t]["memcpy_gbps"] for t in tiers], 0.4, color="#777", label="memcpy, same run")
    ax.bar([i + 0.2 for i in x], [bw[t]["restore_gbps"] for t in tiers], 0.4, color="#1f77b4",
           label="restore (load + copy into place)")
    for i, t in enumerate(tiers):
        ax.text(i + 0.2, bw[t]["restore_gbps"], f"{bw[t]['ratio']:.2f}x\n(goal {bw[t]['target']})", ha="center",
                va="bottom", fontsize=7)
    blob_mb = (_get(report, "cache", "bandwidth", "blob_bytes") or 0) / 2**20
    ax.set_xticks(list(x), tiers)
    ax.set_ylabel("GB/s")
    ax.set_title(f"cache restore vs memcpy, {blob_mb:.0f} MB state", fontsize=10)
    ax.legend(fontsize=7)
    ax.margins(y=0.2)
    if ttft:
        n = str(max(int(k) for k in ttft))
        row = ttft[n]
        nbytes = row["state_bytes"]
        ax = axes[0][1]
        memcpy_gbps = nbytes / row["memcpy_s"] / 1e9
        vals = [row[t]["restore_gbps"] for t in TIERS]
        ax.bar([i - 0.2 for i in range(3)], [memcpy_gbps] * 3, 0.4, color="#777", label="memcpy, same run")
        ax.bar([i + 0.2 for i in range(3)], vals, 0.4, color="#2ca02c",
               label="exact hit: lookup + load + kv_unpack + logits + sample")
        for i, t in enumerate(TIERS):
            ax.text(i + 0.2, vals[i], f"{row[t]['restore_vs_memcpy']:.2f}x", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(3), list(TIERS))
        ax.set_title(f"whole exact restore through the binding, {n}-token row ({nbytes / 2**20:.0f} MB)", fontsize=10)
        ax.legend(fontsize=7)
        ax.margins(y=0.2)
    fig.tight_layout()
    path = OUT / "restore.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_scenarios(plt: Any, report: dict[str, Any]) -> Path | None:
    agents = _get(report, "agents", "configs")
    chat = _get(report, "chat", "modes")
    if not agents and not chat:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    if agents:
        ax = axes[0]
        cases = [k for k in ("single", "concurrent_4", "concurrent_8") if k in next(iter(agents.values()))]
        width = 0.8 / len(agents)
        for j, (cfg, row) in enumerate(agents.items()):
            xs = [i + (j - (len(agents) - 1) / 2) * width for i in range(len(cases))]
            stats = [row[c]["aggregate_tok_s"] for c in cases]
            errs = list(zip(*[_err(s) for s in stats], strict=True))
            ax.bar(xs, [s["median"] for s in stats], width, yerr=errs, capsize=3, label=cfg)
            for x_, c in zip(xs, cases, strict=True):
                lat = row[c]["latency_ms"]
                ax.text(x_, row[c]["aggregate_tok_s"]["median"], f"p50 {lat['p50']:.0f} ms\np99 {lat['p99']:.0f}",
                        ha="center", va="bottom", fontsize=6)
        ax.set_xticks(range(len(cases)), [c.replace("concurrent_", "") + " agents" if c != "single" else
                                          "one stream" for c in cases])
        ax.set_ylabel("aggregate generated tokens/s")
        sys_toks = report["agents"]["system_prompt_tokens"]
        ax.set_title(f"agents on a shared {sys_toks}-token system prompt", fontsize=10)
        ax.legend(fontsize=7)
        ax.margins(y=0.25)
    if chat:
        ax = axes[1]
        modes = list(chat)
        vals = [chat[m]["prompt_tokens_computed"]["median"] for m in modes]
        ax.bar(range(len(modes)), vals, color=["#777", "#1f77b4", "#2ca02c", "#ff7f0e"][: len(modes)])
        for i, m in enumerate(modes):
            ax.text(i, vals[i], f"{vals[i]:.0f} tok\n{chat[m]['wall_s']['median']:.1f} s", ha="center",
                    va="bottom", fontsize=7)
        ax.set_xticks(range(len(modes)), modes)
        ax.set_ylabel("prompt tokens computed (all turns)")
        ax.set_title(f"{report['chat']['turns']}-turn chat: prompt tokens computed and wall time", fontsize=10)
        ax.margins(y=0.2)
    fig.tight_layout()
    path = OUT / "scenarios.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(report: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [plot_ttft(plt, report), plot_rates(plt, report), plot_restore(plt, report),
             plot_scenarios(plt, report)]
    if report.get("server"):
        import server_report

        paths.append(server_report.plot(plt, report["server"], OUT / "server.png"))
    if report.get("http"):
        import http_report

        paths.append(http_report.plot(report["http"], OUT / "http_compare.png"))
    return [p for p in paths if p is not None]


# --------------------------------------------------------------------------- README


def _ms(v: float) -> str:
    return f"{v:.0f} ms" if v >= 100 else f"{v:.1f} ms" if v >= 1 else f"{v:.2f} ms"


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def _threads(k: str) -> str:
    return f"{k} thread" if k == "1" else f"{k} threads"


def readme_table(report: dict[str, Any]) -> str:
    """The README's measured-results block: a caption, the table, and the misses named."""
    f = report["figures"]
    m = report["machine"]
    nat = report["native"]
    rows: list[tuple[str, str, str]] = []
    r = nat["ratios"]
    rows.append(("binding prefill / decode vs llama-bench (same tree, same threads)",
                 f"{r['prefill_binding_over_llama_bench']:.2f} / {r['decode_binding_over_llama_bench']:.2f}",
                 ">= 0.95"))
    dec = f["decode_tok_s"]
    names = [("llama_bench_tg", "llama-bench tg"), ("binding", "binding"), ("actor_streaming", "actor streaming"),
             ("llama_cpp_python", "llama-cpp-python")]
    have = [(k, n) for k, n in names if k in dec]
    vs_lb = f["decode_vs_llama_bench_tg"].get("actor_streaming")
    vs_peer = f.get("decode_vs_llama_cpp_python", {}).get("actor_streaming")
    note = ", ".join(x for x in (f"actor {vs_lb:.2f}x llama-bench" if vs_lb else "",
                                 f"{vs_peer:.2f}x llama-cpp-python" if vs_peer else "") if x)
    rows.append(("decode tok/s: " + " / ".join(n for _, n in have),
                 " / ".join(f"{dec[k]['median']:.0f}" for k, _ in have) + (f" ({note})" if note else ""),
                 "actor >= 0.95x llama-bench, >= 1x llama-cpp-python"))
    modes = _get(report, "actor_modes", "rows") or {}
    for n, goal in (("2048", 300), ("512", 100)):
        if n in modes:
            row = modes[n]
            cold = row["cold"]["ttft_ms"]["median"]
            ex = [row[f"exact_{t}"]["ttft_ms"]["median"] for t in TIERS]
            rows.append((f"actor TTFT, {n} tokens: cold vs exact hit from ram / ram_file / disk",
                         f"{_ms(cold)} vs {' / '.join(_ms(x) for x in ex)} ({row['cold_over']['exact_ram']:.0f}x)",
                         f">= {goal}x"))
    if modes:
        n = str(max(int(k) for k in modes))
        row = modes[n]
        rows.append((f"actor TTFT, {n}-token context + new tail: block-prefix / parent_key / sticky / continue_",
                     " / ".join(_ms(row[k]["ttft_ms"]["median"]) for k in ("partial", "parent", "sticky",
                                                                             "continue")), ""))
    ex_raw = f.get("actor_exact_over_raw_unpack", {})
    if ex_raw:
        ks = sorted(ex_raw, key=int)
        rows.append((f"actor exact-hit TTFT / raw kv_unpack of the same row, {' / '.join(ks)} tokens",
                     " / ".join(f"{ex_raw[k]:.2f}" for k in ks), "<= 2"))
    onoff = _get(report, "actor_modes", "cache_on_off")
    if onoff:
        rows.append((f"cold TTFT with the cache on / off, {onoff['prompt_tokens']} tokens (alternated, median)",
                     f"{_ms(onoff['cache_on_ms']['median'])} / {_ms(onoff['cache_off_ms']['median'])} "
                     f"({onoff['on_over_off']:.3f})", "<= 1.05"))
    peer_ttft = _get(report, "peers", "llama_cpp_python", "ttft")
    if peer_ttft:
        n = str(max(int(k) for k in peer_ttft.get("ram", {"0": 0})))
        ram_w = _get(peer_ttft, "ram", n, "warm_s")
        disk_w = _get(peer_ttft, "disk", n, "warm_s")
        if ram_w and disk_w:
            vs = f.get("llama_cpp_python_warm_over_actor_exact", {}).get(n, {})
            note = (f" ({vs['ram']:.0f}x / {vs['disk']:.0f}x the actor's exact hit from ram / disk)"
                    if "ram" in vs and "disk" in vs else "")
            rows.append((f"llama-cpp-python warm TTFT, LlamaRAMCache / LlamaDiskCache, {n} tokens",
                         f"{_ms(ram_w * 1e3)} / {_ms(disk_w * 1e3)}{note}", ""))
    bw = f.get("restore_vs_memcpy", {})
    if bw:
        rows.append(("restore (load + copy into place) vs same-run memcpy: ram / ram_file / disk (warm)",
                     " / ".join(f"{bw[t]['ratio']:.2f}" for t in TIERS if t in bw), ">= 0.5 / 0.35 / 0.25"))
    lookup = _get(report, "cache", "lookup")
    if lookup:
        rows.append((f"longest-prefix lookup, {lookup['prompt_tokens'] // 1024}k-token prompt, {lookup['rows']} rows",
                     _ms(lookup["cases"]["prefix_deep"]["cold"]["median_ms"]), "<= 1 ms"))
    agents = _get(report, "agents", "configs")
    ceiling = _get(report, "agents", "raw_batch_ceiling", "ratio")
    if agents:
        s4 = agents["n_seq_max=4"]
        c4 = s4["concurrent_4"]
        rows.append(("4 concurrent agents, n_seq_max=4: aggregate tok/s vs one stream; latency p50 / p99",
                     f"{c4['aggregate_tok_s']['median']:.0f} vs {s4['single']['aggregate_tok_s']['median']:.0f} "
                     f"({c4['over_single']:.2f}x); {_ms(c4['latency_ms']['p50'])} / {_ms(c4['latency_ms']['p99'])}"
                     + (f"; raw llama.cpp, 4 decode rows per step vs 1: {ceiling:.2f}x" if ceiling else ""),
                     ">= 2x"))
        k = "concurrent_8" if "concurrent_8" in s4 else "concurrent_4"
        s1 = agents["n_seq_max=1"]
        rows.append((f"{k.split('_')[1]} concurrent agents: aggregate tok/s, n_seq_max=4 vs 1; p99 latency",
                     f"{s4[k]['aggregate_tok_s']['median']:.0f} vs {s1[k]['aggregate_tok_s']['median']:.0f}; "
                     f"{_ms(s4[k]['latency_ms']['p99'])} vs {_ms(s1[k]['latency_ms']['p99'])}", ""))
    chat = _get(report, "chat", "modes")
    if chat:
        order = [x for x in ("no_cache", "stateless", "sticky", "continue") if x in chat]
        rows.append((f"{report['chat']['turns']}-turn chat, prompt tokens computed: " + " / ".join(order),
                     " / ".join(f"{chat[x]['prompt_tokens_computed']['median']:.0f}" for x in order), ""))
        rows.append((f"{report['chat']['turns']}-turn chat, total wall time: " + " / ".join(order),
                     " / ".join(f"{chat[x]['wall_s']['median']:.1f} s" for x in order), ""))
    det = _get(report, "determinism", "kinds")
    if det:
        ks = [k for k in ("exact", "partial", "sticky", "continuation") if k in det]
        rows.append((f"{report['determinism']['turns']}-turn chat, replies identical to a cold replay: "
                     + " / ".join(ks), " / ".join(f"{det[k]['identical']}/{det[k]['replies']}" for k in ks),
                     "exact: all"))
    decode = _get(report, "actor", "decode")
    if decode:
        ks = sorted(decode, key=int, reverse=True)
        rows.append((f"streaming decode through the actor / raw binding ({'; '.join(_threads(k) for k in ks)})",
                     "; ".join(f"{decode[k]['streaming_over_raw']:.2f}" for k in ks), ">= 0.95"))
    delivery = _get(report, "actor", "delivery", "latency_ms")
    if delivery:
        rows.append(("token delivery to a subscriber actor, p50 / p99",
                     f"{delivery['median']:.2f} / {delivery['p99']:.1f} ms", "p50 <= 5 ms"))
    status = _get(report, "actor", "status")
    if status:
        rows.append(("status answered during generation, p99; cancel to done",
                     f"{_ms(status['during_generation_ms']['p99'])}; {_ms(status['cancel_to_done_ms'])}", "<= 50 ms"))
    rows += http_rows(report)
    flags = ", ".join(x for x in m["cpu_flags"] if x in ("avx2", "fma", "f16c", "avx512f", "avx512_vnni",
                                                         "avx512_bf16", "avx_vnni", "amx_tile", "neon", "sve"))
    lines = [f"`./run.sh bench`, {report['started'][:10]}: {m['cpu']}, {m['cores']} cores ({flags}), "
             f"{nat['model']}, {nat['threads']} threads; medians (spreads in `bench/out/report.json`)"
             + (f"; re-run later with `--only`: {', '.join(sorted(report['rerun']))}" if report.get("rerun") else "")
             + ".", "",
             "| figure | value | goal |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    misses = [g for g in report["goals"] if g["met"] is False]
    lines.append("")
    if misses:
        lines.append("Missed in this run: " + "; ".join(f"{g['goal']} {_num(g['value'])} (goal {g['target']})"
                                                       for g in misses) + ".")
    else:
        lines.append("Every goal met in this run.")
    return "\n".join(lines)


def http_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The HTTP comparison's lines of the README table (bench/http_compare.py)."""
    rows: list[tuple[str, str, str]] = []
    over = report.get("http_overhead")
    if over:
        t = over["ttft_ms"]
        rows.append((f"exact-hit TTFT, {over['prompt_tokens']}-token chat: Python API / HTTP / openai client; "
                     "disconnect to idle", f"{_ms(t['python']['median'])} / {_ms(t['http']['median'])} / "
                     f"{_ms(t['openai']['median'])}; {_ms(over['disconnect_to_idle_ms']['median'])}",
                     "HTTP <= +2 ms; <= 100 ms"))
    http = report.get("http") or {}
    chat = _get(http, "chat", "servers")
    names = {"ours": "ours", "llama_server": "llama-server", "llama_cpp_python": "llama-cpp-python"}
    if chat:
        have = [k for k in names if k in chat]
        rows.append((f"HTTP {http['chat']['turns']}-turn chat, openai client, total wall: "
                     + " / ".join(names[k] for k in have),
                     " / ".join(f"{chat[k]['total_wall_s']['median']:.2f} s" for k in have), "ours lowest"))
    conc = _get(http, "concurrent", "servers")
    if conc:
        have = [k for k in names if k in conc]
        rows.append((f"HTTP {http['concurrent']['clients']} concurrent streaming clients, aggregate tok/s; p99 TTFT: "
                     + " / ".join(names[k] for k in have),
                     " / ".join(_num(conc[k]["aggregate_tok_s"]["median"]) for k in have) + "; "
                     + " / ".join(_ms(conc[k]["ttft_p99_ms"]["median"]) for k in have), ""))
    return rows


def write_readme(block: str) -> None:
    """Replace what lies between the markers (added around the measured table, once, if absent)."""
    text = README.read_text()
    if BEGIN not in text or END not in text:
        lines = text.split("\n")
        head = next((i for i, ln in enumerate(lines) if ln.startswith("## Measured")), None)
        if head is None:
            raise RuntimeError(f"README.md has no {BEGIN} / {END} markers and no '## Measured' section")
        start = next(i for i in range(head + 1, len(lines)) if lines[i].startswith("|"))
        end = start
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        lines[start:end] = [BEGIN, *lines[start:end], END]
        text = "\n".join(lines)
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    README.write_text(pattern.sub(lambda _m: f"{BEGIN}\n{block}\n{END}", text, count=1))


# --------------------------------------------------------------------------- main


SECTIONS = ("native", "cache", "ttft", "peers", "actor", "cost", "actor_modes", "agents", "chat", "determinism",
            "server", "http_overhead", "http", "kill_matrix")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for CI (never rewrites the README)")
    ap.add_argument("--compare-flags", action="store_true", help="also build an AVX2-only llama.cpp and compare")
    ap.add_argument("--no-peers", action="store_true", help="skip llama-cpp-python (it builds for minutes)")
    ap.add_argument("--no-readme", action="store_true", help="a full run that leaves README.md alone")
    ap.add_argument("--reps", type=int, default=None,
                    help="runs per engine in the side-by-side sections (server, http); default: each script's own")
    ap.add_argument("--only", default=None, metavar="SECTIONS",
                    help=f"re-run only these sections ({','.join(SECTIONS)}) into the existing bench/out/report.json "
                         "of the same kind (full or smoke), keeping the others' figures; the report says which")
    args = ap.parse_args()
    import native_bench

    t_start = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    only = [x.strip() for x in args.only.split(",")] if args.only else list(SECTIONS)
    unknown = [x for x in only if x not in SECTIONS]
    if unknown:
        ap.error(f"--only: unknown sections {unknown} (known: {', '.join(SECTIONS)})")
    if args.only:
        report: dict[str, Any] = json.loads((OUT / "report.json").read_text())
        if report.get("smoke") != args.smoke:
            ap.error("--only: bench/out/report.json is from a " + ("smoke" if report.get("smoke") else "full") + " run")
        report.setdefault("rerun", {}).update({k: time.strftime("%Y-%m-%dT%H:%M:%S") for k in only})
    else:
        report = {"smoke": args.smoke, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(),
                  "section_s": {}}
    smoke = ["--smoke"] if args.smoke else []
    reps = ["--reps", str(args.reps)] if args.reps else []

    def section(key: str, title: str, fn: Any) -> None:
        if key not in only:
            return
        from bench_util import competing

        log(f"[bench] {title}")
        before = competing()  # load and other busy processes around the section: figures taken beside them
        t = time.perf_counter()
        report[key] = fn()
        report["section_s"][key] = round(time.perf_counter() - t, 1)
        report.setdefault("competition", {})[key] = {"before": before, "after": competing()}

    section("native", "binding vs llama-bench", lambda: native_bench.run(args.smoke, args.compare_flags))
    report["machine"]["llama_cpp_build_flags"] = report["native"].get("cpu_flags", {})
    section("cache", "cache lookup and restore bandwidth", lambda: run_script("cache_bench.py", cache_args(args.smoke)))
    section("ttft", "time to first token, cold vs warm (raw binding)", lambda: run_script("ttft_bench.py", smoke))
    if not args.no_peers and "peers" in only:
        import peers

        from actors.model.llama import default_model_path
        from actors.model.options import default_threads

        lengths = [int(n) for n in report["ttft"]["rows"]]
        task = {"model": str(default_model_path()), "threads": default_threads(),
                "prompt_lengths": lengths[:1] if args.smoke else lengths, "n_gen": report["native"]["n_gen"],
                "n_prompt": report["native"]["n_prompt"], "reps": report["native"]["reps"]}
        section("peers", "llama-cpp-python (same llama.cpp commit)",
                lambda: {"llama_cpp_python": peers.run_llama_cpp_python(task)})
    section("actor", "actor runtime: overheads, delivery, status, decode", lambda: run_script("actor_bench.py", smoke))
    section("cost", "actor runtime: CPU per request of the tree itself (stub model)",
            lambda: run_script("request_cost.py", smoke))
    section("actor_modes", "actor runtime: TTFT per cache mode, cache on vs off",
            lambda: run_script("actor_modes_bench.py", smoke))
    section("agents", "actor runtime: concurrent agents", lambda: run_script("agents_bench.py", smoke))
    section("chat", "actor runtime: multi-turn chat", lambda: run_script("chat_bench.py", smoke))
    section("determinism", "actor runtime: warm replies vs cold replays, per hit kind",
            lambda: run_script("determinism_bench.py", smoke))
    section("server", "ours vs llama-server (same tree and flags): chat, decode, restart, shared cores",
            lambda: run_script("server_compare.py", smoke + reps))
    section("http_overhead", "HTTP: exact-hit TTFT through HTTP vs the Python API, disconnect to idle",
            lambda: run_script("http_bench.py", ["--quick"] if args.smoke else []))
    section("http", "HTTP through the openai client: ours vs llama-server vs llama-cpp-python's server",
            lambda: run_script("http_compare.py",
                               smoke + reps + (["--no-llama-cpp-python"] if args.no_peers else [])))
    section("kill_matrix", "actor tree: SIGKILL each process during a stream (caller error, serving again, rows lost)",
            lambda: run_script("kill_matrix.py", smoke))
    report["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if not args.only:
        report["total_s"] = round(time.perf_counter() - t_start, 1)
    report["figures"] = figures(report)
    report["goals"] = goals(report)
    written = plot(report)
    (OUT / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    block = readme_table(report)  # built on every run (smoke too), so CI proves it still renders
    (OUT / "readme_table.md").write_text(block + "\n")
    written.append(OUT / "readme_table.md")
    if not args.smoke and not args.no_readme:
        write_readme(block)
        written.append(README)
    log(f"\nwrote {OUT / 'report.json'} and {', '.join(str(p) for p in written)} "
        f"in {time.perf_counter() - t_start:.1f} s")
    for g in report["goals"]:
        mark = "info" if g["met"] is None else "ok  " if g["met"] else "MISS"
        value = g["value"] if g["value"] is not None and not math.isnan(g["value"]) else float("nan")
        busy = " [another process competed for the cores]" if g.get("contended") else ""
        log(f"  {mark} {g['goal']}: {value:.3g} (goal {g['target']}){busy}")


if __name__ == "__main__":
    main()
