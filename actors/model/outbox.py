"""Sending from a model's worker thread without blocking the decode loop.

Thespian's ``Actor.send`` is not thread-safe, and under TCP a message
sent inside a handler mostly leaves only after the handler returns.  So
the worker thread never touches the actor's transport: it posts events
here, and one sender thread per destination ("lane") delivers them
through its own external ``ActorSystem`` context, or, for a client that
gave a :class:`~actors.model.local_inbox.LocalInbox` on this host, through
a Unix socket to that client (no acknowledgement, microseconds a message).

Per-destination lanes mean a slow or stalled subscriber (thespian's
``tell`` waits for the receiver's acknowledgement) only delays its own
stream.  Backpressure is coalescing, never dropping: while a lane is
busy, consecutive ``TokenChunk``s of one request merge into one message
(text concatenated, ids appended), and ``RequestDone`` notices merge, so
a lane's backlog stays one message per request however slow the reader.

Notices nobody waits on (``RequestDone`` to the supervisor, the cache
client's ``RamRowsChanged`` and ``Touch`` to the cache meta) are *lazy*: a
lane holding only lazy messages waits up to ``LINGER_S`` for more, then
sends them merged.  Profiled on a stub model (no compute), each message
cost its sender thread, its receiver and thespian's acknowledgement ~1 ms
of CPU on a busy two-core machine, and a plain request sent five of them
beside its reply; every one of those cycles is taken from llama.cpp's
threads.  Anything eager in the lane sends the lazy ones before it, in
order, and ``flush``/``close`` send everything at once.

A lane to a client's local inbox is also written from the posting thread itself when it is idle
(nothing queued, nothing being sent): one non-blocking write of the frame, no thread woken.  A
streamed token used to wake the lane's thread, which then ran beside llama.cpp's threads between
two steps, on a core one of them was spinning on; only a write the socket will not take at once
(a slow reader, a full buffer) goes on through the thread, whole frames and order kept.

A lane whose send fails (the reader is gone: its local inbox closed, its address dead) reports
each message it could not deliver; the model actor cancels the request a stream event was
for, so a client that went away stops holding a sequence within a tick.  A crash inside the
linger costs nothing: the supervisor then answers ``model_crashed`` for a
request that already had its reply, which callers ignore (documented).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from actors.cache.messages import RamRowsChanged, Touch
from actors.model.door import DoorPeer
from actors.model.local_inbox import InboxWriter, LocalInbox, encode
from actors.model.messages import RequestDone, TokenChunk

IDLE_LANE_S = 60.0
LINGER_S = 0.1
LAZY: tuple[type, ...] = (RequestDone, RamRowsChanged, Touch)


def is_lazy(msg: Any) -> bool:
    return isinstance(msg, LAZY)


def coalesce(items: list[Any]) -> list[Any]:
    """Merge runs of token chunks per request (of one kind), and of done notices; order is otherwise kept."""
    out: list[Any] = []
    open_chunk: dict[str, int] = {}
    for msg in items:
        if isinstance(msg, TokenChunk):
            i = open_chunk.get(msg.req_id)
            if i is not None and out[i].kind == msg.kind:
                prev = out[i]
                out[i] = TokenChunk(msg.req_id, prev.text + msg.text, prev.token_ids + msg.token_ids, prev.ts,
                                    prev.kind, prev.prompt_tokens)
                continue
            open_chunk[msg.req_id] = len(out)
            out.append(msg)
            continue
        if isinstance(msg, RequestDone) and out and isinstance(out[-1], RequestDone):
            out[-1] = RequestDone(out[-1].req_ids + msg.req_ids)
            continue
        if isinstance(msg, RamRowsChanged) and out and isinstance(out[-1], RamRowsChanged) and (
                out[-1].client_id == msg.client_id):
            out[-1] = merge_ram_changes(out[-1], msg)
            continue
        if isinstance(msg, Touch) and out and out[-1] == msg:
            continue
        # Anything else for a request closes its open chunk (a Done must follow its tokens).
        rid = getattr(msg, "req_id", None)
        if rid is not None:
            open_chunk.pop(rid, None)
        out.append(msg)
    return out


def merge_ram_changes(first: RamRowsChanged, then: RamRowsChanged) -> RamRowsChanged:
    """One change equal to applying ``first`` then ``then`` (the meta removes before it adds).

    A row added by ``first`` and removed by ``then`` is left out of the adds; every removal is kept
    (the row may have been known before ``first``), and a row removed then added again stays added.
    """
    gone = set(then.removed)
    added = tuple(r for r in first.added if r.key not in gone) + then.added
    return RamRowsChanged(first.client_id, added, first.removed + then.removed)


class _Rest:
    """The unsent end of a frame the posting thread began writing: the lane thread sends it next."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _Lane:
    def __init__(self, dest: Any, make_ctx: Callable[[Any], tuple[Any, Any]],
                 on_error: Callable[[Any, Exception], None], writer: InboxWriter | None = None) -> None:
        self.dest = dest
        self.writer = writer  # a local inbox's socket, opened by the poster: the lane may write it directly
        self.direct = 0  # messages the posting thread wrote itself
        self.last_post = time.monotonic()
        self.items: deque[Any] = deque()
        self.cv = threading.Condition()
        self.closed = False
        self.busy = False
        self.flushing = False  # a drain is waiting: lazy messages leave now
        self._make_ctx = make_ctx
        self._on_error = on_error
        self.sent = 0
        self.thread = threading.Thread(target=self._run, name="outbox-lane", daemon=True)
        self.thread.start()

    def post(self, msg: Any) -> bool:
        with self.cv:
            if self.closed:
                return False
            self.last_post = time.monotonic()
            if self.writer is not None and not self.items and not self.busy:
                try:
                    rest = self.writer.try_send(encode(msg))
                except OSError:
                    rest = None  # a dead reader: the thread's send reports it, as for any message
                if rest is not None:
                    self.direct += 1
                    if not rest:
                        self.sent += 1
                        return True
                    self.items.append(_Rest(rest))
                    self.cv.notify()
                    return True
            self.items.append(msg)
            self.cv.notify()
            return True

    def _run(self) -> None:
        ctx = None
        try:
            try:
                ctx, target = (self.writer, self.dest) if self.writer is not None else self._make_ctx(self.dest)
            except Exception as e:  # no way to the receiver (a door connection already closed): report them all
                with self.cv:
                    lost = list(self.items)
                    self.items.clear()
                for msg in lost:
                    self._on_error(msg, e)
                return
            while True:
                with self.cv:
                    while not self.items and not self.closed:
                        left = self.last_post + IDLE_LANE_S - time.monotonic()  # direct writes keep it open
                        if left <= 0:
                            self.closed = True
                            break
                        self.cv.wait(left)
                    if not self.items:
                        return
                    linger_end = time.monotonic() + LINGER_S
                    while (not self.closed and not self.flushing and all(is_lazy(m) for m in self.items)
                           and time.monotonic() < linger_end):
                        self.cv.wait(max(0.0, linger_end - time.monotonic()))
                    batch = list(self.items)
                    self.items.clear()
                    self.busy = True
                for msg in coalesce(batch):
                    try:
                        if isinstance(msg, _Rest):
                            ctx.send_raw(msg.data)
                            continue  # counted when its frame was begun
                        ctx.tell(target, msg)
                        self.sent += 1
                    except Exception as e:  # dead receiver: report, keep the lane for the others
                        self._on_error(msg, e)
                with self.cv:
                    self.busy = False
                    self.cv.notify_all()
        finally:
            with self.cv:
                self.closed = True
                self.busy = False
                self.cv.notify_all()
            if ctx is not None:
                with contextlib.suppress(Exception):
                    ctx.exit_clone()

    def drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cv:
            self.flushing = True
            self.cv.notify_all()
            try:
                while self.items or self.busy:
                    left = deadline - time.monotonic()
                    if left <= 0 or (self.closed and not self.items):
                        return not self.items
                    self.cv.wait(left)
            finally:
                self.flushing = False
        return True

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify_all()


