"""A client's inbox on this host: one Unix socket that models write a request's stream and reply into.

Why not thespian for tokens: a thespian ``tell`` from the model's sender
thread costs a new selector, a TCP exchange and the receiver's
acknowledgement, about 1 ms of CPU on each side per message on a busy
two-core machine.  A streamed token is one such message, and every cycle it
costs is taken from llama.cpp's threads (streaming decoded at 0.83x the
rate of llama-server).  A write of a length-prefixed pickle to a Unix
socket costs a few microseconds and needs no acknowledgement.

Who may write: the socket lives in a directory made by ``mkdtemp`` (mode
0700) and is itself 0600, so only the client's own user (and root) can
connect; nothing from the network ever reaches it.  A model that cannot
connect (another host, the client gone) falls back to the thespian address
the inbox carries, so a reply is never lost because of this shortcut.

Framing: a 4-byte little-endian length, then ``pickle`` protocol 5 bytes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_LEN = struct.Struct("<I")
MAX_FRAME = 256 << 20


def host_id() -> str:
    """This host's identity for this boot: a path is only meaningful on the host (and boot) that made it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


@dataclass(frozen=True)
class LocalInbox:
    """Where to send a request's events on this host, and the thespian address to use otherwise."""

    path: str
    host: str
    fallback: Any

    def reachable(self) -> bool:
        return self.host == host_id() and os.path.exists(self.path)

    def __str__(self) -> str:
        return f"local-inbox:{self.path}"


def encode(msg: Any) -> bytes:
    data = pickle.dumps(msg, protocol=5)
    return _LEN.pack(len(data)) + data


class FrameReader:
    """Splits a byte stream into frames: pure, so partial reads are tested without sockets."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while len(self._buf) >= _LEN.size:
            (n,) = _LEN.unpack_from(self._buf)
            if n > MAX_FRAME:
                raise ValueError(f"frame of {n} bytes exceeds {MAX_FRAME}")
            if len(self._buf) < _LEN.size + n:
                break
            out.append(bytes(self._buf[_LEN.size:_LEN.size + n]))
            del self._buf[:_LEN.size + n]
        return out


class PrivateListener:
    """A Unix socket only this user can reach (0600, in a ``mkdtemp`` directory: 0700), with a selector
    that watches it and a wake-up pair: the shell both a client's inbox and a model's request door
    (``actors.model.door``) run their one reading thread in."""

    def __init__(self, prefix: str, name: str) -> None:
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.path = os.path.join(self.dir, name)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o600)
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")  # a key whose ``data`` is "wake"
        self.stopping = False

    def wake(self) -> None:
        """Make the reading thread's ``select`` return (its key's ``data`` is ``"wake"``)."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"w")

    def drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def close(self, thread: threading.Thread) -> None:
        """Stop the reading ``thread`` (it checks ``stopping``), then remove the socket and its directory."""
        self.stopping = True
        self.wake()
        thread.join(2.0)
        for s in (self.sock, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()
        self.sel.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class _Conn:
    """One connection an inbox reads: where its messages go, and who hears of its end."""

    __slots__ = ("frames", "on_closed", "on_message")

    def __init__(self, on_message: Callable[[Any], None], on_closed: Callable[[], None] | None) -> None:
        self.frames = FrameReader()
        self.on_message = on_message
        self.on_closed = on_closed


class InboxServer:
    """The client side: accepts model connections and hands each decoded message to ``deliver``.

    It also reads the connections this client opened to models' request doors (:meth:`attach`), so
    one thread serves every message coming to this client.  Callbacks run on that thread and must not
    block.
    """

    def __init__(self, deliver: Callable[[Any], None], fallback: Any) -> None:
        self._l = PrivateListener("llama-actors-inbox-", "inbox.sock")
        self.address = LocalInbox(self._l.path, host_id(), fallback)
        self._deliver = deliver
        self._attach: list[tuple[socket.socket, _Conn]] = []
        self._attach_lock = threading.Lock()
        self.errors = 0
        self.received = 0  # messages delivered through the socket (the rest came through thespian)
        self.thread = threading.Thread(target=self._run, name="llama-actors-local-inbox", daemon=True)
        self.thread.start()

    def attach(self, conn: socket.socket, on_message: Callable[[Any], None], on_closed: Callable[[], None]) -> None:
        """Read ``conn`` (a connection this client opened) on the inbox thread: each message to
        ``on_message``, then ``on_closed`` once, after the last one, when the other end closes it."""
        with self._attach_lock:
            self._attach.append((conn, _Conn(on_message, on_closed)))
        self._l.wake()

    def _take_attached(self, conns: dict[socket.socket, _Conn]) -> None:
        self._l.drain_wake()
        with self._attach_lock:
            new, self._attach = self._attach, []
        for conn, c in new:
            conns[conn] = c
            self._l.sel.register(conn, selectors.EVENT_READ, conn)

    def _run(self) -> None:
        conns: dict[socket.socket, _Conn] = {}
        while not self._l.stopping:
            for key, _ in self._l.sel.select():
                if key.data == "wake":
                    self._take_attached(conns)
                    continue
                if key.fileobj is self._l.sock:
                    with contextlib.suppress(BlockingIOError):
                        conn, _addr = self._l.sock.accept()
                        conn.setblocking(False)
                        conns[conn] = _Conn(self._deliver, None)
                        self._l.sel.register(conn, selectors.EVENT_READ, conn)
                    continue
                conn = key.data
                c = conns[conn]
                try:
                    data = conn.recv(1 << 20)
                    frames = c.frames.feed(data) if data else None
                except (OSError, ValueError):
                    frames = None
                    self.errors += 1
                if frames is None:
                    self._l.sel.unregister(conn)
                    conns.pop(conn, None)
                    conn.close()
                    if c.on_closed is not None:
                        c.on_closed()
                    continue
                for frame in frames:
                    self.received += 1
                    try:
                        c.on_message(pickle.loads(frame))
                    except Exception:
                        self.errors += 1
        for conn in list(conns):
            conn.close()

    def close(self) -> None:
        self._l.close(self.thread)


class InboxWriter:
    """The model side: one connection to one client's inbox, used by one outbox lane thread.

    Has the two methods the lane calls on a thespian context (``tell``, ``exit_clone``).
    """

    def __init__(self, inbox: LocalInbox) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(inbox.path)
        except OSError:
            self._sock.close()
            raise

    @classmethod
    def over(cls, sock: socket.socket) -> InboxWriter:
        """A writer on a connection that already exists (a model's request door writes replies back on the
        connection a request came in on); it owns ``sock`` (a duplicate, closed by ``exit_clone``)."""
        w = cls.__new__(cls)
        w._sock = sock
        return w

    def tell(self, _dest: Any, msg: Any) -> None:
        self._sock.sendall(encode(msg))

    def try_send(self, frame: bytes) -> bytes:
        """Write what the socket takes now without blocking; returns the rest (empty: all of it went).

        Raises OSError for a dead reader (its inbox closed), like ``tell``."""
        view = memoryview(frame)
        while view:
            try:
                n = self._sock.send(view, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            view = view[n:]
        return bytes(view)

    def send_raw(self, data: bytes) -> None:
        """The rest of a frame ``try_send`` began (blocking)."""
        self._sock.sendall(data)

    def exit_clone(self) -> None:
        self._sock.close()


__all__ = ["FrameReader", "InboxServer", "InboxWriter", "LocalInbox", "PrivateListener", "encode", "host_id"]
