"""Thespian replies into asyncio: per-request asyncio queues fed by two doors, no thread per request.

A generation request goes straight into its model's process through the
process's request door (``actors.model.door``, one connection per process
kept by :class:`~actors.http.loop_inbox.LoopDoor`), and its events come back
on that connection; anything else, and a model without a door, goes through
the model supervisor.  A request sent that way names two return addresses.  Its stream and reply come through
the server's own Unix-socket inbox (:class:`~actors.http.loop_inbox.LoopInbox`),
which the event loop serves itself, so a token reaches its handler with no
thread hop.  What only thespian can deliver (the supervisor's
``model_crashed``, a model on another host) arrives at the attached
``System``'s inbox (``actors.inbox.Inbox``), whose thread hands it to the
loop with ``loop.call_soon_threadsafe`` (:class:`_LoopSink`).  Both land in
the same ``asyncio.Queue``, found by ``req_id``; a handler awaits it and
wakes when a message lands: no polling.

Sends go through one sender thread (``ThreadPoolExecutor(1)``): a
thespian ``tell`` from an external context blocks until the transport
has handed the message over, which must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from actors.api import System
from actors.errors import ErrorReply
from actors.http.errors import ApiError, from_reason
from actors.http.loop_inbox import LoopDoor, LoopInbox
from actors.model import messages as mm
from actors.model.door import CRASH_DETAIL, DOORLESS_PHASES, door_of

_STREAM_EVENTS = (mm.TokenChunk, mm.ThinkingEnd, mm.ToolCallEnd)
DOOR_RETRY_S = 0.5  # a model with no door when asked (loading, another host) is asked again after this long


def new_id() -> str:
    return uuid.uuid4().hex


async def next_message(queue: asyncio.Queue[Any], timeout: float) -> Any:
    """The next message of a request, or ``TimeoutError`` after ``timeout`` seconds.

    Not ``asyncio.wait_for``: on Python 3.11 it returns the item and drops the cancellation when a
    cancel lands in the same loop turn as a message (a client that disconnects while tokens flow),
    so the handler went on serving nobody and kept its queue place until the model finished (two
    CI flakes: the stub stayed busy after its clients left).  ``asyncio.timeout`` keeps the cancel."""
    async with asyncio.timeout(timeout):
        return await queue.get()


class _LoopSink:
    """Runs on the client inbox's thread: one ``call_soon_threadsafe`` per message, never blocks."""

    __slots__ = ("loop", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        self.loop = loop
        self.queue = queue

    def put(self, msg: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone, drop it
            self.loop.call_soon_threadsafe(self.queue.put_nowait, msg)


class Bridge:
    """Async request/reply and streaming over one attached ``System``."""

    def __init__(self, system: System) -> None:
        self.system = system
        self._mb = system.inbox()  # the client's inbox thread (started on first use)
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="llama-actors-http-send")
        self._queues: dict[str, asyncio.Queue[Any]] = {}  # req_id -> its queue; touched on the loop only
        self.local = LoopInbox(self._deliver, fallback=self._mb.address)
        self._doors: dict[str, LoopDoor] = {}  # model -> the open door of its current process (loop only)
        self._door_locks: dict[str, asyncio.Lock] = {}
        self._not_now: dict[tuple[str, int], float] = {}  # (model, pid) -> loop time to look for its door again

    async def start(self) -> None:
        """On the server's loop, before the first request: serve the loop's own inbox."""
        await self.local.start()

    def _deliver(self, msg: Any) -> None:
        """On the loop: a message from the loop inbox goes to its request (a late one is dropped)."""
        q = self._queues.get(getattr(msg, "req_id", None))  # type: ignore[arg-type]
        if q is not None:
            q.put_nowait(msg)

    def _send_now(self, msg: Any) -> None:
        """On the sender thread: ``dest`` may wait for a restarting tree (``System.tree``), which must
        never stall the event loop."""
        self._mb.send(self.dest, msg)

    @property
    def dest(self) -> Any:
        return self.system.tree.models

    def _open(self, msg: Any) -> tuple[Any, asyncio.Queue[Any]]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        if isinstance(msg, mm.ModelRequest) and self.local.address is not None:
            msg = replace(msg, reply_to=self._mb.address, inbox=self.local.address)
        else:
            msg = replace(msg, reply_to=self._mb.address)
        self._queues[msg.req_id] = queue
        self._mb.open(msg.req_id, _LoopSink(asyncio.get_running_loop(), queue))
        return msg, queue

    def _finish(self, req_id: str) -> None:
        self._queues.pop(req_id, None)
        self._mb.finish(req_id)
        for door in self._doors.values():
            door.requests.discard(req_id)

    # ------------------------------------------------------------------ request doors (actors.model.door)

    async def _door(self, model: str) -> LoopDoor | None:
        """The open door of ``model``'s current process (opened on first use), or None: another host, not
        ready, no door.  Which process: the shared-memory table's pid (no message)."""
        try:
            rec = self.system.observe(model)
        except Exception:
            return None
        if rec is None or rec.pid <= 0 or rec.phase in DOORLESS_PHASES:
            return None
        door = self._doors.get(model)
        if door is not None and door.pid == rec.pid and door.alive:
            return door
        loop = asyncio.get_running_loop()
        if self._not_now.get((model, rec.pid), 0.0) > loop.time():
            return None
        lock = self._door_locks.setdefault(model, asyncio.Lock())
        async with lock:  # one lookup and one connect per process, however many requests arrive meanwhile
            door = self._doors.get(model)
            if door is not None and door.pid == rec.pid and door.alive:
                return door
            try:
                addr = door_of((await self.call(mm.ListModels(new_id()), 30.0)).value, model)
                if addr is None:
                    raise OSError("no door")
                _, door = await loop.create_unix_connection(
                    lambda: LoopDoor(model, rec.pid, self._deliver, self._door_ended), addr.path)
            except (OSError, ApiError):
                self._not_now[(model, rec.pid)] = loop.time() + DOOR_RETRY_S
                return None
            self._doors[model] = door  # a door of an earlier process ends by itself, with that process
            return door

    def on_loop_received(self) -> int:
        """Messages this server's event loop read itself: its local inbox and its door connections."""
        return self.local.received + sum(d.received for d in self._doors.values())

    def open_doors(self) -> list[str]:
        """The models whose door this server holds open now."""
        return [m for m, d in self._doors.items() if d.alive]

    def _door_ended(self, door: LoopDoor, unanswered: tuple[str, ...]) -> None:
        """A door connection ended (its process died, or was unloaded).  What it carried unanswered ends
        ``model_crashed`` once the supervisor has been told (``mm.DoorClosed``: it handles the death at
        once, so a client that retries finds the model restarting, not the dead process)."""
        if self._doors.get(door.model) is door:
            del self._doors[door.model]
        if not unanswered:
            return

        def answer(_sent: Any) -> None:
            for rid in unanswered:
                self._deliver(ErrorReply(rid, "model_crashed", CRASH_DETAIL))

        loop = asyncio.get_running_loop()
        try:
            told = loop.run_in_executor(self._sender, self._send_now, mm.DoorClosed(door.model, door.pid))
        except RuntimeError:  # the sender is shut down: the server is stopping
            answer(None)
            return
        told.add_done_callback(answer)  # sent or failed, the requests end now

    async def _send(self, msg: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(self._sender, self._send_now, msg)

    def send_nowait(self, msg: Any) -> None:
        """Fire and forget (a cancel from a handler that is itself being cancelled)."""
        with contextlib.suppress(RuntimeError):
            self._sender.submit(self._send_now, msg)

    async def call(self, msg: Any, timeout: float = 60.0) -> Any:
        """One request, one reply; an ``ErrorReply`` raises :class:`ApiError`."""
        msg, queue = self._open(msg)
        try:
            await self._send(msg)
            try:
                reply = await next_message(queue, timeout)
            except TimeoutError:
                raise ApiError(504, "timeout", f"no reply from model {getattr(msg, 'model', '?')} "
                                               f"within {timeout:.0f} s") from None
        finally:
            self._finish(msg.req_id)
        if isinstance(reply, mm.ErrorReply):
            raise from_reason(reply.reason, reply.detail)
        return reply

    async def stream(self, msg: mm.Infer, idle_timeout: float = 600.0) -> AsyncIterator[Any]:
        """Yield ``TokenChunk`` / ``ThinkingEnd`` / ``ToolCallEnd``, then the final ``Completion``.

        An ``ErrorReply`` (a crash included: the supervisor answers every
        tracked request) raises :class:`ApiError`.  If the consumer stops
        early (client disconnect, cancellation), the request is cancelled
        in the model before this returns, so its sequence is freed.
        """
        msg, queue = self._open(msg)
        finished = sent = False
        door = None
        try:
            door = await self._door(msg.model)
            if door is None or not door.send(msg):
                door = None
                await self._send(msg)
            sent = True
            while True:
                try:
                    ev = await next_message(queue, idle_timeout)
                except TimeoutError:
                    raise ApiError(504, "timeout", f"model {msg.model} sent nothing for {idle_timeout:.0f} s") from None
                if isinstance(ev, _STREAM_EVENTS):
                    yield ev
                elif isinstance(ev, mm.Done):
                    finished = True
                    yield ev.result
                    return
                elif isinstance(ev, mm.ErrorReply):
                    finished = True
                    raise from_reason(ev.reason, ev.detail)
        finally:
            self._finish(msg.req_id)
            if sent and not finished:
                cancel = mm.Cancel(msg.model, new_id(), self._mb.address, target=msg.req_id)
                if door is None or not door.send(cancel):  # the way the request went, so it arrives after it
                    self.send_nowait(cancel)

    def close(self) -> None:
        for door in list(self._doors.values()):
            door.close()
        self._sender.shutdown(wait=True, cancel_futures=False)
        self.local.close()


__all__ = ["Bridge", "new_id", "next_message"]
