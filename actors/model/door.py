"""A model's request door: generation requests from a client on this host, and their events back, on one socket.

Why: a request used to reach its model in two thespian hops (client to the
model supervisor, supervisor to the model actor), each a TCP exchange with
an acknowledgement: 4.6 ms of an exact cache hit's 11.5 ms on this two-core
machine (traced hop by hop).  The supervisor relays every request only so
that it can answer ``model_crashed`` if the model dies holding it.  Through
the door a client writes the request straight into the model process, and
the model writes the request's events and reply back on the same
connection.  One ordered stream both ways gives the crash answer for free:
everything the model wrote before it died is read before the end of the
stream, so a request the client still holds open when the stream ends was
never answered, and the client ends it with ``model_crashed`` itself.

What may come through: the requests in :data:`DOOR_REQUESTS`: generation,
the cancel and abort of it (a cancel goes the way its target went, so it
never overtakes it), and the text queries a client makes around its
prompts every turn (tokenize, detokenize, render a chat): 4.4 ms each through
the supervisor, for work of well under a millisecond.  Anything else
(loading, status, sessions, adapters) keeps the supervisor's path; so does a
model on another host, one that is not ready, and any client without a door
(the door is an addition, never the only way in).

Who may connect: the socket lives in a ``mkdtemp`` directory (0700) and is
itself 0600, as the clients' inboxes (``local_inbox``): only this user.
Frames are those of the inbox (length-prefixed pickles).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import shutil
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from actors.errors import ErrorReply
from actors.model import messages as mm
from actors.model.local_inbox import FrameReader, InboxWriter, PrivateListener, host_id

# Each gets a final message (``is_final``).
TRACKED: tuple[type, ...] = (mm.Complete, mm.Infer, mm.PrefillOnly, mm.Continue, mm.Tokenize, mm.Detokenize,
                             mm.ApplyChatTemplate)
DOOR_REQUESTS: tuple[type, ...] = (*TRACKED, mm.Cancel, mm.Abort)
DOORLESS_PHASES = ("loading", "down", "stopping")  # shared-memory phases in which no door serves the model
DOOR_DIR_PREFIX = "llama-actors-door-"  # what remove_door checks before it deletes a directory
CRASH_DETAIL = "the model process ended while it held this request (its door closed)"


def is_final(msg: Any) -> bool:
    """The last message of a request: nothing more comes for its ``req_id``."""
    return isinstance(msg, (mm.Completion, mm.Done, mm.Value, ErrorReply))


@dataclass(frozen=True)
class DoorAddress:
    """Where a model's door listens, and the host (and boot) on which that path means anything."""

    path: str
    host: str

    def reachable(self) -> bool:
        return self.host == host_id() and os.path.exists(self.path)

    def as_dict(self) -> dict[str, str]:
        """Plain values, for the supervisor's model list (printed as JSON by ``llama-actors status``)."""
        return {"path": self.path, "host": self.host}

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> DoorAddress | None:
        """The door of a model-list entry, when the model is ready and has one."""
        door = entry.get("door")
        if entry.get("state") != "ready" or not isinstance(door, dict):
            return None
        return cls(str(door.get("path", "")), str(door.get("host", "")))


def door_of(entries: Iterable[dict[str, Any]], model: str) -> DoorAddress | None:
    """``model``'s door from the supervisor's list, if this process can use it (pure but for the path check)."""
    for e in entries:
        if e.get("model_id") == model:
            addr = DoorAddress.from_entry(e)
            return addr if addr is not None and addr.reachable() else None
    return None


