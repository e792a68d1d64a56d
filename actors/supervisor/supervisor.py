"""A generic OTP-style supervisor actor for thespian.

Thespian tells a parent ``ChildActorExited`` a few milliseconds after a
child process dies (``multiprocTCPBase``), but it loses that notice for
children that die close together (see ``actors.supervisor.watch``), so a
supervisor also polls its children's pids; both signals end in the one
exit handler, which acts once per death.  The decisions (restart what, escalate or not) come from
the pure :func:`~actors.supervisor.spec.plan_restart`.  Subclasses add
children with :meth:`add_child`, build each child's init message in
:meth:`init_for` (called again on every restart, so a restarted child
gets the same configuration, with fresh addresses of its siblings), and
react to restarts in :meth:`on_child_started`.

Escalation: when restarts exceed the intensity, the supervisor stops all
its children and exits; its own supervisor sees that exit like any
other child failure.

Orphans: thespian does not stop the children of an actor process that
dies abruptly (SIGKILL, segfault); they keep running, reparented to init.
OTP semantics say they die with their parent, so a supervisor keeps a
snapshot of its descendant processes (pid + start time) and, after
every message (the pid watch makes that at least every
``WATCH_INTERVAL_S``) and before restarting anything, kills every former
descendant that is no longer under it.
"""

from __future__ import annotations

import os
import time
import traceback
from datetime import timedelta
from typing import Any

from thespian.actors import (
    Actor,
    ActorExitRequest,
    ChildActorExited,
    PoisonMessage,
    WakeupMessage,
)

from actors.supervisor import messages as sm
from actors.supervisor.spec import ChildSpec, Restart, RestartIntensity, Strategy, plan_restart
from actors.supervisor.watch import WATCH_INTERVAL_S, WATCH_PAYLOAD, PidWatch, ProcId, children_of, kill_all


