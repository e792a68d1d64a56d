"""What the HTTP front door costs: exact-hit TTFT through HTTP vs through the Python API, and disconnect-to-idle.

    .venv/bin/python bench/http_bench.py            # JSON report on stdout, bench/out/http.json, bench/out/http.png
    .venv/bin/python bench/http_bench.py --quick    # a smoke-size run (code check, not a figure)

The server runs as users run it: ``llama-actors serve --http`` in its own process, on the bundled
model.  This process attaches a ``System`` to that tree for the Python side, so both clients reach
the same model from outside the server.  The same ~450-token chat, saved once, is then an exact hit
every time; each round measures, in alternating order, the time to the first model event for

* ``python``: ``System.infer`` with the same chat (the model renders and tokenizes it, as over HTTP),
* ``http``: a raw streaming POST over a kept-alive connection (httpx): the request parsed, the server's
  asyncio bridge, JSON and SSE framing, both sockets,
* ``openai``: the official ``openai`` client's streaming call (its own request building and parsing),
* ``python_tokens`` (info): ``System.infer`` with the chat already tokenized (no render, no tokenize),
* ``static`` (info): ``GET /`` of the static page, the HTTP round trip alone on this machine.

``--baseline CHECKOUT`` also starts the same server from another checkout of this repository (a
``git worktree`` of an older commit, with ``actors/model/_native*.so`` copied or built) and adds
``http_baseline``: the same raw POST to it, alternated with the others, so a change to the request
path is measured before/after in one run, paired, on one machine state.

Goal: ``http`` adds at most 2 ms over ``python`` (medians).  ``disconnect_to_idle``: a streaming
client closes its connection mid-generation; time until the model's phase reads ``idle`` in shared
memory (the request cancelled and its sequence freed); goal 100 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import http_servers
from bench_util import (  # puts the repository on sys.path
    SYSTEM_TEXT,
    competing,
    log,
    spread,
    stop_cleanly_on_sigterm,
)

from actors.api import System
from actors.model import messages as mm

OUT = Path(__file__).resolve().parent / "out"
MODEL = "smol"


def python_ttft(system: Any, prompt: Any) -> float:
    t0 = time.perf_counter()
    stream = system.infer(MODEL, prompt, max_tokens=2)
    first = None
    for ev in stream:
        if first is None and isinstance(ev, mm.TokenChunk):
            first = time.perf_counter() - t0
    assert stream.result is not None and stream.result.cache_hit_kind == "exact", stream.result
    return first if first is not None else float("nan")


def http_ttft(client: Any, url: str, body: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    first = None
    last = ""
    with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and first is None:
                first = time.perf_counter() - t0  # the role chunk: sent on the first model event
            if line.startswith("data: {"):
                last = line
    assert json.loads(last[6:]).get("usage") or "exact" in last, last
    return first if first is not None else float("nan")


def openai_ttft(oa: Any, messages: list[dict[str, str]]) -> float:
    t0 = time.perf_counter()
    first = None
    kind = None
    for chunk in oa.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, temperature=0, stream=True):
        if first is None:
            first = time.perf_counter() - t0
        kind = (getattr(chunk, "llama_actors", None) or {}).get("cache_hit_kind", kind)
    assert kind == "exact", kind
    return first if first is not None else float("nan")


def static_rtt(client: Any, url: str) -> float:
    t0 = time.perf_counter()
    r = client.get(url + "/")
    r.read()
    assert r.status_code == 200
    return time.perf_counter() - t0


def disconnect_to_idle(system: Any, client: Any, url: str, body: dict[str, Any]) -> float:
    with client.stream("POST", url + "/v1/chat/completions", json={**body, "max_tokens": 400}) as r:
        lines = r.iter_lines()
        for line in lines:
            if '"content":"' in line and '"content":""' not in line:
                break  # generating now
        t0 = time.perf_counter()
    # The measurement's own poll of shared memory (1 ms resolution), not a wait for a result.
    while system.observe(MODEL).phase != "idle":
        time.sleep(0.001)
    return time.perf_counter() - t0


def plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no plot")
        return
    order = ("python_tokens", "python", "http", "http_baseline", "openai", "static")
    names = [n for n in order if n in report["ttft_ms"]]
    med = [report["ttft_ms"][n]["median"] for n in names]
    lo = [m - report["ttft_ms"][n]["p10"] for m, n in zip(med, names, strict=True)]
    hi = [report["ttft_ms"][n]["p90"] - m for m, n in zip(med, names, strict=True)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    colors = {"python_tokens": "#9c9", "python": "#4a7", "http": "#47a", "http_baseline": "#9ab", "openai": "#a74",
              "static": "#aaa"}
    ax.bar(names, med, yerr=[lo, hi], capsize=6, color=[colors[n] for n in names])
    ax.set_ylabel("exact-hit TTFT, ms (median, p10-p90)")
    ax.set_title(f"{report['prompt_tokens']}-token prompt, SmolLM2-135M: HTTP adds "
                 f"{report['http_overhead_ms']:.2f} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    stop_cleanly_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few rounds: checks the code, not a figure")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baseline", type=Path, help="another checkout to serve beside this one (before/after)")
    a = ap.parse_args()
    rounds = 4 if a.quick else a.rounds
    import httpx
    import openai

    before = competing()
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(http_servers.ours(a.threads, 4096, 2, 8))
        client = stack.enter_context(httpx.Client(timeout=120))
        base = stack.enter_context(http_servers.ours(a.threads, 4096, 2, 8, a.baseline)) if a.baseline else None
        assert srv.admin_port is not None
        system = System.attach(srv.admin_port)
        try:
            url = f"http://{http_servers.LOOPBACK}:{srv.port}"
            messages = [{"role": "system", "content": SYSTEM_TEXT * 7}, {"role": "user", "content": "Open Sunday?"}]
            chat = mm.ChatPrompt(tuple(messages))
            tokens = system.apply_chat_template(MODEL, messages, tokenize=True)
            body = {"model": MODEL, "messages": messages, "max_tokens": 2, "temperature": 0, "stream": True,
                    "stream_options": {"include_usage": True}}
            oa = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, http_client=client)
            system.complete(MODEL, tokens, max_tokens=1)  # cold: saves the prompt row with its logits
            runs: dict[str, Callable[[], float]] = {
                "python": lambda: python_ttft(system, chat),
                "http": lambda: http_ttft(client, url, body),
                "openai": lambda: openai_ttft(oa, messages),
                "python_tokens": lambda: python_ttft(system, tokens),
                "static": lambda: static_rtt(client, url),
            }
            if base is not None:
                base_url = f"http://{http_servers.LOOPBACK}:{base.port}"
                runs["http_baseline"] = lambda: http_ttft(client, base_url, body)
            for _ in range(2):  # warm every path once (connections, imports)
                for run in runs.values():
                    run()
            samples: dict[str, list[float]] = {name: [] for name in runs}
            for i in range(rounds):
                order = list(runs) if i % 2 == 0 else list(reversed(runs))
                for name in order:
                    samples[name].append(runs[name]())
            idle = [disconnect_to_idle(system, client, url, body) for _ in range(3 if a.quick else 10)]
        finally:
            system.close()
    ttft = {k: spread(v, 1e3) for k, v in samples.items()}
    report = {
        "prompt_tokens": len(tokens), "rounds": rounds, "n_threads": a.threads, "quick": a.quick,
        "ttft_ms": ttft,
        "http_overhead_ms": round(ttft["http"]["median"] - ttft["python"]["median"], 3),
        "openai_client_overhead_ms": round(ttft["openai"]["median"] - ttft["python"]["median"], 3),
        "chat_render_ms": round(ttft["python"]["median"] - ttft["python_tokens"]["median"], 3),
        "goal_http_overhead_ms": 2.0,
        "baseline": str(a.baseline) if a.baseline else None,
        "http_change_ms": (round(ttft["http"]["median"] - ttft["http_baseline"]["median"], 3)
                           if "http_baseline" in ttft else None),
        "disconnect_to_idle_ms": spread(idle, 1e3),
        "goal_disconnect_to_idle_ms": 100.0,
        "machine": {"before": before, "after": competing()},
    }
    if not a.quick:
        OUT.mkdir(exist_ok=True)
        (OUT / "http.json").write_text(json.dumps(report, indent=2) + "\n")
        plot(report, OUT / "http.png")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
