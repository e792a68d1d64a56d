"""Thespian actor-system bootstrap.

Facts this module is built around (thespian 4.0.1, ``multiprocTCPBase``):

* The admin daemonises (setsid + fork) and outlives the process that
  started it, so every start must be paired with a shutdown that runs
  even when the caller raises; :class:`SystemHandle` is a context manager
  for exactly that, and checks afterwards that no process of the
  system's session is left.
* Each system gets its own admin port (never the default 1900) so tests
  and several deployments on one host cannot talk to each other's admin.
* Thespian binds its sockets to all interfaces; we patch its address
  class so every socket binds to 127.0.0.1, and export the loopback
  address as the base address.  Actor processes are forked from the
  admin, itself forked from here, so the patch reaches all of them.
* ``ActorSystem.ask`` returns the first message that reaches the asking
  context, whatever it is: :meth:`SystemHandle.ask` uses a private
  context per call and skips replies whose ``req_id`` does not match.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

# One loopback patch and one set of process helpers for both bootstraps.
from actors.supervisor.runtime import enforce_loopback, free_port, listener_pid, session_members

SYSTEM_BASE = "multiprocTCPBase"


class ActorSystemError(RuntimeError):
    pass


class LeftoverProcesses(ActorSystemError):
    """Processes of the actor system outlived its shutdown (they were killed)."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(f"actor-system processes left after shutdown (killed): {pids}")
        self.pids = pids


def _reap(pid: int | None, timeout: float = 2.0) -> None:
    """Collect the exited intermediate process of thespian's daemonising
    double fork.  It is our child and thespian detaches it without ever
    joining it, so it would otherwise stay a zombie (and later an
    unreaped orphan wherever pid 1 does not reap)."""
    if pid is None or pid == os.getpid():
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # not our child, or already collected
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.01)


@dataclass
class SystemHandle:
    """A running actor system; use as a context manager."""

    asys: Any
    port: int
    admin_pid: int | None
    session_id: int | None
    _closed: bool = field(default=False, repr=False)

    def create(self, actor_class: Any, **kwargs: Any) -> Any:
        return self.asys.createActor(actor_class, **kwargs)

    def tell(self, addr: Any, msg: Any) -> None:
        self.asys.tell(addr, msg)

    def ask(self, addr: Any, msg: Any, timeout: float = 10.0) -> Any:
        """Send ``msg`` and return the reply whose ``req_id`` matches.

        A ``req_id`` is filled in when the message has an empty one.
        Raises TimeoutError rather than hanging or returning None.
        """
        req_id = getattr(msg, "req_id", None)
        if req_id == "":
            req_id = uuid.uuid4().hex
            msg = replace(msg, req_id=req_id)
        deadline = time.monotonic() + timeout
        with self.asys.private() as ctx:
            reply = ctx.ask(addr, msg, timeout)
            while True:
                if reply is None:
                    raise TimeoutError(f"no reply to {type(msg).__name__} within {timeout}s")
                if req_id is None or getattr(reply, "req_id", None) == req_id:
                    return reply
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching reply to {type(msg).__name__} within {timeout}s")
                reply = ctx.listen(left)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the system and verify nothing of it survives.

        Leftover processes of the admin's session are killed by pid (they
        are this system's own) and reported with LeftoverProcesses.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self.asys.shutdown()
        finally:
            _reap(self.session_id, 0.0)
            leftovers = self._wait_gone(timeout)
            if leftovers:
                for pid in leftovers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                raise LeftoverProcesses(leftovers)

    def _wait_gone(self, timeout: float) -> list[int]:
        if self.session_id is None:
            return []
        deadline = time.monotonic() + timeout
        while True:
            alive = [p for p in session_members(self.session_id) if p != os.getpid()]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.05)

    def __enter__(self) -> SystemHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def start_system(
    port: int | None = None, *, logdefs: Any = None, capabilities: dict[str, Any] | None = None
) -> SystemHandle:
    """Start a loopback-only ``multiprocTCPBase`` system on its own admin port.

    ``port=None`` picks a free port.  The returned handle must be shut
    down (``with start_system() as sys: ...``).
    """
    enforce_loopback()
    from thespian.actors import ActorSystem

    port = free_port() if port is None else port
    if port == 1900:
        raise ActorSystemError("refusing thespian's default admin port 1900; pick an explicit port")
    caps = {"Admin Port": port, **(capabilities or {})}
    asys = ActorSystem(SYSTEM_BASE, caps, logDefs=logdefs, transientUnique=True)
    admin_pid = None
    sid = None
    deadline = time.monotonic() + 5.0
    while admin_pid is None and time.monotonic() < deadline:
        admin_pid = listener_pid(port)
        if admin_pid is None:
            time.sleep(0.02)
    if admin_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            sid = os.getsid(admin_pid)
    _reap(sid)
    handle = SystemHandle(asys, port, admin_pid, sid)
    if sid is None or sid == os.getsid(0):
        # Could not identify the admin's own session: better no leftover
        # check than one that would kill our own session.
        handle.session_id = None
    return handle
