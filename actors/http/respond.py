"""Shared response plumbing of the routes: JSON bodies in, errors out, event streams that clean up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from actors.http import sse
from actors.http.calls import GenCall
from actors.http.errors import ApiError, anthropic_body, anthropic_status, openai_body
from actors.http.service import Gateway, Prepared
from actors.model import messages as mm

MAX_BODY = 32 << 20
T = TypeVar("T")
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


class EventStream(StreamingResponse):
    """An SSE response that notices a client going away even while no event is due (a long prefill),
    cancels its body generator at once (so the model request is cancelled), and runs ``on_close``
    however it ends: finished, client gone, or never started."""

    def __init__(self, body: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(body, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
        self._body = body
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(self.stream_response(send))
        watch = asyncio.ensure_future(client_gone(receive))
        try:
            await asyncio.wait({stream, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stream, watch):
                task.cancel()
            results = await asyncio.gather(stream, watch, return_exceptions=True)
            try:
                await self._body.aclose()  # type: ignore[attr-defined]
            finally:
                self._on_close()
        if isinstance(results[0], Exception) and not isinstance(results[0], OSError):
            raise results[0]  # a bug in the stream itself, not a client that left


async def client_gone(receive: Receive) -> None:
    """Returns when the client disconnects (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None when the client disconnects first; then ``work`` is cancelled, which
    cancels the model request (a non-streaming client that gave up must not keep a sequence busy)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(client_gone(request.receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, watch, return_exceptions=True)
    return None if task.cancelled() else task.result()


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
    try:
        call = g.parse(await read_json(request), request)
        gw.check_model(call.model)
        release = gw.acquire(call.model)
        p = gw.prepare(call)
        if call.stream:
            events = gw.generate(p, g.endpoint)
            try:
                first = await unless_client_leaves(request, anext(events))
            except StopAsyncIteration:
                raise ApiError(500, "bad_reply", "the model ended the request without a result") from None
            if first is None:
                await events.aclose()  # type: ignore[attr-defined]
                count(request, g.endpoint, 499)
                return Response(status_code=499)
            count(request, g.endpoint, 200)
            stream = EventStream(g.events(p, first, events), release)
            release = None  # the stream owns the place now, and gives it back however it ends
            return stream
        result = await unless_client_leaves(request, gw.complete(p, g.endpoint))
        if result is None:
            count(request, g.endpoint, 499)  # the client went away; nothing to answer
            return Response(status_code=499)
        count(request, g.endpoint, 200)
        return JSONResponse(g.reply(call, result, p.prompt_tokens, p.rid))
    except ApiError as e:
        count(request, g.endpoint, e.status)
        return error_response(e, g.api)
    finally:
        if release is not None:
            release()


__all__ = ["EventStream", "Generation", "count", "error_response", "read_json", "serve_generation", "session_of",
           "stream_error"]
