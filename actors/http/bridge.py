"""Thespian replies into asyncio: the client's one inbox, per-request asyncio queues.

The HTTP server is a client of the actor tree like ``actors.api.System``
and uses that client's inbox (``actors.inbox.Inbox``): it always listens (the
thespian endpoint, and the local Unix-socket inbox models on this host
write tokens into) and routes each reply by ``req_id``.  Here a request's
route is a :class:`_LoopSink`, whose ``put`` (run on the inbox's thread)
hands the message to the event loop with ``loop.call_soon_threadsafe``
into that request's ``asyncio.Queue``.  So there is no thread per request
and no polling: a handler awaits its queue and wakes when a message lands.

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
from actors.http.errors import ApiError, from_reason
from actors.model import messages as mm

_STREAM_EVENTS = (mm.TokenChunk, mm.ThinkingEnd, mm.ToolCallEnd)


def new_id() -> str:
    return uuid.uuid4().hex


class _LoopSink:
    """Runs on the inbox thread: one ``call_soon_threadsafe`` per message, never blocks."""

    __slots__ = ("loop", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def put(self, msg: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone, drop it
            self.loop.call_soon_threadsafe(self.queue.put_nowait, msg)


class Bridge:
    """Async request/reply and streaming over one attached ``System``."""

    def __init__(self, system: System) -> None:
        self.system = system
        self._mb = system.inbox()  # the client's inbox thread (started on first use)
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="llama-actors-http-send")

    def _send_now(self, msg: Any) -> None:
        """On the sender thread: ``dest`` may wait for a restarting tree (``System.tree``), which must
        never stall the event loop."""
        self._mb.send(self.dest, msg)

    @property
    def dest(self) -> Any:
        return self.system.tree.models

    def _open(self, msg: Any) -> tuple[Any, _LoopSink]:
        sink = _LoopSink(asyncio.get_running_loop())
        msg = replace(msg, reply_to=self._mb.address)
        self._mb.open(msg.req_id, sink)
        return msg, sink

    async def _send(self, msg: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(self._sender, self._send_now, msg)

    def send_nowait(self, msg: Any) -> None:
        """Fire and forget (a cancel from a handler that is itself being cancelled)."""
        with contextlib.suppress(RuntimeError):
            self._sender.submit(self._send_now, msg)

    async def call(self, msg: Any, timeout: float = 60.0) -> Any:
        """One request, one reply; an ``ErrorReply`` raises :class:`ApiError`."""
        msg, sink = self._open(msg)
        try:
            await self._send(msg)
            try:
                reply = await asyncio.wait_for(sink.queue.get(), timeout)
            except asyncio.TimeoutError:
                raise ApiError(504, "timeout", f"no reply from model {getattr(msg, 'model', '?')} "
                                               f"within {timeout:.0f} s") from None
        finally:
            self._mb.finish(msg.req_id)
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
        msg, sink = self._open(msg)
        finished = False
        try:
            await self._send(msg)
            while True:
                try:
                    ev = await asyncio.wait_for(sink.queue.get(), idle_timeout)
                except asyncio.TimeoutError:
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
            self._mb.finish(msg.req_id)
            if not finished:
                self.send_nowait(mm.Cancel(msg.model, new_id(), self._mb.address, target=msg.req_id))

    def close(self) -> None:
        self._sender.shutdown(wait=True, cancel_futures=False)


__all__ = ["Bridge", "new_id"]
