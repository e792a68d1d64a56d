"""The node's core budget (actors.supervisor.cores): pure planning, checked on its properties."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.api import System
from actors.cache.config import CacheConfig
from actors.model.host_load import HostLoad, cores_clear, cores_left, sustained
from actors.model.threads import ThreadTuner
from actors.supervisor.cores import ThreadAsk, ask_of, budget, node_cores, plan, with_share
from actors.supervisor.runtime import alive
from tests.waiting import wait_until

asks_st = st.lists(st.tuples(st.one_of(st.none(), st.integers(1, 64)), st.one_of(st.none(), st.integers(1, 64))),
                   max_size=12).map(lambda xs: [ThreadAsk(f"m{i}", n, b) for i, (n, b) in enumerate(xs)])


@given(st.integers(1, 64), asks_st)
def test_shares_never_oversubscribe_while_every_model_fits(cores: int, asks: list[ThreadAsk]) -> None:
    p = plan(cores, asks)
    assert set(p.shares) == {a.model_id for a in asks}
    for a in asks:
        s = p.shares[a.model_id]
        assert 1 <= s.n_threads <= cores
        assert 1 <= s.n_threads_batch <= s.n_threads
        if a.n_threads is not None:
            assert s.n_threads <= a.n_threads  # an ask is a ceiling
        if a.n_threads_batch is not None:
            assert s.n_threads_batch <= a.n_threads_batch
    if len(asks) <= cores:
        assert p.used <= cores and not p.oversubscribed
    else:  # more models than cores: one thread each, and the plan says it is over
        assert all(s.n_threads == 1 for s in p.shares.values())
        assert p.oversubscribed


@given(st.integers(1, 64), asks_st)
def test_no_core_left_idle_while_a_model_could_use_it(cores: int, asks: list[ThreadAsk]) -> None:
    p = plan(cores, asks)
    if p.used < cores:
        for a in asks:  # every model got all it asked for (or all the cores)
            assert p.shares[a.model_id].n_threads == min(a.n_threads or cores, cores)


@given(st.integers(1, 64), asks_st)
def test_shares_are_max_min_fair(cores: int, asks: list[ThreadAsk]) -> None:
    p = plan(cores, asks)
    got = {a.model_id: p.shares[a.model_id].n_threads for a in asks}
    for a in asks:
        for b in asks:
            # b may hold 2+ more than a only when a is at its own ceiling
            if got[b.model_id] >= got[a.model_id] + 2:
                assert got[a.model_id] == min(a.n_threads or cores, cores)


@given(st.integers(1, 64), asks_st)
def test_plan_is_deterministic_and_unloading_never_shrinks_the_rest(cores: int, asks: list[ThreadAsk]) -> None:
    p = plan(cores, asks)
    assert plan(cores, asks) == p
    if asks:
        rest = plan(cores, asks[1:])
        for a in asks[1:]:
            assert rest.shares[a.model_id].n_threads >= p.shares[a.model_id].n_threads


def test_two_models_on_two_cores_get_one_thread_each() -> None:
    p = plan(2, [ThreadAsk("a"), ThreadAsk("b")])
    assert [s.n_threads for s in p.shares.values()] == [1, 1]
    assert plan(2, [ThreadAsk("a")]).shares["a"].n_threads == 2
    assert plan(8, [ThreadAsk("a", 2), ThreadAsk("b")]).shares["b"].n_threads == 6


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        plan(0, [])
    with pytest.raises(ValueError):
        plan(4, [ThreadAsk("a"), ThreadAsk("a")])
    with pytest.raises(ValueError):
        budget(0)
    assert budget(None) == node_cores()
    assert budget(10_000) == node_cores()


def test_context_options_carry_the_ask_and_receive_the_share() -> None:
    assert ask_of("m", {"n_ctx": 512, "n_threads": 3}) == ThreadAsk("m", 3, None)
    assert ask_of("m", {"n_threads": True}) == ThreadAsk("m", None, None)  # left to the options parser
    share = plan(4, [ask_of("m", {"n_threads_batch": 2})]).shares["m"]
    assert with_share({"n_ctx": 512}, share) == {"n_ctx": 512, "n_threads": 4, "n_threads_batch": 2}


def wait_threads(system: System, model: str, n: int, timeout: float = 30.0) -> dict[str, int]:
    """The model's applied thread counts once they equal ``n`` (a share change is applied between steps)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        st = system.status(model)["threads"]
        got = {k: st[k] for k in ("n_threads", "n_threads_batch")}
        if got == {"n_threads": n, "n_threads_batch": n} or time.monotonic() > deadline:
            assert 1 <= st["in_use"] <= n
            return got
        time.sleep(0.02)