class Outbox:
    """Thread-safe ``post(dest, msg)``; delivery order is kept per destination.

    ``undeliverable(msg)`` is told of every message a lane could not deliver (its receiver is gone:
    a closed local inbox, a dead address), so the model can stop work nobody will read.
    """

    def __init__(self, admin_port: int, undeliverable: Callable[[Any], None] | None = None) -> None:
        self.admin_port = admin_port
        self._undeliverable = undeliverable
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()
        self._base: Any = None
        self.errors = 0
        self.last_error = ""

    def _make_ctx(self, dest: Any) -> tuple[Any, Any]:
        """A sender for one lane and the address it sends to: a client's local inbox socket when it can
        be reached from here, else a thespian context (for a local inbox, to the address it falls back to)."""
        if isinstance(dest, DoorPeer):  # the connection a request came in on: no other way back
            return dest.writer(), dest
        if isinstance(dest, LocalInbox):
            writer = self._local_writer(dest)
            if writer is not None:
                return writer, dest
            dest = dest.fallback
        from thespian.actors import ActorSystem, ExternalContext

        with self._lock:
            if self._base is None:
                self._base = ActorSystem("multiprocTCPBase", {"Admin Port": self.admin_port}, transientUnique=True)
            return ExternalContext(self._base._systemBase.external_clone()), dest

    def _local_writer(self, dest: Any) -> InboxWriter | None:
        """A connected writer for a local inbox this process can reach (a connect: microseconds), else None
        (the lane then sends to the inbox's thespian fallback)."""
        try:
            if isinstance(dest, DoorPeer):
                return dest.writer()
            if isinstance(dest, LocalInbox) and dest.reachable():
                return InboxWriter(dest)
        except OSError as e:
            self._error(dest, e)
        return None

    def _error(self, msg: Any, exc: Exception) -> None:
        self.errors += 1
        self.last_error = f"{type(msg).__name__}: {exc!r}"
        if self._undeliverable is not None:
            with contextlib.suppress(Exception):
                self._undeliverable(msg)

    def post(self, dest: Any, msg: Any) -> None:
        if dest is None:
            return
        key = str(dest)
        for _ in range(3):
            with self._lock:
                lane = self._lanes.get(key)
                if lane is None or lane.closed:
                    lane = self._lanes[key] = _Lane(dest, self._make_ctx, self._error, self._local_writer(dest))
            if lane.post(msg):
                return
        self._error(msg, RuntimeError("no lane accepted the message"))

    def flush(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            lanes = list(self._lanes.values())
        return all(lane.drain(max(0.0, deadline - time.monotonic())) for lane in lanes)

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        with self._lock:
            lanes = list(self._lanes.values())
            self._lanes.clear()
        for lane in lanes:
            lane.close()
