"""The client's side of supervision: requests routed through a supervisor that dies get ``model_crashed``.

A model request goes to the model supervisor, which records its caller and
forwards it; the model answers the caller directly.  When the model
supervisor itself dies (its models are then stopped by the root and
restarted by a new supervisor), nobody is left who knows the callers, so
the client keeps that knowledge for its own requests: it watches the pid
of each supervisor it sent requests to (on this host: ``TreeInfo.pids``)
and, when that process is gone, ends every open request it routed there
with ``ErrorReply(req_id, "model_crashed")``.  The inbox thread polls it,
so a caller learns within a poll (``CHECK_INTERVAL_S``) of the death, not
at its own timeout.

:func:`orphaned` is the pure decision; :class:`RouteGuard` keeps the
table (thread-safe: the inbox thread checks while callers send).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from actors.supervisor.watch import ProcId, probe

CHECK_INTERVAL_S = 0.1  # a watched supervisor's pid is looked at most this often
CRASH_DETAIL = "the model supervisor process died; its models are being restarted"


@dataclass
class _Target:
    addr: Any
    proc: ProcId
    dead: bool = False
    checked: float = 0.0


def orphaned(routes: Mapping[str, int], dead: Iterable[int]) -> list[str]:
    """Request ids routed to a target that is dead (targets by index)."""
    gone = set(dead)
    return [rid for rid, target in routes.items() if target in gone]


class RouteGuard:
    """Which supervisor process each open request went through, and whether it still lives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: list[_Target] = []  # thespian addresses are not hashable: a short list
        self._routes: dict[str, int] = {}

    def watch(self, addr: Any, pid: int | None) -> None:
        """Watch the process ``pid`` behind ``addr`` (no pid: a remote supervisor, not watched)."""
        if not pid:
            return
        started = probe([pid]).get(pid)
        with self._lock:
            if self._index(addr) is None:
                self._targets.append(_Target(addr, ProcId(pid, started if started is not None else -1.0),
                                             dead=started is None, checked=time.monotonic()))

    def _index(self, addr: Any) -> int | None:
        for i, t in enumerate(self._targets):
            if t.addr == addr:
                return i
        return None

    def _refresh(self, t: _Target, now: float, force: bool = False) -> None:
        if t.dead or (not force and now - t.checked < CHECK_INTERVAL_S):
            return
        t.checked = now
        started = probe([t.proc.pid]).get(t.proc.pid, t.proc.started)
        t.dead = started is None or started != t.proc.started

    def alive(self, addr: Any) -> bool:
        """False once the watched process behind ``addr`` is gone (an unwatched address counts as alive)."""
        with self._lock:
            i = self._index(addr)
            if i is None:
                return True
            t = self._targets[i]
            self._refresh(t, time.monotonic())
            return not t.dead

    def sent(self, addr: Any, req_id: str) -> None:
        with self._lock:
            i = self._index(addr)
            if i is not None and req_id:
                self._routes[req_id] = i

    def finished(self, req_id: str) -> None:
        with self._lock:
            self._routes.pop(req_id, None)

    def check(self) -> list[str]:
        """Open requests whose supervisor died since the last check (each reported once)."""
        now = time.monotonic()
        with self._lock:
            for t in self._targets:
                self._refresh(t, now)
            dead = [i for i, t in enumerate(self._targets) if t.dead]
            out = orphaned(self._routes, dead)
            for rid in out:
                del self._routes[rid]
            return out


__all__ = ["CHECK_INTERVAL_S", "CRASH_DETAIL", "RouteGuard", "orphaned"]
