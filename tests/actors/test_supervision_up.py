"""Supervision all the way up (issue 14, item 1): every process of the tree may die, alone or with others.

What a user checks after a SIGKILL anywhere in the tree: the caller in flight gets an error soon
(never a hang), the models are listed and serving again, rows saved before are still exact hits,
and the system stops cleanly afterwards with nothing left behind.  Stub models throughout (the
real-model round is in ``test_supervision_up_real.py``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.api import ModelError, System
from actors.cache import messages as cm
from actors.supervisor import messages as sm
from actors.supervisor import runtime
from actors.supervisor.client_watch import orphaned
from actors.supervisor.root_watch import Verdict, decide
from actors.supervisor.watch import ProcId, gone, new_child
from tests.actors.conftest import running_system
from tests.waiting import wait_until

MODELS = ("a", "b", "c")
STUB = {"n_seq_max": 2, "n_batch": 64, "step_delay_s": 0.01}
NEVER_A_HANG_S = 2.0  # a caller in flight learns of a death within this (the bound)

# ------------------------------------------------------------------ pure parts

procs = st.builds(ProcId, st.integers(1, 50), st.sampled_from([1.0, 2.0, 3.0]))


@given(st.dictionaries(st.text(max_size=3), procs, max_size=6),
       st.dictionaries(st.integers(1, 50), st.none() | st.sampled_from([1.0, 2.0, 3.0])))
def test_gone_is_exactly_the_vanished_or_reused_pids(watched: dict[str, ProcId], probe: dict[int, Any]) -> None:
    dead = set(gone(watched, probe))
    for key, proc in watched.items():
        vanished = proc.pid in probe and probe[proc.pid] != proc.started  # None (exited) or another process
        assert (key in dead) == vanished


@given(st.sets(procs, max_size=5), st.sets(procs, max_size=3))
def test_new_child_only_when_exactly_one_appeared(before: set[ProcId], extra: set[ProcId]) -> None:
    after = before | extra
    fresh = extra - before
    assert new_child(before, after) == (next(iter(fresh)) if len(fresh) == 1 else None)


@given(st.dictionaries(st.text(max_size=4), st.integers(0, 3)), st.sets(st.integers(0, 3)))
def test_orphaned_requests_are_those_routed_to_a_dead_supervisor(routes: dict[str, int], dead: set[int]) -> None:
    assert set(orphaned(routes, dead)) == {rid for rid, t in routes.items() if t in dead}


@given(st.booleans(), st.booleans(), st.booleans())
def test_the_daemon_restarts_only_a_root_that_died_unasked(alive: bool, stopped: bool, allowed: bool) -> None:
    verdict = decide(alive, stopped, allowed)
    if alive:
        assert verdict is Verdict.ALIVE
    elif stopped:  # a shutdown is not a death
        assert verdict is Verdict.STOPPED
    else:
        assert verdict is (Verdict.RESTART if allowed else Verdict.GIVE_UP)


# ------------------------------------------------------------------ helpers


def children(s: System, sup: Any) -> sm.Children:
    reply = runtime.ask(s.asys, sup, sm.WhichChildren(), 10)
    assert isinstance(reply, sm.Children)
    return reply


def tree_pids(s: System) -> dict[str, int]:
    """Pid of each supervised process: root, cache, models, meta, writer0/1 and each model."""
    info = runtime.ask(s.asys, runtime.find_root(s.asys), sm.TreeInfoReq(), 10)
    pids = dict(info.pids)
    meta = children(s, info.cache).pids["meta"]
    pids["meta"] = meta
    for i, w in enumerate(sorted(p.pid for p in psutil.Process(meta).children())):
        pids[f"writer{i}"] = w
    for m in s.list_models():
        pids[f"model:{m['model_id']}"] = m["pid"]
    return pids


def serving(s: System, models: tuple[str, ...], killed: set[int]) -> bool:
    """Every model listed, ready, in a process that was not killed, and answering."""
    try:
        listed = {m["model_id"]: m for m in s.list_models()}
        if not all(m in listed and listed[m]["state"] == "ready" and listed[m]["pid"] not in killed
                   for m in models):
            return False
        return all(s.complete(m, "still there?", max_tokens=2, timeout=10).finish_reason == "length"
                   for m in models)
    except (ModelError, TimeoutError):  # a tree being replaced answers errors for a moment
        return False


def writers_back(s: System, killed: set[int], n: int = 2) -> bool:
    try:
        pids = tree_pids(s)
    except (TimeoutError, KeyError, psutil.Error):
        return False
    writers = {v for k, v in pids.items() if k.startswith("writer")}
    return len(writers) == n and not writers & killed


class Caller:
    """A stream in flight on its own thread: how it ended, and when."""

    def __init__(self, s: System, model: str) -> None:
        self.outcome: str | None = None
        self.ended_at: float | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(s, model), daemon=True)
        self.thread.start()
        assert self.started.wait(30), "the stream never produced a token"

    def _run(self, s: System, model: str) -> None:
        try:
            for _chunk in s.infer(model, "a long answer please", max_tokens=300, timeout=60):
                self.started.set()
            self.outcome = "done"
        except ModelError as e:
            self.outcome = e.reason
        except TimeoutError:
            self.outcome = "hang"
        finally:
            self.ended_at = time.monotonic()
            self.started.set()


def kill_all(pids: list[int]) -> float:
    assert all(isinstance(p, int) and p > 1 for p in pids), pids  # pid 0 would be our own process group
    t = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return t


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    """A tree with three stub models; every pid it ever had is checked gone after close."""
    with running_system(tmp_path) as s:
        for m in MODELS:
            s.load_model(m, backend="stub", stub=STUB)
        yield s


def save_rows(s: System, n: int, tag: str) -> list[str]:
    prompts = [f"row {tag} {i} to be kept across crashes " * 3 for i in range(n)]
    for p in prompts:
        s.prefill_only("a", p)
    meta = runtime.ask(s.asys, runtime.find_root(s.asys), sm.TreeInfoReq(), 10).meta
    assert isinstance(runtime.ask(s.asys, meta, cm.WaitIdle(), 30), cm.Idle)  # published
    return prompts


def exact_hits(s: System, prompts: list[str]) -> int:
    return sum(s.complete("a", p, max_tokens=1).cache_hit_kind == "exact" for p in prompts)


# ------------------------------------------------------------------ simultaneous deaths


@pytest.mark.timeout(150)
def test_three_models_and_both_writers_killed_at_once_are_each_restarted(system: System) -> None:
    s = system
    ever: set[int] = set()
    for rnd in range(3):  # a model may restart 3 times in 30 s (models.MAX_RESTARTS); a 4th gives up
        pids = tree_pids(s)
        ever |= set(pids.values())
        victims = [pids[f"model:{m}"] for m in MODELS] + [pids["writer0"], pids["writer1"]]
        callers = [Caller(s, m) for m in MODELS]
        t_kill = kill_all(victims)
        for c in callers:
            c.thread.join(NEVER_A_HANG_S + 5)
            assert c.outcome == "model_crashed", f"round {rnd}: {c.outcome}"
            assert c.ended_at is not None and c.ended_at - t_kill < NEVER_A_HANG_S, f"round {rnd}: slow error"
        dead = set(victims)
        assert wait_until(lambda: serving(s, MODELS, dead), timeout=15), f"round {rnd}: {s.list_models()}"  # noqa: B023
        assert wait_until(lambda: writers_back(s, dead), timeout=10), f"round {rnd}: writers not refilled"  # noqa: B023
        listed = {m["model_id"]: m["restarts"] for m in s.list_models()}
        assert listed == {m: rnd + 1 for m in MODELS}  # each death restarted exactly once
        save_rows(s, 1, f"r{rnd}")  # new rows are published (WaitIdle answers) by the refilled pool
    ever |= set(tree_pids(s).values())
    s.close()
    assert not runtime.alive(ever)


# ------------------------------------------------------------------ each process of the tree, in turn

KILL_ORDER = ("models", "cache", "meta", "writer0", "writer1", "root")


@pytest.mark.timeout(200)
def test_each_process_of_the_tree_killed_in_turn_during_a_stream(system: System) -> None:
    s = system
    saved = save_rows(s, 2, "before")
    ever: set[int] = set()
    for victim in KILL_ORDER:
        pids = tree_pids(s)
        ever |= set(pids.values())
        caller = Caller(s, "b")
        t_kill = kill_all([pids[victim]])
        caller.thread.join(60)
        assert caller.outcome is not None and caller.outcome != "hang", victim
        if caller.outcome != "done":  # the cache side may die without touching the stream
            assert caller.outcome == "model_crashed", (victim, caller.outcome)
            assert caller.ended_at is not None and caller.ended_at - t_kill < NEVER_A_HANG_S, victim
        dead = {pids[victim]}
        assert wait_until(lambda: serving(s, MODELS, dead), timeout=15), (victim, s.list_models())  # noqa: B023
        assert wait_until(lambda: writers_back(s, set()), timeout=10), victim
        assert wait_until(lambda: exact_hits(s, saved) == len(saved), timeout=10), victim
    ever |= set(tree_pids(s).values())
    t0 = time.monotonic()
    s.close()
    assert time.monotonic() - t0 < 20  # not the 30-60 s of a stop that waits on the dead
    assert not runtime.alive(ever)


@pytest.mark.timeout(120)
def test_a_restarted_model_supervisor_brings_back_configuration_and_adapters(tmp_path: Path) -> None:
    with running_system(tmp_path) as s:
        s.load_model("x", backend="stub", stub={**STUB, "n_seq_max": 3}, max_pending=7)
        before = {m["model_id"]: m for m in s.list_models()}
        old = tree_pids(s)
        kill_all([old["models"]])
        assert wait_until(lambda: serving(s, ("x",), {old["model:x"]}), timeout=15)
        after = {m["model_id"]: m for m in s.list_models()}
        assert set(after) == set(before)
        assert after["x"]["restarts"] == before["x"]["restarts"] + 1
        assert after["x"]["info"] == before["x"]["info"]  # the same configuration (n_seq_max 3...)
        assert not runtime.alive([old["model:x"]])  # the dead supervisor's model process was stopped
        fresh = System.attach(s.port)  # a new attach finds the tree
        try:
            assert fresh.complete("x", "hello", max_tokens=2).finish_reason == "length"
        finally:
            fresh.close()



@pytest.mark.timeout(120)
def test_a_root_past_its_intensity_exits_and_the_daemon_restarts_the_tree(tmp_path: Path) -> None:
    with running_system(tmp_path) as s:
        s.load_model("a", backend="stub", stub=STUB)
        first_root = tree_pids(s)["root"]
        ever: set[int] = set()
        for _ in range(6):  # the root allows 5 restarts in 60 s; the 6th cache death makes it give up
            pids = tree_pids(s)
            ever |= set(pids.values())
            kill_all([pids["cache"]])
            assert wait_until(lambda: serving(s, ("a",), set()) and tree_pids(s)["cache"] != pids["cache"],  # noqa: B023
                              timeout=20)
        assert tree_pids(s)["root"] != first_root  # a new tree, from the daemon: not a root left 'failed'
        assert [m["model_id"] for m in s.list_models()] == ["a"]
        ever |= set(tree_pids(s).values())
    assert not runtime.alive(ever)
