"""The HTTP comparison's summaries, ratios, goals and plot, read from its runs (pure, apart from writing the PNG).

Kept apart from ``http_compare.py`` (which measures) so ``run.py`` can read
the goals of a finished report without starting anything.  Every figure is
ours against each peer, taken in one run; a ratio with a contended run
behind either side says so (``contended``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_util import log, spread

SERVERS = ("ours", "llama_server", "llama_cpp_python")
LABELS = {"ours": "ours (llama-actors)", "llama_server": "llama-server", "llama_cpp_python": "llama-cpp-python"}

def _contended(runs: list[dict[str, Any]]) -> int:
    return sum(1 for r in runs if r["competition"]["contended"])


def chat_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    n_turns = len(runs[0]["turns"])
    per_turn = {k: [spread([r["turns"][t][k] for r in runs], nd=2)["median"] for t in range(n_turns)]
                for k in ("ttft_ms", "wall_ms", "completion_tokens")}
    return {"total_wall_s": spread([r["total_wall_s"] for r in runs]), "per_turn_median": per_turn,
            "ttft_ms": spread([t["ttft_ms"] for r in runs for t in r["turns"]], nd=2),
            "completion_tokens": sum(t["completion_tokens"] for t in runs[0]["turns"]),
            "cached_tokens": [t["cached_tokens"] for t in runs[0]["turns"]],
            "contended_runs": _contended(runs), "max_load_avg_1m": max(r["competition"]["max_load_avg_1m"] or 0
                                                                       for r in runs),
            "idle_servers_cpu_s": max(r["idle_servers_cpu_s"] for r in runs)}


def concurrent_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"aggregate_tok_s": spread([r["aggregate_tok_s"] for r in runs], nd=2),
            "ttft_p99_ms": spread([r["ttft_p99_ms"] for r in runs], nd=2),
            "ttft_p50_ms": spread([r["ttft_p50_ms"] for r in runs], nd=2),
            "wall_s": spread([r["wall_s"] for r in runs]),
            "completion_tokens": spread([r["completion_tokens"] for r in runs], nd=0),
            "contended_runs": _contended(runs), "max_load_avg_1m": max(r["competition"]["max_load_avg_1m"] or 0
                                                                       for r in runs),
            "idle_servers_cpu_s": max(r["idle_servers_cpu_s"] for r in runs)}


def ratios(report: dict[str, Any]) -> dict[str, Any]:
    """Ours against each peer, one ratio per figure; ``contended`` when a run behind either side was."""
    out: dict[str, Any] = {}
    for section, figs in (("chat", (("total_wall_s", "lower"), ("ttft_ms", "lower"))),
                          ("concurrent", (("aggregate_tok_s", "higher"), ("ttft_p99_ms", "lower")))):
        s = (report.get(section) or {}).get("servers") or {}
        if "ours" not in s:
            continue
        for peer in (p for p in SERVERS[1:] if p in s):
            for fig, better in figs:
                ours_v, peer_v = s["ours"][fig]["median"], s[peer][fig]["median"]
                out[f"{section}.{fig}.ours_over_{peer}"] = {
                    "value": round(ours_v / peer_v, 3) if peer_v else None, "ours": ours_v, "peer": peer_v,
                    "better": better, "contended": bool(s["ours"]["contended_runs"] or s[peer]["contended_runs"])}
    return out


def same_replies(chat: dict[str, Any]) -> dict[str, str]:
    """Per peer, how many turns of its first run replied the same text as ours (greedy, same template).

    The chat's history is each server's own replies, so after the first
    difference the prompts differ too; this says how far the engines agree,
    and so how comparable the generated lengths behind the wall times are.
    """
    runs = chat.get("runs") or {}
    if "ours" not in runs:
        return {}
    mine = [t["text"] for t in runs["ours"][0]["turns"]]
    out = {}
    for peer in (p for p in SERVERS[1:] if p in runs):
        theirs = [t["text"] for t in runs[peer][0]["turns"]]
        out[peer] = f"{sum(a == b for a, b in zip(mine, theirs, strict=True))}/{len(mine)}"
    return out


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for run.py's goal list: the chat's total wall is the goal; the concurrent figures are information."""
    rows = []
    for key, r in (report.get("ratios") or {}).items():
        section, fig, who = key.split(".")
        peer = LABELS[who.removeprefix("ours_over_")]
        if r["value"] is None:
            continue
        if section == "chat" and fig == "total_wall_s":
            name = f"HTTP {report['chat']['turns']}-turn chat (openai client), total wall, ours / {peer}"
            rows.append({"goal": name, "value": r["value"], "target": "< 1", "met": r["value"] < 1.0,
                         "contended": r["contended"]})
        elif section == "chat":
            rows.append({"goal": f"HTTP chat, streamed TTFT (median of all turns), ours / {peer}",
                         "value": r["value"], "target": "(info)", "met": None, "contended": r["contended"]})
        else:
            what = "aggregate tok/s" if fig == "aggregate_tok_s" else "p99 TTFT"
            n = report["concurrent"]["clients"]
            rows.append({"goal": f"HTTP {n} concurrent streaming clients, {what}, ours / {peer}", "value": r["value"],
                         "target": "(info)", "met": None, "contended": r["contended"]})
    return rows


