"""The HTTP server's own local inbox, read by its event loop: a model's tokens reach a handler with no thread hop.

The Python client's inbox (``actors.model.local_inbox.InboxServer``) reads
its Unix socket on a thread of its own and hands each message on.  The
server used that door too, so every event crossed a thread (the inbox's)
and then the event loop's wake-up pipe before a handler saw it: on this
two-core machine about 0.5-1.4 ms at the first token, the largest single
part of what HTTP added to a warm request.  Here the event loop itself
serves the socket (``loop.create_unix_server``), decodes frames with the
same :class:`~actors.model.local_inbox.FrameReader` and puts each message
straight into its request's ``asyncio.Queue``.

Same wire format, same address type and same protection as the client's
inbox: a ``mkdtemp`` (0700) directory, a 0600 socket, so only this user
can connect.  A model that cannot reach it (another host) answers through
the thespian ``fallback`` address, which the bridge also routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from actors.model.door import TRACKED, OpenRequests
from actors.model.local_inbox import FrameReader, LocalInbox, encode, host_id


class _Connection(asyncio.Protocol):
    """One model's connection: frames in, each message delivered on the loop."""

    def __init__(self, owner: LoopInbox) -> None:
        self.owner = owner
        self.frames = FrameReader()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.frames.feed(data)
        except ValueError:  # an oversized frame: this writer is broken, drop its connection
            self.owner.errors += 1
            if self.transport is not None:
                self.transport.close()
            return
        for frame in frames:
            self.owner.received += 1
            try:
                self.owner.deliver(pickle.loads(frame))
            except Exception:
                self.owner.errors += 1


class LoopDoor(asyncio.Protocol):
    """This server's connection to one model process's request door (``actors.model.door``), on the loop.

    A request is one ``transport.write`` from the handler's own task: no sender thread, no thespian
    hop.  Its events come back on the same connection; when the connection ends, ``ended`` gets what it
    carried that had no final message (everything the process wrote before it died has been read by
    then: one ordered stream), and the bridge has the supervisor answer those ``model_crashed``.
    """

    def __init__(self, model: str, pid: int, deliver: Callable[[Any], None],
                 ended: Callable[[LoopDoor, tuple[str, ...]], None]) -> None:
        self.model = model
        self.pid = pid
        self.requests = OpenRequests()
        self._deliver = deliver
        self._ended = ended
        self._frames = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.received = 0  # messages read from this connection

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.requests.closed and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._frames.feed(data)
        except ValueError:  # a broken writer: drop the connection (its requests then end as crashed)
            if self.transport is not None:
                self.transport.close()
            return
        for frame in frames:
            try:
                msg = pickle.loads(frame)
            except Exception:
                continue
            self.received += 1
            self.requests.seen(msg)
            self._deliver(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(self, tuple(self.requests.close()))

    def send(self, msg: Any) -> bool:
        """Write one request; False when the door is gone (send it the supervisor's way instead)."""
        if not self.alive or self.transport is None:
            return False
        tracked = isinstance(msg, TRACKED)
        if tracked and not self.requests.add(msg.req_id):
            return False
        self.transport.write(encode(msg))
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class LoopInbox:
    """A Unix-socket inbox served by the running event loop; ``deliver`` is called on the loop."""

    def __init__(self, deliver: Callable[[Any], None], fallback: Any) -> None:
        self.deliver = deliver
        self.fallback = fallback
        self.address: LocalInbox | None = None
        self.received = 0
        self.errors = 0
        self._dir: str | None = None
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> LocalInbox:
        """Bind and serve on the running loop (idempotent); returns the address requests carry."""
        if self.address is not None:
            return self.address
        self._dir = tempfile.mkdtemp(prefix="llama-actors-http-inbox-")
        path = os.path.join(self._dir, "inbox.sock")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self), path, backlog=64)
        os.chmod(path, 0o600)
        self.address = LocalInbox(path, host_id(), self.fallback)
        return self.address

    def close(self) -> None:
        """Stop accepting and remove the socket (safe from any thread once the loop has stopped)."""
        if self._server is not None:
            with contextlib.suppress(RuntimeError):
                self._server.close()
            self._server = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self.address = None


__all__ = ["LoopDoor", "LoopInbox"]
