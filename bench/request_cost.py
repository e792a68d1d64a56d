"""What one request costs the actor tree itself: CPU per request, per process, on the stub backend.

The stub backend computes nothing, so every CPU second counted here is the
runtime's own: the client, thespian hops, the supervisor, the engine's
Python, the cache meta's bookkeeping, token delivery.  CPU time (not wall
time) is what matters on a two-core host, where every cycle the runtime
spends is taken from llama.cpp's threads, and it stays meaningful on a busy
machine, where wall times do not.

Reports, for a plain request (``complete``) and a streamed one (``infer``)
of ``--tokens`` tokens each, a partial cache hit every time (a shared
400-token prefix with a new tail): CPU ms per request in total and per
process role (model, model supervisor, cache meta, client, the rest), and
wall ms per request.  JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any

import psutil
from bench_util import log

from actors.api import System
from actors.cache.config import CacheConfig
from actors.supervisor import runtime


def _port(addr: Any) -> int | None:
    m = re.search(r":(\d+)\)?$", str(addr))
    return int(m.group(1)) if m else None


def roles(system: System, model: str) -> dict[int, str]:
    """pid -> role for the processes of the tree, by the port each actor listens on."""
    out = {os.getpid(): "client"}
    model_pid = system.status(model).get("pid")
    if model_pid:
        out[int(model_pid)] = "model"
    for role, addr in (("supervisor", system.tree.models), ("meta", system.tree.meta)):
        port = _port(addr)
        pid = runtime.listener_pid(port) if port else None
        if pid:
            out[pid] = role
    return out


def cpu_of(pids: list[int]) -> dict[int, float]:
    out = {}
    for p in pids:
        try:
            t = psutil.Process(p).cpu_times()
            out[p] = t.user + t.system
        except psutil.Error:
            pass
    return out


def measure(system: System, model: str, n: int, tokens: int, stream: bool) -> dict[str, Any]:
    prefix = [(i * 7) % 200 + 10 for i in range(400)]
    for i in range(5):
        system.complete(model, [*prefix, 200 + i], max_tokens=tokens)
    who = roles(system, model)
    pids = sorted(set(system.pids()) | set(who))
    c0 = cpu_of(pids)
    w0 = time.perf_counter()
    for i in range(n):
        prompt = [*prefix, 10 + i % 200, 11 + (i * 3) % 200]
        if stream:
            for _ in system.infer(model, prompt, max_tokens=tokens):
                pass
        else:
            system.complete(model, prompt, max_tokens=tokens)
    wall = time.perf_counter() - w0
    c1 = cpu_of(pids)
    by_role: dict[str, float] = {}
    for p, t in c1.items():
        role = who.get(p, "other")
        by_role[role] = by_role.get(role, 0.0) + (t - c0.get(p, t))
    per = {k: round(v / n * 1e3, 3) for k, v in sorted(by_role.items())}
    return {"cpu_ms_per_request": round(sum(by_role.values()) / n * 1e3, 3), "cpu_ms_by_role": per,
            "wall_ms_per_request": round(wall / n * 1e3, 3), "requests": n, "tokens": tokens}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--smoke", action="store_true", help="a few requests, to check the code runs")
    a = ap.parse_args(argv)
    n = 20 if a.smoke else a.requests
    load0 = os.getloadavg()
    with System(cache=CacheConfig.create(ram=256 << 20)) as system:
        system.load_model("stub", backend="stub", stub={"n_seq_max": 1, "n_batch": 512})
        out = {"complete": measure(system, "stub", n, a.tokens, stream=False),
               "infer": measure(system, "stub", n, a.tokens, stream=True)}
    out["loadavg_before_after"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
    log(f"request cost: complete {out['complete']['cpu_ms_per_request']} ms CPU, "
        f"infer {out['infer']['cpu_ms_per_request']} ms CPU per request")
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
