"""Helpers shared by the actor-runtime benchmarks (agents, chat, TTFT per cache mode).

Why a module of its own: every scenario starts a real actor tree, and each one
must stop it in ``finally`` and prove nothing of it is left running, or a
failed benchmark would leave model processes eating the two cores the next
section measures with.  The spread helper keeps every figure reported the same
way (median, min/max, p10/p90, n), so run.py and the README can read any of
them without knowing where it came from.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from actors.api import System  # noqa: E402
from actors.supervisor.runtime import alive  # noqa: E402

# Real text, so prompts tokenize like a system prompt does (random ids would too, but read worse in replies).
SYSTEM_TEXT = ("You are a support assistant for a hardware store. Answer in one or two sentences. Store hours are "
               "8am to 6pm Monday to Saturday, closed on Sunday. We sell tools, paint, garden supplies, plumbing "
               "and electrical parts. Returns are accepted within 30 days with a receipt. ")
QUESTIONS = ("Are you open on Sunday?", "Can I return a drill I bought last week?", "Do you sell garden hoses?",
             "What paint would you use for a bathroom ceiling?", "How late are you open on Saturday?",
             "Do you cut keys?", "Which glue holds ceramic best?", "Can you deliver lumber?",
             "Do you rent floor sanders?", "What size fuse does a kettle need?", "Do you sell seeds?",
             "Is there parking behind the store?")



def stop_cleanly_on_sigterm() -> None:
    """SIGTERM (a CI timeout, ``kill PID``) unwinds like Ctrl-C: the ``finally`` blocks that stop the
    actor trees and peer servers a benchmark started run, instead of leaving them behind."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)

def log(*a: Any) -> None:
    """Progress goes to stderr: stdout carries only the JSON report."""
    print(*a, file=sys.stderr, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: every value reported was measured)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def spread(values: Sequence[float], scale: float = 1.0, nd: int = 3) -> dict[str, float]:
    """Median and spread of repeated measurements (``scale`` converts units, e.g. 1e3 for s -> ms)."""
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "p10": float("nan"),
                "p90": float("nan"), "n": 0}
    v = [x * scale for x in values]
    return {"median": round(statistics.median(v), nd), "min": round(min(v), nd), "max": round(max(v), nd),
            "p10": round(pct(v, 0.10), nd), "p90": round(pct(v, 0.90), nd), "n": len(v)}


def latency(values: Sequence[float], scale: float = 1e3, nd: int = 2) -> dict[str, float]:
    """Per-request latency figures the agents scenario reports: min / p50 / p99 / max."""
    v = [x * scale for x in values]
    return {"min": round(min(v), nd), "p50": round(statistics.median(v), nd), "p99": round(pct(v, 0.99), nd),
            "max": round(max(v), nd), "n": len(v)}


def round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def context_for(n_seq_max: int, tokens_per_seq: int, n_batch: int = 512) -> dict[str, int]:
    """Context settings giving every sequence room for ``tokens_per_seq`` (llama.cpp splits n_ctx per sequence)."""
    per_seq = round_up(max(tokens_per_seq, 256), 256)
    return {"n_ctx": n_seq_max * per_seq, "n_seq_max": n_seq_max, "n_batch": max(n_batch, n_seq_max)}


def random_tokens(rng: random.Random, n: int, n_vocab: int) -> list[int]:
    """A prompt sharing no block with any other: its first token already differs with near certainty."""
    return [rng.randrange(100, n_vocab) for _ in range(n)]


