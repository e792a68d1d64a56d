"""How a ``System`` handle gets hold of a running tree, keeps hold of it, and lets go.

Its own module because reaching a tree is a sequence apart from the requests a
handle sends once it has one (``actors.api``): start a tree (or attach to one by
port), start once more a tree just started on a free port whose admin does not
answer, wait until the root reports the tree running, and stop a tree started here
when any of that fails.  Afterwards the tree's addresses are kept current: a
restarted model supervisor, meta or root has new ones, and a handle that kept a
dead process's address would wait forever.  Closing stops a tree this handle owns.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import Any

from actors.supervisor import messages as sm
from actors.supervisor import runtime
from actors.supervisor.client_watch import RouteGuard


class TreeLink:
    """One handle's hold on a tree: ``started`` (the tree started here; None when attached), ``port``,
    ``asys`` (the attached thespian system), ``guard`` (the tree's watched processes) and the tree's
    addresses (:meth:`current`)."""

    def __init__(self, port: int | None, *, cache: Any, attach: bool, multi_host: bool, start_timeout: float,
                 log_path: str | None, thinking_key: bytes | str | None, pressure: dict[str, Any] | None,
                 cores: int | None) -> None:
        from actors.secret import as_key

        self.started: runtime.Started | None = None
        if attach:
            if port is None:
                raise ValueError("attach needs the admin port")
        else:
            self.started = runtime.start(port, cache, multi_host, start_timeout, log_path,
                                         thinking_key=as_key(thinking_key), pressure=pressure, cores=cores)
            port = self.started.port
        assert port is not None
        self.port = port
        self._multi_host = multi_host
        try:
            self.asys = runtime.attach_system(port, multi_host)
            root = runtime.find_root(self.asys)
            deadline = time.monotonic() + start_timeout
            while True:  # an attach right after the admin came up may precede the tree's start
                info = runtime.ask(self.asys, root, sm.TreeInfoReq(uuid.uuid4().hex), 30.0)
                if isinstance(info, sm.TreeInfo) and info.models is not None and info.state == "running":
                    break
                if time.monotonic() > deadline or (isinstance(info, sm.TreeInfo) and info.state == "failed"):
                    raise runtime.RuntimeStartError(f"no running llama-actors tree on port {port}: {info!r}")
                time.sleep(0.1)
            self._tree: sm.TreeInfo = info
            self._tree_lock = threading.Lock()
            self.guard = RouteGuard()
            self._watch_tree(info)
        except BaseException:
            if self.started is not None:
                runtime.stop(port, self.started.serve, self.started.admin_pid, graceful=False)
            raise

    def current(self) -> sm.TreeInfo:
        """The tree's addresses; a dead process among them (its pid is watched, on this host) makes
        this ask the root again."""
        if not self._tree_alive(self._tree):
            self._refresh_tree()
        return self._tree

    def _watch_tree(self, info: sm.TreeInfo) -> None:
        if not self._multi_host:  # pids are this host's: a remote tree's processes are not watched
            self.guard.watch(info.models, info.pids.get("models"))
            self.guard.watch(info.meta, info.pids.get("meta"))

    def _tree_alive(self, info: sm.TreeInfo) -> bool:
        return self.guard.alive(info.models) and self.guard.alive(info.meta)

    def _refresh_tree(self, timeout: float = 30.0) -> None:
        """Wait until the root reports a running tree whose model supervisor and meta are alive, and use it."""
        from actors.api import ModelError  # actors.api imports this module

        with self._tree_lock:
            if self._tree_alive(self._tree):
                return
            deadline = time.monotonic() + timeout
            last: Any = None
            while True:
                with contextlib.suppress(TimeoutError):
                    root = runtime.find_root(self.asys)  # a restarted root has a new address, the same name
                    last = runtime.ask(self.asys, root, sm.TreeInfoReq(uuid.uuid4().hex), 2.0)
                    if (isinstance(last, sm.TreeInfo) and last.state == "running" and last.models is not None
                            and last.meta is not None):
                        self._watch_tree(last)
                        if self._tree_alive(last):
                            self._tree = last
                            return
                if time.monotonic() > deadline:
                    raise ModelError("tree_unavailable", f"a process of the tree died and no new one came up "
                                                         f"within {timeout}s: {last!r}")
                time.sleep(0.05)

    @property
    def admin_pid(self) -> int | None:
        return self.started.admin_pid if self.started else runtime.listener_pid(self.port)

    def close(self, stop: bool) -> None:
        """Stop the tree (``stop``: the owner's handle, when it started one), then close this handle's own
        listening socket."""
        try:
            if stop and self.started is not None:
                runtime.stop(self.port, self.started.serve, self.started.admin_pid)
        finally:
            with contextlib.suppress(Exception):  # this handle's own listening socket
                self.asys._systemBase.transport.close()