def test_two_real_models_share_the_node_cores_and_both_decode(tmp_path: Path) -> None:
    """A node of 2 cores: each model runs 1 thread (status and model_info say so); unloading one gives the
    other both, on its live context; every model still decodes."""
    if node_cores() < 2:
        pytest.skip("needs 2 cores")
    system = System(cache=CacheConfig.create(tmp_path / "run", ram=64 << 20, fsync=False), cores=2)
    pids = set(system.pids())
    try:
        system.load_model("a", context={"n_ctx": 512})
        assert wait_threads(system, "a", 2) == {"n_threads": 2, "n_threads_batch": 2}  # alone: the whole budget
        system.load_model("b", context={"n_ctx": 512})
        shares = {m["model_id"]: m["threads"] for m in system.list_models()}
        assert shares["a"]["n_threads"] + shares["b"]["n_threads"] <= 2
        assert shares["a"]["node_cores"] == 2
        for m in ("a", "b"):  # what each llama.cpp context really runs with (a shrank without a restart)
            assert wait_threads(system, m, 1) == {"n_threads": 1, "n_threads_batch": 1}
            assert system.model_info(m)["threads"]["n_threads"] == 1
        replies = {m: system.complete(m, "Once upon a time", max_tokens=8, cache=False) for m in ("a", "b")}
        assert all(len(r.generated) > 0 for r in replies.values())
        assert replies["a"].generated == replies["b"].generated  # same model, greedy: thread count changes nothing
        pid_a = system.status("a")["pid"]
        system.unload_model("b", save=False)
        assert wait_threads(system, "a", 2) == {"n_threads": 2, "n_threads_batch": 2}
        assert system.status("a")["pid"] == pid_a  # grown in place
        assert len(system.complete("a", "Once upon a time", max_tokens=8, cache=False).generated) > 0
    finally:
        pids |= set(system.pids())
        system.close()
        assert not alive(pids)


# --------------------------------------------------------------------------- the thread tuner (model/threads.py)


def simulate(tuner: ThreadTuner, step_s: Callable[[int, float], float], seconds: float,
             rows: int = 1) -> tuple[int, list[int]]:
    """Feed the tuner a host whose decode step takes ``step_s(threads, now)``; tokens decoded and counts used."""
    now, tokens, used = 0.0, 0, []
    while now < seconds:
        dt = step_s(tuner.current, now)
        now += dt
        tokens += 1
        used.append(tuner.current)
        tuner.observe(now, dt, rows)
    return tokens, used


def quiet(n: int, _now: float) -> float:
    return 0.0058 if n >= 2 else 0.011  # 2 threads ~171 tok/s, 1 thread ~90 (the bundled model, 2 cores)


def one_core_taken(n: int, _now: float) -> float:
    return 0.011 if n == 1 else 0.9  # 2 spinning threads beside a busy core: ~1 tok/s


def test_tuner_keeps_the_share_on_a_quiet_host() -> None:
    tokens, used = simulate(ThreadTuner(2), quiet, 60.0)
    assert used[-1] == 2
    best = 60.0 / quiet(2, 0)
    assert tokens >= 0.995 * best  # one probe of the slower count, once
    assert used.count(1) <= ThreadTuner(2).window


def test_a_probe_moves_decode_threads_only() -> None:
    t = ThreadTuner(2)
    probed = []
    now = 0.0
    while now < 5.0 and not probed:
        now += quiet(t.current, now)
        if t.observe(now, quiet(t.current, now), 1) == 1:
            probed.append(now)
    assert probed and t.current == 1 and t.settled == 2  # prefill keeps the share during the probe


def test_one_collapsed_step_drops_a_thread_at_once() -> None:
    t = ThreadTuner(2)
    simulate(t, quiet, 5.0)
    assert t.current == 2
    assert t.observe(5.9, 0.9, 1) == 1


def test_tuner_drops_a_thread_when_a_core_is_taken_and_comes_back_when_it_is_free() -> None:
    t = ThreadTuner(2)
    simulate(t, quiet, 5.0)
    tokens, used = simulate(t, lambda n, now: one_core_taken(n, now - 5.0), 60.0)
    assert used[-1] == 1
    assert tokens >= 0.5 * 55.0 / 0.011  # well over half the 1-thread rate, never the collapse
    tokens, used = simulate(t, quiet, 120.0)
    assert used[-1] == 2  # the probe found the core free again


