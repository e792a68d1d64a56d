"""Who supervises the root: the daemon that started it (``serve.py``) watches its pid and restarts the tree.

The root supervisor is a child of thespian's admin, and the admin
restarts nothing.  The daemon process that created the system (``python -m
actors.supervisor.serve``, which every ``System()`` and ``llama-actors
serve`` runs) already polls the admin; it also polls the root:

* while the root lives, it keeps a snapshot of the root's descendant
  processes (pid + start time), because they outlive a root that dies
  abruptly (thespian does not stop them, they are reparented to init);
* when the root is gone, it kills those orphans (the old cache and model
  supervisors, the meta, the writers, the models: a new tree replaces
  them, and a model whose supervisor is gone cannot be stopped or
  restarted by anyone), then creates a new root (the same global name, so
  every ``find_root`` finds it) and sends it the original ``TreeStart``
  with ``restore=True``: the new root brings back the models its
  predecessor persisted, with the same configuration and adapters;
* a root that thespian stopped (a shutdown: the root leaves a ``stopped``
  mark in the run directory on ``ActorExitRequest``) is not restarted;
* restarts are bounded like any supervisor's (``RestartIntensity``, 3 in
  60 s): past that, :meth:`RootWatch.tick` answers ``GIVE_UP`` and the
  daemon stops the system and exits with status :data:`EXIT_ROOT_FAILED`,
  so that a process manager (systemd ``Restart=on-failure``) starts it
  again.

Clients notice through their own watch of the model supervisor
(``client_watch``): their requests in flight end in ``model_crashed`` and
their handles refresh from the new root.

:func:`decide` is the pure decision; the class only reads ``/proc`` and
sends two messages.
"""

from __future__ import annotations

import enum
import os
import sys
import time
import uuid
from dataclasses import replace
from typing import Any

from actors.supervisor import messages as sm
from actors.supervisor.spec import RestartIntensity
from actors.supervisor.watch import ProcId, children_of, kill_all, probe

EXIT_ROOT_FAILED = 3  # the daemon's exit status when it gave up restarting the root
ROOT_MAX_RESTARTS = 3
ROOT_MAX_SECONDS = 60.0


class Verdict(str, enum.Enum):
    ALIVE = "alive"
    STOPPED = "stopped"  # the root exited because thespian stopped it: the system is going down
    RESTART = "restart"
    GIVE_UP = "give_up"


def decide(root_alive: bool, stopped_on_purpose: bool, within_intensity: bool) -> Verdict:
    """What the daemon does on one look at the root."""
    if root_alive:
        return Verdict.ALIVE
    if stopped_on_purpose:
        return Verdict.STOPPED
    return Verdict.RESTART if within_intensity else Verdict.GIVE_UP


def _descendants(pid: int) -> set[ProcId]:
    return children_of(pid, recursive=True)


def kill_orphans(known: set[ProcId]) -> list[int]:
    """Kill the dead root's former descendants, and anything they started since (``watch.kill_all``)."""
    return kill_all(known)


class RootWatch:
    """The daemon's watch on the root supervisor (see the module docstring)."""

    def __init__(self, asys: Any, start: sm.TreeStart, info: sm.TreeInfo) -> None:
        self.asys = asys
        self.start = start
        self.intensity = RestartIntensity(ROOT_MAX_RESTARTS, ROOT_MAX_SECONDS)
        self.restarts = 0
        self.root = self._proc(info.pids.get("root"))
        self.known: set[ProcId] = _descendants(self.root.pid) if self.root is not None else set()

    @staticmethod
    def _proc(pid: int | None) -> ProcId | None:
        started = probe([pid]).get(pid) if pid else None
        return ProcId(pid, started) if pid and started is not None else None

    def _root_alive(self) -> bool:
        return self.root is not None and probe([self.root.pid]).get(self.root.pid) == self.root.started

    def tick(self) -> Verdict:
        """Look at the root once; restart the tree if it died (called by the daemon's wait loop).

        Never raises: the daemon's loop must go on (an unexpected error is logged and counts as alive)."""
        try:
            return self._tick()
        except Exception as e:
            print(f"llama-actors: root watch error: {e!r}", file=sys.stderr, flush=True)
            return Verdict.ALIVE

    def _tick(self) -> Verdict:
        from actors.supervisor.tree import tree_file

        alive = self._root_alive()
        stopped = os.path.exists(tree_file(self.start, "stopped") or "")
        verdict = decide(alive, stopped, alive or stopped or self.intensity.allow(time.monotonic()))
        if verdict is Verdict.ALIVE:
            assert self.root is not None
            self.known = _descendants(self.root.pid)
            return verdict
        if verdict is Verdict.STOPPED:
            return verdict
        killed = kill_orphans(self.known)
        self.known = set()
        if verdict is Verdict.GIVE_UP:
            print(f"llama-actors: the root supervisor died {self.restarts + 1} times within {ROOT_MAX_SECONDS:.0f}s; "
                  f"giving up (exit status {EXIT_ROOT_FAILED})", file=sys.stderr, flush=True)
            return verdict
        from actors.supervisor import runtime

        self.restarts += 1
        print(f"llama-actors: the root supervisor died; killed {len(killed)} orphaned tree processes, "
              f"restarting the tree (restart {self.restarts})", file=sys.stderr, flush=True)
        try:
            root = runtime.find_root(self.asys)
            reply = runtime.ask(self.asys, root, replace(self.start, req_id=uuid.uuid4().hex, restore=True), 60.0)
        except Exception as e:  # counted like a death: the next tick tries again or gives up
            print(f"llama-actors: restarting the root failed: {e!r}", file=sys.stderr, flush=True)
            self.root = None
            return Verdict.RESTART
        self.root = self._proc(reply.info.pids.get("root")) if isinstance(reply, sm.TreeReady) else None
        self.known = _descendants(self.root.pid) if self.root is not None else set()
        return Verdict.RESTART


__all__ = ["EXIT_ROOT_FAILED", "RootWatch", "Verdict", "decide", "kill_orphans"]
