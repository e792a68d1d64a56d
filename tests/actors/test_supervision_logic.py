"""Restart intensity and restart planning (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.supervisor.spec import Restart, RestartIntensity, Strategy, plan_restart

ORDER = ["a", "b", "c"]
PERM = {c: Restart.PERMANENT for c in ORDER}


def test_intensity_window() -> None:
    it = RestartIntensity(max_restarts=2, max_seconds=10)
    assert it.allow(0.0) and it.allow(1.0)
    assert not it.allow(2.0)  # third restart within 10 s
    it2 = RestartIntensity(max_restarts=2, max_seconds=10)
    assert it2.allow(0.0) and it2.allow(1.0) and it2.allow(11.5)  # the first one left the window


def test_zero_restarts_always_escalates() -> None:
    assert not RestartIntensity(0, 1).allow(0.0)


@pytest.mark.parametrize(("mr", "ms"), [(-1, 1), (1, 0), (True, 1)])
def test_intensity_validation(mr: int, ms: float) -> None:
    with pytest.raises(ValueError):
        RestartIntensity(mr, ms)


@given(st.lists(st.floats(0, 100), min_size=1, max_size=50), st.integers(0, 5), st.floats(0.1, 20))
def test_intensity_matches_brute_force(deltas: list[float], max_r: int, max_s: float) -> None:
    it = RestartIntensity(max_r, max_s)
    times: list[float] = []
    now = 0.0
    for d in deltas:
        now += d
        times.append(now)
        expect = len([t for t in times if now - t <= max_s]) <= max_r
        got = it.allow(now)
        assert got == expect
        if not got:
            break


def test_strategies() -> None:
    it = RestartIntensity(10, 10)
    p = plan_restart(Strategy.ONE_FOR_ONE, ORDER, PERM, "b", False, it, 0)
    assert p.restart == ("b",) and p.stop == () and not p.escalate
    p = plan_restart(Strategy.ONE_FOR_ALL, ORDER, PERM, "b", False, it, 0)
    assert p.restart == ("a", "b", "c") and p.stop == ("a", "c")
    p = plan_restart(Strategy.REST_FOR_ONE, ORDER, PERM, "b", False, it, 0)
    assert p.restart == ("b", "c") and p.stop == ("c",)


def test_restart_types() -> None:
    it = RestartIntensity(10, 10)
    kinds = {"a": Restart.TEMPORARY, "b": Restart.TRANSIENT, "c": Restart.PERMANENT}
    assert plan_restart(Strategy.ONE_FOR_ONE, ORDER, kinds, "a", False, it, 0).forget
    assert plan_restart(Strategy.ONE_FOR_ONE, ORDER, kinds, "b", True, it, 0).forget
    assert plan_restart(Strategy.ONE_FOR_ONE, ORDER, kinds, "b", False, it, 0).restart == ("b",)
    assert plan_restart(Strategy.ONE_FOR_ONE, ORDER, kinds, "c", True, it, 0).restart == ("c",)
    # one_for_all stops a temporary sibling but does not bring it back
    p = plan_restart(Strategy.ONE_FOR_ALL, ORDER, kinds, "c", False, it, 0)
    assert p.stop == ("a", "b") and p.restart == ("b", "c")


def test_escalation_stops_everyone() -> None:
    it = RestartIntensity(1, 60)
    assert not plan_restart(Strategy.ONE_FOR_ONE, ORDER, PERM, "a", False, it, 0).escalate
    p = plan_restart(Strategy.ONE_FOR_ONE, ORDER, PERM, "a", False, it, 1)
    assert p.escalate and p.stop == ("b", "c") and p.restart == ()