class Supervisor(Actor):
    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = 3
    max_seconds: float = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.specs: dict[str, ChildSpec] = {}
        self.children: dict[str, Any] = {}
        self.intensity = RestartIntensity(self.max_restarts, self.max_seconds)
        self._retired: list[Any] = []
        self._normal: list[Any] = []
        self.escalated = False
        self.stopping = False
        self.restart_count = 0
        self._known: dict[int, float] = {}
        self.watch = PidWatch()
        self._watching = False

    # ------------------------------------------------------------------ dispatch

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        try:
            if isinstance(msg, ChildActorExited):
                self.reap_orphans()
                self._child_exited(msg.childAddress)
            elif isinstance(msg, ActorExitRequest):
                self.stopping = True
                self.on_exit_request()
            elif isinstance(msg, PoisonMessage):
                self.on_poison(msg)
            elif isinstance(msg, WakeupMessage) and msg.payload == WATCH_PAYLOAD:
                self._poll_children()
            elif isinstance(msg, WakeupMessage):
                self.on_wakeup(msg)
            elif isinstance(msg, sm.WhichChildren):
                self.send(sender, sm.Children(msg.req_id, dict(self.children), self.restart_count, self.escalated,
                                              {str(k): v for k, v in self.watch.pids().items()}))
            elif isinstance(msg, ChildExitingNormally):
                self._normal.append(sender)
            else:
                self.handle(msg, sender)
        except Exception as e:  # a bug answers the caller; the supervisor keeps running
            self.on_handler_error(msg, sender, e)
        finally:
            if not isinstance(msg, ActorExitRequest):
                self.snapshot_descendants()

    # ------------------------------------------------------------------ pid watch

    def _arm_watch(self) -> None:
        if not self._watching:
            self._watching = True
            self.wakeupAfter(timedelta(seconds=WATCH_INTERVAL_S), payload=WATCH_PAYLOAD)

    def _poll_children(self) -> None:
        """A child whose process is gone is handled like its exit notice (which thespian may never send)."""
        self._watching = False
        dead = self.watch.poll()
        if dead:
            self.reap_orphans()
        for addr in dead:
            self._child_exited(addr)
            self.send(self.myAddress, ChildActorExited(addr))  # thespian's own child list (see watch.py)
        if not self.stopping and self.children:
            self._arm_watch()

    # ------------------------------------------------------------------ orphans

    def snapshot_descendants(self) -> None:
        self.reap_orphans()

    def reap_orphans(self) -> list[int]:
        """Kill former descendants that left the tree (a dead child's orphans), then remember the current ones.

        Runs after every message: a process that is no longer under this supervisor but still runs (same
        pid and start time) was orphaned by a child that died; remembering only the current tree would
        forget it at the next message, so it is killed on the first look that misses it."""
        current = {p.pid: p.started for p in children_of(os.getpid(), recursive=True)}
        gone = [ProcId(pid, started) for pid, started in self._known.items() if pid not in current]
        self._known = current
        return kill_all(gone) if gone else []

    # ------------------------------------------------------------------ hooks

    def handle(self, msg: Any, sender: Any) -> None:
        """Subclass messages."""

    def init_for(self, spec: ChildSpec) -> Any:
        return spec.init

    def on_child_started(self, spec: ChildSpec, addr: Any, restarted: bool) -> None:
        pass

    def on_child_forgotten(self, cid: str) -> None:
        pass

    def on_child_down(self, cid: str) -> bool:
        """A child died (not stopped by us). False: do not restart it (the subclass handled it)."""
        return True

    def on_escalate(self, failed: str) -> None:
        """Default: exit, so the parent supervisor sees this supervisor fail."""
        self.send(self.myAddress, ActorExitRequest())

    def on_exit_request(self) -> None:
        pass

    def on_poison(self, msg: PoisonMessage) -> None:
        pass

    def on_wakeup(self, msg: WakeupMessage) -> None:
        pass

    def on_handler_error(self, msg: Any, sender: Any, exc: Exception) -> None:
        from actors.model.messages import ErrorReply

        req_id = getattr(msg, "req_id", "")
        if req_id:
            self.send(getattr(msg, "reply_to", None) or sender, ErrorReply(req_id, "internal_error",
                                                                            "".join(traceback.format_exception(exc))))

    # ------------------------------------------------------------------ children

    def add_child(self, spec: ChildSpec) -> Any:
        if spec.id in self.specs:
            raise ValueError(f"child {spec.id!r} already exists")
        self.specs[spec.id] = spec
        return self._start(spec, restarted=False)

    def _start(self, spec: ChildSpec, restarted: bool) -> Any:
        addr = self.watch.spawn(spec.id, lambda: self.createActor(spec.actor))
        self.children[spec.id] = addr
        self._arm_watch()
        init = self.init_for(spec)
        if init is not None:
            self.send(addr, init)
        self.on_child_started(spec, addr, restarted)
        return addr

    def stop_child(self, cid: str, forget: bool = True) -> None:
        addr = self.children.pop(cid, None)
        self.watch.forget(cid)
        if forget:
            self.specs.pop(cid, None)
        if addr is not None:
            self._retired.append(addr)
            self.send(addr, ActorExitRequest())

    def child_id(self, addr: Any) -> str | None:
        for cid, a in self.children.items():
            if a == addr:
                return cid
        return None

    def _take(self, pool: list[Any], addr: Any) -> bool:
        for i, a in enumerate(pool):
            if a == addr:
                del pool[i]
                return True
        return False

    def _child_exited(self, addr: Any) -> None:
        if self._take(self._retired, addr):
            return
        normal = self._take(self._normal, addr)
        cid = self.child_id(addr)
        if cid is None:
            return
        del self.children[cid]
        self.watch.forget(cid)
        if self.stopping or self.escalated or not self.on_child_down(cid):
            return
        order = [c for c in self.specs if c in self.children or c == cid]
        kinds = {c: s.restart for c, s in self.specs.items()}
        plan = plan_restart(self.strategy, order, kinds, cid, normal, self.intensity, time.monotonic())
        if plan.forget:
            self.specs.pop(cid, None)
            self.on_child_forgotten(cid)
            return
        if plan.escalate:
            self.escalated = True
            for c in list(self.children):
                self.stop_child(c, forget=False)
            self.on_escalate(cid)
            return
        for c in plan.stop:
            if c in self.children:
                self.stop_child(c, forget=False)
        for c in plan.restart:
            self.restart_count += 1
            self._start(self.specs[c], restarted=True)


class ChildExitingNormally:
    """A child tells its supervisor that its coming exit is normal (matters for ``transient`` children)."""


__all__ = ["ChildExitingNormally", "ChildSpec", "Restart", "Strategy", "Supervisor"]
