"""Shared response plumbing of the routes: JSON bodies in, errors out, event streams that clean up."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from actors.http import sse
from actors.http.calls import GenCall
from actors.http.errors import ApiError, anthropic_body, anthropic_status, openai_body
from actors.http.service import Gateway, Prepared
from actors.model import messages as mm

MAX_BODY = 32 << 20
SESSION_HEADERS = ("x-session-id", "x-llama-actors-session")


async def read_json(request: Request) -> Any:
    """The body as JSON, or ApiError 400 (413 beyond ``MAX_BODY``)."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"request body over {MAX_BODY} bytes")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"request body over {MAX_BODY} bytes")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {e}") from None


def count(request: Request, endpoint: str, status: int) -> None:
    """One request in the ``llama_actors_http_requests`` series."""
    request.app.state.gateway.metrics.requests.labels(endpoint, str(status)).inc()


def session_of(request: Request) -> str | None:
    for h in SESSION_HEADERS:
        v = request.headers.get(h)
        if v:
            return v
    return None


def error_response(err: ApiError, api: str) -> JSONResponse:
    headers = {"Retry-After": str(err.retry_after_s)} if err.retry_after_s is not None else None
    if api == "anthropic":
        return JSONResponse(anthropic_body(err), anthropic_status(err), headers=headers)
    return JSONResponse(openai_body(err), err.status, headers=headers)


def stream_error(err: ApiError, api: str) -> bytes:
    """The error event that ends a stream whose headers are already out (a crash mid-stream)."""
    if api == "anthropic":
        return sse.event("error", anthropic_body(err))
    return sse.data(openai_body(err))


class ClientGone(Exception):
    """The client disconnected while its request was being served."""


class ClientWatch:
    """Notices a client going away at any time, and cancels the task it guards at once.

    One watcher per request, from the first byte of the body to the last
    event: while the model prefills (no event due yet) and while the
    stream is written.  It cancels the guarded task itself rather than
    racing it against the work with ``asyncio.wait``: the work stays in
    the handler's own task, so the first event reaches the socket with no
    task switch on the way (each one costs a loop turn on a machine whose
    cores the model is using at that moment).
    """

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._holder: asyncio.Task[Any] | None = None
        self._task = asyncio.ensure_future(client_gone(receive))
        self._task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Future[None]) -> None:
        if task.cancelled():
            return
        task.exception()  # retrieved: a receive that failed means the connection is gone too
        self.gone = True
        if self._holder is not None:
            self._holder.cancel()

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run the block in this task; raise :class:`ClientGone` if the client leaves during it."""
        if self.gone:
            raise ClientGone
        task = asyncio.current_task()
        assert task is not None
        self._holder = task
        try:
            yield
        except asyncio.CancelledError:
            if self.gone and task.uncancel() == 0:  # our cancel, not the server's shutdown
                raise ClientGone from None
            raise
        finally:
            self._holder = None

    def close(self) -> None:
        self._task.cancel()


async def client_gone(receive: Receive) -> None:
    """Returns when the client disconnects (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class EventStream(StreamingResponse):
    """An SSE response written from the handler's task under the request's :class:`ClientWatch`; a client
    that leaves cancels the body generator at once (so the model request is cancelled), and ``on_close``
    runs however it ends: finished, client gone, or never started."""

    def __init__(self, body: AsyncIterator[bytes], on_close: Callable[[], None], watch: ClientWatch) -> None:
        super().__init__(body, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
        self._body = body
        self._on_close = on_close
        self._watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with self._watch.guard():
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                async for chunk in self._body:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (ClientGone, OSError):
            pass  # the client left: nothing more to write
        finally:
            self._watch.close()
            try:
                await self._body.aclose()  # type: ignore[attr-defined]
            finally:
                self._on_close()


@dataclass(frozen=True)
class Generation:
    """How one API serves a generation route: its name (error shape), body parser, stream and reply."""

    api: str
    endpoint: str
    parse: Callable[[Any, Request], GenCall]
    events: Callable[[Prepared, Any, AsyncIterator[Any]], AsyncIterator[bytes]]  # (prepared, first event, rest)
    reply: Callable[[GenCall, mm.Completion, int, str], dict[str, Any]]


async def serve_generation(request: Request, g: Generation) -> Response:
    """The one path of every generation route: parse, check the model, take a place in its queue
    (429 when full), then stream or answer once; errors in the API's shape.

    A stream's headers wait for the model's first event: a request the model refuses (context
    overflow, a bad chat, a full queue) is answered with its 4xx status, not a 200 and an error event,
    and the first bytes go out when they would anyway (the first token)."""
    gw: Gateway = request.app.state.gateway
    release = None
    watch = None
    try:
        call = g.parse(await read_json(request), request)
        gw.check_model(call.model)
        release = gw.acquire(call.model)
        p = gw.prepare(call)
        watch = ClientWatch(request.receive)
        if call.stream:
            events = gw.generate(p, g.endpoint)
            try:
                with watch.guard():
                    first = await anext(events)
            except StopAsyncIteration:
                raise ApiError(500, "bad_reply", "the model ended the request without a result") from None
            except ClientGone:
                await events.aclose()  # type: ignore[attr-defined]
                count(request, g.endpoint, 499)
                return Response(status_code=499)
            count(request, g.endpoint, 200)
            stream = EventStream(g.events(p, first, events), release, watch)
            release = watch = None  # the stream owns the place and the watch now, and ends both however it ends
            return stream
        try:
            with watch.guard():
                result = await gw.complete(p, g.endpoint)
        except ClientGone:
            count(request, g.endpoint, 499)  # the client went away; nothing to answer
            return Response(status_code=499)
        count(request, g.endpoint, 200)
        return JSONResponse(g.reply(call, result, p.prompt_tokens, p.rid))
    except ApiError as e:
        count(request, g.endpoint, e.status)
        return error_response(e, g.api)
    finally:
        if watch is not None:
            watch.close()
        if release is not None:
            release()


__all__ = ["ClientGone", "ClientWatch", "EventStream", "Generation", "count", "error_response", "read_json",
           "serve_generation", "session_of", "stream_error"]
