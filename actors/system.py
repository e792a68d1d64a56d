"""A bare actor system for your own actors: no supervision tree, no models.

``start_system()`` goes through the one bootstrap (``actors.supervisor.runtime``):
the admin runs in a fresh ``serve --bare`` process (loopback only, its own admin
port, never 1900), and this process attaches to it. The actor classes you create
must be importable there: the serve process gets this process's import path, but
not its ``__main__`` module, so define them in a module of their own.

:class:`SystemHandle` is a context manager because the admin daemonises and
outlives the process that started it: leaving the ``with`` block stops the
system and checks by the admin's session that no process of it is left
(``runtime.LeftoverProcesses`` otherwise, after killing them by pid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.supervisor import runtime


@dataclass
class SystemHandle:
    """A running bare system; use as a context manager."""

    asys: Any
    port: int
    started: runtime.Started
    _closed: bool = field(default=False, repr=False)

    @property
    def admin_pid(self) -> int | None:
        return self.started.admin_pid

    @property
    def session_id(self) -> int | None:
        """The admin's own session (None when unknown): every process of the system is in it."""
        return runtime.admin_session(self.admin_pid)

    def create(self, actor_class: Any, **kwargs: Any) -> Any:
        return self.asys.createActor(actor_class, **kwargs)

    def tell(self, addr: Any, msg: Any) -> None:
        self.asys.tell(addr, msg)

    def ask(self, addr: Any, msg: Any, timeout: float = 10.0) -> Any:
        """``runtime.ask``: the reply whose ``req_id`` matches (an empty one is filled in); TimeoutError if none."""
        return runtime.ask(self.asys, addr, msg, timeout)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the system and verify nothing of it survives (``runtime.stop``)."""
        if self._closed:
            return
        self._closed = True
        try:
            runtime.stop(self.port, self.started.serve, self.admin_pid, graceful=False, timeout=timeout,
                         asys=self.asys)
        finally:
            runtime.detach(self.asys)

    def __enter__(self) -> SystemHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def start_system(port: int | None = None, timeout: float = 60.0) -> SystemHandle:
    """Start a bare loopback-only system on its own admin port (``port=None``: a free one).

    The returned handle must be shut down (``with start_system() as system: ...``).
    """
    started = runtime.start(port, timeout=timeout, tree=False)
    try:
        asys = runtime.attach_system(started.port)
    except BaseException:
        runtime.stop(started.port, started.serve, started.admin_pid, graceful=False)
        raise
    return SystemHandle(asys, started.port, started)