# --------------------------------------------------------------------------- plot


def plot(report: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no plot")
        return None
    colors = {"ours": "#1f77b4", "llama_server": "#777", "llama_cpp_python": "#ff7f0e"}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    chat = report.get("chat") or {}
    cs = chat.get("servers") or {}
    mark = {n: " (contended)" if v["contended_runs"] else "" for n, v in cs.items()}
    ax = axes[0]
    for n, v in cs.items():
        ttft = v["per_turn_median"]["ttft_ms"]
        ax.plot(range(1, len(ttft) + 1), ttft, "o-", color=colors[n], label=LABELS[n] + mark[n])
    ax.set_yscale("log")
    ax.set_xticks(range(1, int(chat.get("turns", 1)) + 1))
    ax.set_xlabel("turn (whole conversation resent)")
    ax.set_ylabel("streamed TTFT, ms (median over runs, log)")
    ax.set_title(f"{chat.get('turns', '?')}-turn chat: time to first content delta", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if cs:
        ax.legend(fontsize=7)
    ax = axes[1]
    names = [n for n in SERVERS if n in cs]
    _bars(ax, names, [cs[n]["total_wall_s"] for n in names], colors, {n for n in names if cs[n]["contended_runs"]}, "s",
          lambda n: _vs(cs, n, "total_wall_s"))
    ax.set_ylabel("total wall time, s (median, min-max)")
    ax.set_title(f"{chat.get('turns', '?')}-turn chat, {chat.get('max_tokens', '?')} tokens a reply: total wall",
                 fontsize=10)
    conc = report.get("concurrent") or {}
    ss = conc.get("servers") or {}
    ax = axes[2]
    names = [n for n in SERVERS if n in ss]
    _bars(ax, names, [ss[n]["aggregate_tok_s"] for n in names], colors, {n for n in names if ss[n]["contended_runs"]},
          "tok/s",
          lambda n: f"p99 TTFT {ss[n]['ttft_p99_ms']['median']:.0f} ms" + (f"\n{_vs(ss, n, 'aggregate_tok_s')}"
                                                                           if n != "ours" else ""))
    ax.set_ylabel("aggregate generated tokens/s (median, min-max)")
    ax.set_title(f"{conc.get('clients', '?')} concurrent streaming clients", fontsize=10)
    busy = any(v["contended_runs"] for part in (cs, ss) for v in part.values())
    fig.suptitle(f"HTTP through the openai client, {report.get('model_name', '')}, {report.get('threads')} threads"
                 + (" [SMOKE: not figures]" if report.get("smoke") else "")
                 + (" [contended: another process used the cores]" if busy else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _vs(servers: dict[str, Any], peer: str, fig: str) -> str:
    """The bar's note: ours over this peer (none on our own bar)."""
    if peer == "ours" or "ours" not in servers:
        return ""
    return f"ours / this: {servers['ours'][fig]['median'] / servers[peer][fig]['median']:.2f}"


def _bars(ax: Any, names: list[str], stats: list[dict[str, Any]], colors: dict[str, str], contended: set[str],
          unit: str, note: Callable[[str], str]) -> None:
    """Median bars with min-max whiskers; a hatched bar had another process on the cores during a run."""
    vals = [s["median"] for s in stats]
    errs = [[max(0.0, s["median"] - s["min"]) for s in stats], [max(0.0, s["max"] - s["median"]) for s in stats]]
    bars = ax.bar(range(len(names)), vals, yerr=errs, capsize=3, color=[colors[n] for n in names])
    for i, n in enumerate(names):
        if n in contended:
            bars[i].set_hatch("//")
        busy = " (contended)" if n in contended else ""
        ax.text(i, vals[i], f"{vals[i]:.2f} {unit}{busy}\n{note(n)}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)), [LABELS[n] for n in names], fontsize=8)
    ax.margins(y=0.25)