def test_tuner_finds_the_better_count_when_the_host_is_busy_from_the_start() -> None:
    tokens, used = simulate(ThreadTuner(2), one_core_taken, 60.0)
    assert used[-1] == 1 and tokens >= 0.5 * 60.0 / 0.011


@given(st.integers(1, 16), st.lists(st.tuples(st.floats(1e-4, 2.0), st.integers(1, 4)), max_size=300))
def test_tuner_stays_within_its_share(share: int, steps: list[tuple[float, int]]) -> None:
    t = ThreadTuner(share)
    now = 0.0
    for dt, rows in steps:
        now += dt
        got = t.observe(now, dt, rows)
        assert 1 <= t.current <= share
        assert got is None or got == t.current
    assert t.reshare(max(1, share // 2), now) == max(1, share // 2)


def test_where_the_host_is_accounted_for_a_quiet_run_never_probes_below_its_share() -> None:
    # host_load sees who holds the cores, so a window at one thread would only cost a reply half its speed
    for rows in (1, 2, 3, 4):  # each row count was probed once before
        _tokens, used = simulate(ThreadTuner(2, probe_down=False), quiet, 20.0, rows=rows)
        assert set(used) == {2}
    # a core taken mid-run is still found by the step times
    t = ThreadTuner(2, probe_down=False)
    simulate(t, quiet, 5.0)
    _tokens, used = simulate(t, lambda n, now: one_core_taken(n, now - 5.0), 30.0)
    assert used[-1] == 1


def test_tuner_leaves_a_short_quiet_run_alone() -> None:
    _tokens, used = simulate(ThreadTuner(2), quiet, 1.5)  # shorter than one probe interval
    assert set(used) == {2}


# --------------------------------------------------------------------------- the host's own accounting


@given(st.integers(1, 64), st.floats(0, 80), st.floats(0, 80))
def test_cores_left_never_zero_never_more_than_the_cpus_and_fewer_as_others_take_more(
        cpus: int, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert 1 <= cores_left(cpus, hi) <= cores_left(cpus, lo) <= cpus
    assert cores_left(cpus, 0.0) == cpus
    assert cores_left(cpus, 0.45) == cpus  # a background trickle costs no thread
    assert cores_left(cpus, 0.7) == cpus  # our own streaming client or HTTP server costs no thread either
    assert cores_left(cpus, 0.95) == max(1, cpus - 1)  # a process that held a core while the model waited
    assert cores_left(cpus, float(cpus)) == 1


@given(st.one_of(st.none(), st.floats(0, 8)), st.floats(0, 8), st.floats(0.01, 5),
       st.one_of(st.none(), st.integers(0, 8)))
def test_a_burst_costs_no_thread_a_sustained_load_does(previous: float | None, current: float, window: float,
                                                       running: int | None) -> None:
    level = sustained(previous, current, window, running_now=running)
    assert 0.0 <= level <= current
    if window >= 1.0:
        # a long window (an idle spell) is its own evidence, as far as something still runs now
        assert level == (current if running is None else min(current, running))
    elif previous is None:
        assert level == 0.0  # one short sample alone is not enough
    else:
        assert level == min(previous, current)


def test_a_load_that_ended_during_the_idle_spell_costs_no_thread() -> None:
    # The other engine of a benchmark, or another model of the node, kept both cores busy for the
    # 30 s this model waited, and is done now: the model's next prompt gets both threads.
    assert cores_left(2, sustained(0.1, 1.9, 30.0, running_now=0)) == 2
    # A process that took a core meanwhile and still runs is seen before the first step.
    assert cores_left(2, sustained(0.1, 1.0, 30.0, running_now=1)) == 1


def test_the_host_cap_drops_a_thread_before_any_step_collapses_and_the_probe_comes_back() -> None:
    t = ThreadTuner(2)
    simulate(t, quiet, 5.0)
    assert t.limit(cores_left(2, 1.0), 5.0) == 1 and t.current == t.settled == 1
    _tokens, used = simulate(t, lambda n, now: one_core_taken(n, now - 5.0), 30.0)
    assert set(used) == {1}  # capped: no probe of 2 while the host leaves one core
    # squeezed by our own spinning threads the busy process shows two thirds of a core: not free
    assert t.limit(cores_left(2, 0.67), 29.0, cores_clear(2, 0.67)) is None and t.current == 1
    assert t.limit(cores_left(2, 1.0), 29.5, cores_clear(2, 1.0)) is None
    # cores plainly free again: the count the cap took comes back at once
    assert t.limit(cores_left(2, 0.05), 30.0, cores_clear(2, 0.05)) == 2
    assert t.settled == 2  # prefill too, not only a decode probe
    _tokens, used = simulate(t, quiet, 35.0)
    assert set(used) == {2}


def test_a_count_the_tuner_measured_down_is_not_restored_by_the_host_cap() -> None:
    t = ThreadTuner(2)
    simulate(t, quiet, 5.0)
    simulate(t, lambda n, now: one_core_taken(n, now - 5.0), 30.0)
    assert t.current == 1  # measured down by step times, no cap involved
    assert t.limit(cores_left(2, 0.0), 30.0) is None  # a quiet host sample alone does not undo a measurement


def busy_loops(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_a_model_beside_busy_cores_runs_on_the_cores_left(tmp_path: Path) -> None:
    """Every core but one held by another process at 100%: the model decodes on one thread, chosen from the
    host's accounting before its first step (status says so), and its reply is the quiet one."""
    cpus = node_cores()
    if cpus < 2:
        pytest.skip("needs 2 cores")
    system = System(cache=None, cores=cpus)
    pids = set(system.pids())
    loops: list[subprocess.Popen[bytes]] = []
    try:
        system.load_model("m", context={"n_ctx": 512})
        quiet_reply = system.complete("m", "Once upon a time", max_tokens=8, cache=False)  # first host sample
        loops = busy_loops(cpus - 1)
        procs = [psutil.Process(p.pid) for p in loops]
        assert wait_until(lambda: all(sum(p.cpu_times()[:2]) >= 1.0 for p in procs), 30)  # they hold their cores
        busy_reply = system.complete("m", "Once upon a time", max_tokens=8, cache=False)
        assert system.status("m")["threads"]["in_use"] == 1
        assert busy_reply.generated == quiet_reply.generated
    finally:
        for p in loops:
            p.kill()
            p.wait(10)
        pids |= set(system.pids())
        system.close()
        assert not alive(pids)


def test_after_an_idle_spell_a_task_runnable_for_a_moment_is_not_a_busy_core(monkeypatch: pytest.MonkeyPatch) -> None:
    # The HTTP server or a client handing the request over is runnable at one read of procs_running, not at
    # every read; a process that holds a core is.  Only the first case leaves the model both threads.
    handover = iter([1, 0, 1, 1])
    monkeypatch.setattr(HostLoad, "_running_once", staticmethod(lambda: next(handover)))
    assert HostLoad._running_others() == 0
    monkeypatch.setattr(HostLoad, "_running_once", staticmethod(lambda: 1))
    assert HostLoad._running_others() == 1
    monkeypatch.setattr(HostLoad, "_running_once", staticmethod(lambda: None))
    assert HostLoad._running_others() is None
    assert HostLoad.available()  # Linux: the accounting that lets the tuner skip its probe below the share


def test_host_load_forgets_a_process_that_ended_while_the_model_waited() -> None:
    seen: list[float | None] = []
    for _ in range(3):  # a moment when nothing else of the host is runnable is enough (CI runs one test at a time)
        h = HostLoad(min_interval_s=0.25)
        assert h.others_busy() is None  # the baseline, then the model waits
        [loop] = busy_loops(1)
        try:
            proc = psutil.Process(loop.pid)
            assert wait_until(lambda p=proc: sum(p.cpu_times()[:2]) >= 2.0, 30)  # it held a core for 2 s
        finally:
            loop.kill()
            loop.wait(10)
        seen.append(h.others_busy())  # the first sample after the spell: the spell was busy, nothing runs now
        if seen[-1] is not None and cores_left(2, seen[-1]) == 2:
            return
    raise AssertionError(f"a finished process still cost a thread: {seen}")


def test_host_load_sees_a_busy_process(tmp_path: Path) -> None:
    h = HostLoad(min_interval_s=0.25)
    assert h.others_busy() is None  # the first call only takes the baseline
    [loop] = busy_loops(1)
    try:
        proc = psutil.Process(loop.pid)
        seen: list[float] = []

        def saw_it() -> bool:
            if sum(proc.cpu_times()[:2]) < 0.5:
                return False
            v = h.others_busy()
            seen.append(v if v is not None else 0.0)
            return v is not None and v >= 0.6
        assert wait_until(saw_it, 30), seen
    finally:
        loop.kill()
        loop.wait(10)
