"""The client's one inbox: where every reply to this process arrives, routed to its request by ``req_id``.

Shared by the Python client (``actors.api.System``) and the HTTP server's
asyncio bridge (``actors.http.bridge``), which gives each request a sink of
its own instead of a queue.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from actors.model import messages as mm


class Inbox:
    """The client's one inbox: it always listens and routes replies by ``req_id``.

    Two doors, one routing table.  Every request names the thespian
    endpoint as ``reply_to`` (actors that answer by address, and the
    supervisor's ``model_crashed``), and model requests also carry the
    client's :class:`~actors.model.local_inbox.LocalInbox`: a model on this
    host writes the request's tokens and reply into that Unix socket, with
    no thespian acknowledgement per token.  Because both are always read,
    a sender never waits on us, and a late message for a finished request
    is simply dropped.  Sends go through a separate private context per
    calling thread.
    """

    def __init__(self, asys: Any, guard: Any = None,
                 tell_door_closed: Callable[[str, int], None] | None = None) -> None:
        """``guard``: an ``actors.supervisor.client_watch.RouteGuard``: requests sent through a supervisor that
        dies end with ``model_crashed`` (checked by the inbox thread), instead of waiting out their timeout.
        ``tell_door_closed(model, pid)``: how the door links tell the supervisor of a dead process
        (``actors.door_client``)."""
        from thespian.actors import ExternalContext

        from actors.door_client import DoorLinks
        from actors.model.local_inbox import InboxServer

        self._asys = asys
        self.guard = guard
        self.ctx = ExternalContext(asys._systemBase.external_clone())
        self.address = self.ctx._systemBase.transport.myAddress
        self._queues: dict[str, queue.SimpleQueue[Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._local = threading.local()
        self._senders: list[Any] = []
        self.local = InboxServer(self._route, fallback=self.address)
        self.doors = DoorLinks(self.local, self._route, tell_door_closed)  # generation straight into local models
        self.thread = threading.Thread(target=self._run, name="llama-actors-client-inbox", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.ctx.listen(0.2)
            except Exception:
                if self._stop.is_set():
                    return
                time.sleep(0.05)
                continue
            if msg is not None:
                self._route(msg)
            if self.guard is not None:
                from actors.supervisor.client_watch import CRASH_DETAIL

                for rid in self.guard.check():
                    self._route(mm.ErrorReply(rid, "model_crashed", CRASH_DETAIL))

    def _route(self, msg: Any) -> None:
        with self._lock:
            q = self._queues.get(getattr(msg, "req_id", None))
        if q is not None:
            q.put(msg)

    def open(self, req_id: str, sink: Any = None) -> None:
        """Route ``req_id``'s replies to ``sink.put(msg)`` (default: a queue ``recv`` reads).

        ``sink.put`` runs on the inbox thread and must not block (``actors.http.bridge``
        hands each message to an asyncio loop with ``call_soon_threadsafe``)."""
        with self._lock:
            self._queues[req_id] = queue.SimpleQueue() if sink is None else sink

    def finish(self, req_id: str) -> None:
        with self._lock:
            self._queues.pop(req_id, None)
        self.doors.finished(req_id)
        if self.guard is not None:
            self.guard.finished(req_id)

    def recv(self, req_id: str, timeout: float) -> Any:
        with self._lock:
            q = self._queues.get(req_id)
        if q is None:
            raise KeyError(f"request {req_id} is not open")
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no reply for request {req_id} within {timeout}s") from None

    def send(self, addr: Any, msg: Any) -> None:
        if isinstance(msg, mm.ModelRequest) and msg.inbox is None and msg.reply_to == self.address:
            msg = replace(msg, inbox=self.local.address)
        req_id = getattr(msg, "req_id", "")
        if self.guard is not None and req_id in self._queues:
            self.guard.sent(addr, req_id)
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            from thespian.actors import ExternalContext

            ctx = ExternalContext(self._asys._systemBase.external_clone())
            self._local.ctx = ctx
            with self._lock:
                self._senders.append(ctx)
        ctx.tell(addr, msg)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2.0)
        self.doors.close()
        self.local.close()
        with self._lock:
            senders, self._senders = self._senders, []
        for ctx in [*senders, self.ctx]:
            with contextlib.suppress(Exception):
                ctx.exit_clone()


__all__ = ["Inbox"]