class OpenRequests:
    """The requests a client sent through one door and has not had a final message for (thread-safe)."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self.closed = False

    def add(self, req_id: str) -> bool:
        """Record a request about to be sent; False once the door has closed (send it another way)."""
        with self._lock:
            if self.closed:
                return False
            self._ids.add(req_id)
            return True

    def seen(self, msg: Any) -> None:
        """A message read from the door: a final one closes its request."""
        if is_final(msg):
            with self._lock:
                self._ids.discard(msg.req_id)

    def discard(self, req_id: str) -> None:
        with self._lock:
            self._ids.discard(req_id)

    def holds(self, req_id: str) -> bool:
        with self._lock:
            return req_id in self._ids

    def close(self) -> list[str]:
        """The door ended: the requests it never answered (each then ends with ``model_crashed``)."""
        with self._lock:
            self.closed = True
            left, self._ids = sorted(self._ids), set()
        return left

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)


class DoorPeer:
    """One client connection, inside the model process: the ``reply_to`` of the requests it brought.

    The outbox gives it a lane of its own (``str`` is its lane key) whose writer is this very
    connection, so a request's events and reply go back in order on the stream it came in on.
    Never pickled: it only lives in the model process.
    """

    def __init__(self, sock: socket.socket, n: int) -> None:
        self._sock = sock
        self._n = n

    def writer(self) -> InboxWriter:
        return InboxWriter.over(self._sock.dup())

    def __str__(self) -> str:
        return f"door-peer:{os.getpid()}:{self._n}"


class RequestDoor:
    """The model side: accepts client connections and hands each request to ``deliver`` on this thread.

    ``deliver`` must not block (the model actor puts the request on its worker's queue).  A frame that is
    not a door request is dropped and answered ``ErrorReply("bad_request")`` through ``reply(peer, msg)``
    (the model's outbox: the lane that writes that connection, so frames never interleave).
    """

    def __init__(self, deliver: Callable[[Any], None], reply: Callable[[DoorPeer, Any], None]) -> None:
        self._l = PrivateListener(DOOR_DIR_PREFIX, "door.sock")
        self.address = DoorAddress(self._l.path, host_id())
        self._deliver = deliver
        self._reply = reply
        self._peers = 0
        self.received = 0  # requests delivered through the door
        self.refused = 0  # frames that were not door requests
        self.thread = threading.Thread(target=self._run, name="llama-actors-door", daemon=True)
        self.thread.start()

    def _accept(self, conns: dict[socket.socket, tuple[FrameReader, DoorPeer]]) -> None:
        with contextlib.suppress(BlockingIOError):
            conn, _ = self._l.sock.accept()  # blocking: read only when the selector says so, and the reply
            # lane's writer (a duplicate of it) waits for a slow reader rather than dropping a frame
            self._peers += 1
            conns[conn] = (FrameReader(), DoorPeer(conn, self._peers))
            self._l.sel.register(conn, selectors.EVENT_READ, conn)

    def _frame(self, frame: bytes, peer: DoorPeer) -> None:
        try:
            msg = pickle.loads(frame)
        except Exception:
            msg = None
        if not isinstance(msg, DOOR_REQUESTS):
            self.refused += 1
            rid = getattr(msg, "req_id", "")
            self._reply(peer, ErrorReply(rid if isinstance(rid, str) else "", "bad_request",
                                         "only generation requests (with their cancel/abort) and text queries "
                                         "come through a model's door"))
            return
        self.received += 1
        self._deliver(replace(msg, reply_to=peer, inbox=peer))

    def _run(self) -> None:
        conns: dict[socket.socket, tuple[FrameReader, DoorPeer]] = {}
        while not self._l.stopping:
            for key, _ in self._l.sel.select():
                if key.data == "wake":
                    self._l.drain_wake()
                    continue
                if key.fileobj is self._l.sock:
                    self._accept(conns)
                    continue
                conn = key.data
                reader, peer = conns[conn]
                try:
                    data = conn.recv(1 << 20)
                    frames = reader.feed(data) if data else None
                except (OSError, ValueError):
                    frames = None
                if frames is None:  # the client went away: its requests' lane finds the socket closed
                    self._l.sel.unregister(conn)
                    conns.pop(conn, None)
                    conn.close()
                    continue
                for frame in frames:
                    self._frame(frame, peer)
        for conn in list(conns):
            conn.close()

    def close(self) -> None:
        """Stop accepting and remove the socket (the process is ending)."""
        self._l.close(self.thread)


def remove_door(addr: DoorAddress | None) -> None:
    """Remove a dead model's door directory (the supervisor, after the process is gone)."""
    if addr is not None and addr.host == host_id() and os.path.basename(os.path.dirname(addr.path)).startswith(
            DOOR_DIR_PREFIX):
        shutil.rmtree(os.path.dirname(addr.path), ignore_errors=True)


__all__ = ["CRASH_DETAIL", "DOORLESS_PHASES", "DOOR_REQUESTS", "TRACKED", "DoorAddress", "DoorPeer",
           "OpenRequests", "RequestDoor", "door_of", "is_final", "remove_door"]
