"""The llama-server section's goals and plot, read from its JSON (pure, apart from writing the PNG).

Kept apart from ``server_compare.py`` (which measures) and ``run.py`` (which
runs every section) so each stays one job.  Every goal is a ratio taken in
one run (issue 12); a goal whose figures were taken while another process
competed for the cores says so (``contended``), and ``run.py`` marks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _contended(*parts: Any) -> bool:
    """Any run behind these figures saw another process on the cores."""
    return any(bool(p and (p.get("contended_runs") or p.get("contended"))) for p in parts)


def goals(s: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, target: str, ok: bool | None, contended: bool = False) -> None:
        if value is not None:
            rows.append({"goal": f"llama-server: {name}", "value": value, "target": target, "met": ok,
                         "contended": contended})

    chat = s.get("chat") or {}
    if chat:
        c = _contended(chat.get("llama_server"), chat.get("ours"))
        v = chat["ours_over_llama_server_wall"]
        add("interleaved chat wall, ours / llama-server", v, "<= 0.95", v <= 0.95, c)
        lim = chat.get("ours_over_raw_binding_wall")
        if lim is not None:
            add("interleaved chat wall / the engine's own limit (the raw binding, least work, same turns)", lim,
                "<= 1.05", lim <= 1.05, _contended(chat.get("ours"), chat.get("raw_binding")))
        v = chat.get("in_process_over_llama_server_wall")
        if v is not None:
            add("interleaved chat wall, our engine in-process (no actors) / llama-server", v, "(info)", None, c)
            add("interleaved chat wall, ours (actor tree) / the same engine in-process",
                chat["ours_over_in_process_wall"], "(info)", None, c)
        v = chat.get("disk_over_ram_wall")
        if v is not None:
            add("interleaved chat wall, ram + disk tiers / ram only", v, "<= 1.05", v <= 1.05,
                _contended(chat.get("ours_disk"), chat.get("ours")))
        v = chat.get("http_ours_over_llama_server_wall")
        if v is not None:
            add("interleaved chat wall, /v1/chat/completions, ours / llama-server", v, "<= 0.95", v <= 0.95,
                _contended(chat.get("ours_http"), chat.get("llama_server_http")))
    small = s.get("chat_small_ram") or {}
    if small:
        c = _contended(small.get("llama_server"), small.get("ours"))
        if chat:
            v = round(small["ours"]["evaluated"]["median"] / max(1.0, chat["ours"]["evaluated"]["median"]), 3)
            add("32 MiB RAM: prompt tokens evaluated / the unlimited-RAM run", v, "<= 1.05", v <= 1.05, c)
        v = small["ours_over_llama_server_wall"]
        add("32 MiB RAM: chat wall, ours (+ disk tier) / llama-server", v, "<= 0.5", v <= 0.5, c)
    dec = s.get("decode") or {}
    if dec:
        c = _contended(dec)
        add(f"decode {dec['n_tokens']} tokens, streaming infer / llama-server", dec["streaming_over_llama_server"],
            ">= 0.97", dec["streaming_over_llama_server"] >= 0.97, c)
        add(f"decode {dec['n_tokens']} tokens, complete / llama-server", dec["complete_over_llama_server"], ">= 1",
            dec["complete_over_llama_server"] >= 1.0, c)
        sl = dec.get("short_over_long_per_token") or {}
        if "ours" in sl:
            add("decode time per token, 16-token replies / long reply (same prompt), ours", sl["ours"], "<= 1.05",
                sl["ours"] <= 1.05, c)
        if "llama_server" in sl:
            add("decode time per token, 16-token replies / long reply (same prompt), llama-server (info)",
                sl["llama_server"], "(info)", None, c)
    rs = s.get("restart") or {}
    for name, target in (("ours", 1.05), ("llama_server", None)):
        r = rs.get(name)
        if r:
            c = bool(r["no_restart"]["competition"]["contended"] or r["restart"]["competition"]["contended"])
            v = r["evaluated_restart_over_none"]
            label = "ours" if name == "ours" else "llama-server (info)"
            add(f"graceful restart halfway: prompt tokens evaluated / no restart, {label}", v,
                f"<= {target}" if target else "(info)", v <= target if target else None, c)
    cores = s.get("cores") or {}
    if cores:
        add("two models of one node decoding together / one alone (aggregate tok/s)", cores["two_over_alone"],
            ">= 0.9", cores["two_over_alone"] >= 0.9)
        add("decode beside a process holding one core / quiet", cores["busy_over_quiet"], ">= 0.5",
            cores["busy_over_quiet"] >= 0.5,
            any(b.get("contended") for b in cores.get("busy_competition", [])))
    return rows


def plot(plt: Any, s: dict[str, Any], path: Path) -> Path | None:
    """Four panels: chat wall (our engine in-process too, where run), chat evaluated tokens, decode rates,
    shared cores (median bars, min-max whiskers)."""
    chat, small, dec, cores = (s.get(k) or {} for k in ("chat", "chat_small_ram", "decode", "cores"))
    if not (chat or dec or cores):
        return None
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.4))

    def bars(ax: Any, labels: list[str], stats: list[dict[str, Any]], title: str, color: str) -> None:
        meds = [x["median"] for x in stats]
        errs = [[m - x.get("min", m) for m, x in zip(meds, stats, strict=True)],
                [x.get("max", m) - m for m, x in zip(meds, stats, strict=True)]]
        ax.bar(range(len(labels)), meds, yerr=errs, capsize=3, color=color)
        for i, m in enumerate(meds):
            ax.text(i, m, f"{m:.3g}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.margins(y=0.18)

    walls, evals, labels = [], [], []
    for name, sec in (("", chat), ("32 MiB, ", small)):
        for eng in ("llama_server", "ours", "engine_in_process", "raw_binding", "ours_disk", "llama_server_http",
                    "ours_http"):
            if eng in sec:
                labels.append(name + eng.replace("_", " "))
                walls.append(sec[eng]["wall_s"])
                evals.append(sec[eng].get("evaluated", {"median": 0.0}))
    if labels:
        bars(axes[0], labels, walls, "interleaved chat: total wall (s)", "#1f77b4")
        bars(axes[1], labels, evals, "interleaved chat: prompt tokens evaluated", "#2ca02c")
    if dec:
        names = ["llama_server", "ours_complete", "ours_streaming"]
        bars(axes[2], [n.replace("_", " ") for n in names], [dec[n] for n in names],
             f"decode {dec['n_tokens']} tokens (tok/s)", "#ff7f0e")
    if cores:
        bars(axes[3], ["one model alone", "two models, sum", "beside a busy core"],
             [cores["alone_tok_s"], cores["two_models_aggregate_tok_s"], cores["beside_busy_core_tok_s"]],
             f"shared cores ({cores['node_cores']} cores), tok/s", "#9467bd")
    fig.suptitle(f"ours vs llama-server: {s.get('model')}, {s.get('threads')} threads, one slot, greedy"
                 + (" (smoke sizes: not for quoting)" if s.get("smoke") else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["goals", "plot"]
