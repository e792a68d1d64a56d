"""The Python client's connections to its models' request doors (``actors.model.door``).

One connection per model process, opened at the first request to it and
kept: a request is one write from the calling thread (no sender thread, no
thespian hop), and its events come back on the same connection, read by
the client inbox's thread like every other message to this client.  When
the connection ends (the process died or was unloaded), the model
supervisor is told (``mm.DoorClosed``: it handles the death at once), and
then the requests it carried that had no final message yet end with
``model_crashed``: a caller that retries at once finds the model
restarting, not the dead process.

Which process: the shared-memory table says which pid serves a model now
(no message); a pid not seen before is looked up once in the supervisor's
model list, where a ready model on this host names its door.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from actors.errors import ErrorReply
from actors.model.door import CRASH_DETAIL, TRACKED, DoorAddress, OpenRequests
from actors.model.local_inbox import InboxServer, encode

RETRY_S = 0.5  # a model that was not ready (or had no door) when asked is asked again after this long


class DoorLink:
    """One connection to one model process's door; sends are thread-safe."""

    def __init__(self, addr: DoorAddress, pid: int) -> None:
        self.pid = pid
        self.requests = OpenRequests()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(addr.path)
        except OSError:
            self.sock.close()
            raise
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return not self.requests.closed

    def send(self, msg: Any) -> bool:
        """Write one request; False if the door is closed (send it the supervisor's way instead)."""
        tracked = isinstance(msg, TRACKED)  # cancel and abort have no reply of their own
        if tracked and not self.requests.add(msg.req_id):
            return False
        try:
            with self._lock:
                self.sock.sendall(encode(msg))
        except OSError:
            if tracked:
                self.requests.discard(msg.req_id)
            return False
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class DoorLinks:
    """This client's door connections by model, read by ``server`` (the client inbox's socket thread)."""

    def __init__(self, server: InboxServer, route: Callable[[Any], None],
                 tell_closed: Callable[[str, int], None] | None = None) -> None:
        """``tell_closed(model, pid)``: tell the model supervisor a door closed on requests (``mm.DoorClosed``;
        it blocks until the message is handed over).  The requests end ``model_crashed`` after it."""
        self._server = server
        self._route = route
        self._tell_closed = tell_closed
        self._reporter: ThreadPoolExecutor | None = None  # one thread: its thespian context is made once
        self._links: dict[str, DoorLink] = {}
        self._not_now: dict[tuple[str, int], float] = {}  # (model, pid) -> monotonic time to ask again
        self._closing = False
        self._opening: dict[str, threading.Lock] = {}  # model -> held while its link is looked up and opened
        self._lock = threading.Lock()

    def _current(self, model: str, pid: int) -> DoorLink | None:
        with self._lock:
            link = self._links.get(model)
            return link if link is not None and link.pid == pid and link.alive else None

    def link(self, model: str, pid: int, resolve: Callable[[], DoorAddress | None]) -> DoorLink | None:
        """The open link to ``model``'s process ``pid``, opening it (``resolve`` names the door) when needed.

        One lookup and one connection per process, however many threads ask at once: a second
        connection would leave the first one's requests with nobody reading their replies."""
        link = self._current(model, pid)
        if link is not None:
            return link
        with self._lock:
            opening = self._opening.setdefault(model, threading.Lock())
        with opening:
            link = self._current(model, pid)
            if link is not None:
                return link
            with self._lock:
                if self._not_now.get((model, pid), 0.0) > time.monotonic():
                    return None
            addr = resolve()
            try:
                new = DoorLink(addr, pid) if addr is not None else None
            except OSError:
                new = None
            with self._lock:
                if new is None:
                    self._not_now[(model, pid)] = time.monotonic() + RETRY_S
                    return None
                self._links[model] = new  # a link to an earlier process ends by itself, with that process
            self._server.attach(new.sock, lambda msg, lk=new: self._arrived(lk, msg),
                                lambda lk=new, m=model: self._ended(m, lk))
            return new

    def holding(self, req_id: str) -> DoorLink | None:
        """The live link that carried ``req_id`` (its cancel goes the same way, so it cannot overtake it)."""
        with self._lock:
            links = list(self._links.values())
        return next((lk for lk in links if lk.alive and lk.requests.holds(req_id)), None)

    def _arrived(self, link: DoorLink, msg: Any) -> None:
        link.requests.seen(msg)
        self._route(msg)

    def _ended(self, model: str, link: DoorLink) -> None:
        """After the last message the process wrote: what it never answered, it never will."""
        left = tuple(link.requests.close())
        with self._lock:
            if self._links.get(model) is link:
                del self._links[model]
        if not left or self._closing:  # this client is closing: nobody waits for them
            return

        def report() -> None:  # off the inbox thread: a tell waits for the supervisor's transport
            if self._tell_closed is not None:
                with contextlib.suppress(Exception):  # no tree to tell: the supervisor finds the death itself
                    self._tell_closed(model, link.pid)
            for rid in left:
                self._route(ErrorReply(rid, "model_crashed", CRASH_DETAIL))

        with self._lock:
            if self._reporter is None:
                self._reporter = ThreadPoolExecutor(1, thread_name_prefix="llama-actors-door-closed")
            reporter = self._reporter
        with contextlib.suppress(RuntimeError):  # shut down: this client is closing
            reporter.submit(report)

    def finished(self, req_id: str) -> None:
        """The caller stopped waiting for ``req_id`` (answered, or it gave up)."""
        with self._lock:
            links = list(self._links.values())
        for lk in links:
            lk.requests.discard(req_id)

    def close(self) -> None:
        self._closing = True
        with self._lock:
            links, self._links = list(self._links.values()), {}
            reporter, self._reporter = self._reporter, None
        if reporter is not None:
            reporter.shutdown(wait=True, cancel_futures=True)
        for lk in links:
            lk.close()


__all__ = ["DoorLink", "DoorLinks"]