def text_tokens(system: System, model: str, n: int) -> list[int]:
    """``n`` tokens of real system-prompt text, BOS first."""
    toks = system.tokenize(model, SYSTEM_TEXT * (n // 40 + 2))
    return toks[:n]


def warm_up(system: System, model: str, n_vocab: int) -> None:
    """A throwaway request: the first prefill of a fresh process pays page faults and thread start-up."""
    rng = random.Random(12345)
    for _ in range(2):
        system.complete(model, random_tokens(rng, 64, n_vocab), max_tokens=8, cache=False)


def wait_published(system: System, timeout: float = 60.0) -> None:
    """Block until the cache writers have published every queued save (file tiers are written asynchronously)."""
    from actors.cache import messages as cm
    from actors.supervisor import runtime

    with contextlib.suppress(TimeoutError):
        runtime.ask(system.asys, system.tree.meta, cm.WaitIdle(uuid.uuid4().hex), timeout)


@contextlib.contextmanager
def tier_dirs() -> Iterator[tuple[Path, Path]]:
    """A disk directory (system temp) and a tmpfs one (for ``ram_file``, as in production), removed afterwards."""
    from actors.cache.config import default_shm_root

    os.makedirs(default_shm_root(), exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="llama-actors-bench-"))
    shm = Path(tempfile.mkdtemp(prefix="bench-", dir=default_shm_root()))
    try:
        yield tmp, shm
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(default_shm_root())  # only if nothing else uses it


@contextlib.contextmanager
def running_system(cache: Any) -> Iterator[System]:
    """An actor tree stopped in ``finally`` and checked for leftovers (only its own processes, by pid)."""
    system = System(cache=cache)
    pids = set(system.pids())
    try:
        yield system
    finally:
        pids |= set(system.pids())
        system.close()
        deadline = time.monotonic() + 10.0
        left = alive(pids)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = alive(pids)
        if left:
            raise RuntimeError(f"benchmark left actor processes behind: {left}")


def model_counters(system: System, model: str) -> dict[str, int]:
    """The engine's own counters (``prefill_tokens`` is what llama.cpp actually computed)."""
    return dict(system.status(model)["counters"])


# --------------------------------------------------------------------------- competing load

# A process outside this benchmark above this share of one core competes for the cores a figure is taken on.
COMPETING_CPU_PCT = 5.0


def _ours() -> set[int]:
    """This process, its parent (the bench driver) and every descendant (actor trees, llama-server, helpers)."""
    import psutil

    me = psutil.Process()
    pids = {me.pid, os.getppid()}
    with contextlib.suppress(psutil.Error):
        pids |= {p.pid for p in me.children(recursive=True)}
    return pids


KTHREADD = 2  # Linux's kernel-thread parent: its children are the kernel's own work, not a competing process


def competing(interval: float = 0.5, exclude: set[int] | None = None) -> dict[str, Any]:
    """Load average and the other processes above ``COMPETING_CPU_PCT`` over ``interval`` seconds.

    Why: a figure taken while something else ran on the cores measures the
    sharing, not the engine; the report carries this so such figures are
    marked rather than quoted.
    """
    import psutil

    skip = _ours() | (exclude or set())
    procs = []
    for p in psutil.process_iter(["pid", "ppid"]):
        if p.pid in skip or p.pid == KTHREADD or p.info["ppid"] == KTHREADD:
            continue  # ours, or a kernel thread (this VM's kdamond wakes at ~6% and retook whole chats)
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
            procs.append(p)
    time.sleep(interval)  # the measurement window itself, not a wait for a condition
    busy = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            pct_ = p.cpu_percent(None)
            if pct_ > COMPETING_CPU_PCT:
                busy.append({"pid": p.pid, "name": p.name(), "cpu_pct": round(pct_, 1)})
    busy.sort(key=lambda b: -b["cpu_pct"])
    return {"load_avg": [round(x, 2) for x in os.getloadavg()], "competing": busy[:8],
            "competing_cpu_pct": round(sum(b["cpu_pct"] for b in busy), 1)}


class CompetitionMonitor:
    """Samples ``competing()`` in a background thread while a figure is taken (``with`` block).

    ``summary()`` says whether anything else used the cores meanwhile: the
    highest load average seen, the competing processes (highest share each)
    and ``contended``.
    """

    def __init__(self, every_s: float = 1.0, exclude: set[int] | None = None) -> None:
        import threading

        self.every_s = every_s
        self.exclude = exclude or set()
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="competition-monitor", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(competing(min(0.5, self.every_s), self.exclude))
            self._stop.wait(self.every_s)

    def __enter__(self) -> CompetitionMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def summary(self) -> dict[str, Any]:
        by_pid: dict[int, dict[str, Any]] = {}
        for s in self.samples:
            for b in s["competing"]:
                if b["pid"] not in by_pid or b["cpu_pct"] > by_pid[b["pid"]]["cpu_pct"]:
                    by_pid[b["pid"]] = b
        loads = [s["load_avg"][0] for s in self.samples]
        return {"samples": len(self.samples), "max_load_avg_1m": max(loads) if loads else None,
                "competing": sorted(by_pid.values(), key=lambda b: -b["cpu_pct"])[:8],
                "contended": bool(by_pid)}


def rotated(names: list[str], k: int) -> list[str]:
    """``names`` started at position ``k`` (mod its length): the order of one round of alternated runs."""
    k %= len(names)
    return names[k:] + names[:k]
