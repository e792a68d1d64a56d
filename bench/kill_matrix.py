"""The kill matrix: SIGKILL each process of the actor tree during a stream, and what a user sees.

For each process (the model itself, the model supervisor, the cache
supervisor, the meta, each cache writer, the root; and three models plus
both writers in the same instant), ``--rounds`` times:

* ``caller_error_s``: from the kill to the end of the stream in flight on
  model ``a``, and how it ended (``outcome``: ``model_crashed``, or
  ``unaffected`` when the dead process was not on the stream's path: the
  cache side);
  ``hang`` would mean the caller waited out its own timeout; ``unaffected``: the
  stream was still running when the tree served again (then it is cancelled);
* ``serving_s``: from the kill until every model is listed ``ready`` in a
  process that was not killed and answers a request (load time included);
* ``rows_lost``: rows saved and published before the kill (a disk tier)
  that are no longer exact hits afterwards.

Each process gets a fresh tree (its rounds then stay within every restart
intensity), on the same cache directories; each tree is closed at the end:
``close_s`` and the pids left (``left_after_close``: none).

Restart intensity bounds ``--rounds``: a model may restart ``MAX_RESTARTS``
(3) times in 30 s, the cache supervisor 3 times in 30 s, the daemon's root 3
times in 60 s, and the kills follow each other within seconds.

Real model (SmolLM2, one thread per model) by default; ``--stub`` for the
stub backend; ``--smoke``: stub, one round.  JSON on stdout and in
bench/out/kill_matrix.json; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from bench_util import log, running_system

from actors.api import ModelError, System
from actors.cache import messages as cm
from actors.cache.config import CacheConfig
from actors.cache.policy import SavePolicy
from actors.supervisor import messages as sm
from actors.supervisor import runtime
from actors.supervisor.models import MAX_RESTARTS

OUT = Path(__file__).resolve().parent / "out"
MODELS = ("a", "b", "c")
VICTIMS = ("model", "models", "cache", "meta", "writer0", "writer1", "root", "3 models + 2 writers")
POLICY = SavePolicy(min_tokens=8, cold_min_tokens=8, continued_interval=0, boundary_trim_tokens=0,
                    boundary_align_tokens=1)
REAL_CONTEXT = {"n_ctx": 1024, "n_batch": 256, "n_seq_max": 2, "n_threads": 1, "n_threads_batch": 1}
STUB = {"n_seq_max": 2, "n_batch": 64, "step_delay_s": 0.01}
SERVING_TIMEOUT_S = 120.0


def tree_pids(s: System) -> dict[str, int]:
    """Pid of each supervised process: root, cache, models, meta, writer0/1, model:<id>."""
    info = runtime.ask(s.asys, runtime.find_root(s.asys), sm.TreeInfoReq(), 10)
    pids = dict(info.pids)
    kids = runtime.ask(s.asys, info.cache, sm.WhichChildren(), 10)
    pids["meta"] = kids.pids["meta"]
    for i, w in enumerate(sorted(p.pid for p in psutil.Process(pids["meta"]).children())):
        pids[f"writer{i}"] = w
    for m in s.list_models():
        pids[f"model:{m['model_id']}"] = m["pid"]
    return pids


def replaced_of(name: str, pids: dict[str, int]) -> set[int]:
    """Model processes that a kill of ``name`` replaces: serving again means serving from new ones."""
    if name in ("models", "root", "3 models + 2 writers"):
        return {pids[f"model:{m}"] for m in MODELS}
    return {pids["model:a"]} if name == "model" else set()


def victims_of(name: str, pids: dict[str, int]) -> list[int]:
    if name == "model":
        return [pids["model:a"]]
    if name == "3 models + 2 writers":
        return [pids[f"model:{m}"] for m in MODELS] + [pids["writer0"], pids["writer1"]]
    return [pids[name]]


class Stream:
    """A stream in flight on model ``a``: how it ended, and when."""

    PROMPT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # the model counts on: no early end of generation

    def __init__(self, s: System, max_tokens: int) -> None:
        self.outcome = ""
        self.ended = 0.0
        self.first = threading.Event()
        self.stream: Any = None
        self.thread = threading.Thread(target=self._run, args=(s, max_tokens), daemon=True)
        self.thread.start()
        if not self.first.wait(60) or self.outcome:
            raise RuntimeError(f"the stream never ran: {self.outcome or 'no token within 60 s'}")

    def _run(self, s: System, max_tokens: int) -> None:
        try:
            self.stream = s.infer("a", self.PROMPT, max_tokens=max_tokens, timeout=60)
            for _chunk in self.stream:
                self.first.set()
            self.outcome = self.outcome or "done"
        except ModelError as e:
            self.outcome = self.outcome or e.reason
        except TimeoutError:
            self.outcome = self.outcome or "hang"
        finally:
            self.ended = time.monotonic()
            self.first.set()

    def finish(self) -> None:
        """Still streaming once the tree serves again: the kill was not on its path; stop it there."""
        if not self.outcome and self.stream is not None:
            self.outcome = "unaffected"
            self.stream.cancel()
        self.thread.join(90)


def serving(s: System, killed: set[int]) -> bool:
    try:
        listed = {m["model_id"]: m for m in s.list_models()}
        if not all(m in listed and listed[m]["state"] == "ready" and listed[m]["pid"] not in killed
                   for m in MODELS):
            return False
        return all(s.complete(m, "ping", max_tokens=1, timeout=30).generated is not None for m in MODELS)
    except (ModelError, TimeoutError):
        return False


def wait_until(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def published(s: System) -> None:
    runtime.ask(s.asys, s.tree.meta, cm.WaitIdle(), 60)


def exact_hits(s: System, prompts: list[str]) -> int:
    return sum(s.complete("a", p, max_tokens=1).cache_hit_kind == "exact" for p in prompts)


def one_kill(s: System, name: str, saved: list[str], max_tokens: int) -> dict[str, Any]:
    pids = tree_pids(s)
    victims = victims_of(name, pids)
    if not all(isinstance(p, int) and p > 1 for p in victims):  # pid 0 would be our own process group
        raise RuntimeError(f"not a process to kill among {victims}")
    replaced = replaced_of(name, pids) | set(victims)
    stream = Stream(s, max_tokens)
    t_kill = time.monotonic()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    back = wait_until(lambda: serving(s, replaced), SERVING_TIMEOUT_S)  # while the stream runs on
    t_serving = time.monotonic() - t_kill
    stream.finish()
    # a new model process learns the index from the meta a moment after it is ready: give it 5 s
    hits = 0
    deadline = time.monotonic() + 5.0
    while back and time.monotonic() < deadline:
        hits = sum(s.list_cached_prefixes("a", p)["kind"] == "exact" for p in saved)
        if hits == len(saved):
            break
        time.sleep(0.05)
    lost = len(saved) - (exact_hits(s, saved) if hits == len(saved) else hits)
    return {"outcome": stream.outcome or "hang",
            "caller_error_s": round(stream.ended - t_kill, 3) if stream.outcome != "unaffected" else None,
            "serving_s": round(t_serving, 3) if back else None, "rows_lost": lost}


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    errs = [r["caller_error_s"] for r in rounds if r["outcome"] not in ("done", "unaffected", "hang")]
    serving_s = [r["serving_s"] for r in rounds if r["serving_s"] is not None]
    return {"outcomes": sorted({r["outcome"] for r in rounds}),
            "caller_error_s": round(statistics.median(errs), 3) if errs else None,
            "caller_error_max_s": round(max(errs), 3) if errs else None,
            "serving_s": round(statistics.median(serving_s), 3) if serving_s else None,
            "serving_max_s": round(max(serving_s), 3) if serving_s else None,
            "rows_lost": sum(r["rows_lost"] for r in rounds), "n": len(rounds), "rounds": rounds}


def run(stub: bool, rounds: int, n_rows: int) -> dict[str, Any]:
    """One fresh tree per process killed (so one kind's restarts never count against another's
    intensity), all on the same cache directories: the rows saved by the first tree are the rows
    every later one must still find."""
    tmp = Path(tempfile.mkdtemp(prefix="llama-actors-kill-"))
    cache = CacheConfig.create(tmp / "run", ram=64 << 20, disk=(tmp / "disk", 256 << 20), default_tier="disk",
                               policy=POLICY, fsync=False)
    report: dict[str, Any] = {"backend": "stub" if stub else "llama", "rounds": rounds, "rows_saved": n_rows,
                              "processes": {}, "close_s": {}, "left_after_close": {}}
    saved = [f"Row {i}: a prompt saved before any kill, to be found again after every one of them."
             for i in range(n_rows)]
    try:
        return _run_victims(stub, rounds, cache, saved, report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the trees are stopped by now: their cache files go too


def _run_victims(stub: bool, rounds: int, cache: CacheConfig, saved: list[str],
                 report: dict[str, Any]) -> dict[str, Any]:
    for name in VICTIMS:
        ever: set[int] = set()
        with running_system(cache) as s:
            for m in MODELS:
                if stub:
                    s.load_model(m, backend="stub", stub=STUB)
                else:
                    s.load_model(m, context=REAL_CONTEXT)
            if name == VICTIMS[0]:
                for p in saved:
                    s.prefill_only("a", p)
                published(s)
            if not wait_until(lambda: exact_hits(s, saved) == len(saved), 10):
                raise RuntimeError("the rows saved before the kills are not exact hits")
            rows = []
            for r in range(rounds):
                ever |= set(tree_pids(s).values())
                row = one_kill(s, name, saved, 2000)
                log(f"[kill_matrix] {name} round {r + 1}/{rounds}: {row}")
                rows.append(row)
            report["processes"][name] = summary(rows)
            ever |= set(tree_pids(s).values())
            t0 = time.monotonic()
        report["close_s"][name] = round(time.monotonic() - t0, 3)
        report["left_after_close"][name] = runtime.alive(ever)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="stub models, one round (CI)")
    ap.add_argument("--stub", action="store_true", help="stub models instead of the bundled SmolLM2")
    ap.add_argument("--rounds", type=int, default=None, help="kills per process (default 3; 1 with --smoke)")
    ap.add_argument("--rows", type=int, default=4, help="rows saved before the kills")
    a = ap.parse_args()
    rounds = a.rounds or (1 if a.smoke else 3)
    if not 1 <= rounds <= MAX_RESTARTS:  # a model restarts at most 3 times in 30 s, then it is marked failed
        ap.error(f"--rounds: 1 to {MAX_RESTARTS} (a model's restart intensity; the kills of one process "
                 "follow each other within seconds)")
    report = run(a.stub or a.smoke, rounds, 2 if a.smoke else a.rows)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "kill_matrix.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
