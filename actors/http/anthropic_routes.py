"""Anthropic routes: ``POST /v1/messages`` (plain and streamed) and ``/v1/messages/count_tokens``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.http import anthropic_wire as wire
from actors.http import sse
from actors.http.calls import prompt_count
from actors.http.errors import ApiError
from actors.http.respond import Generation, count, error_response, read_json, serve_generation, session_of, stream_error
from actors.http.service import Gateway, Prepared

ENDPOINT = "messages"


async def _events(p: Prepared, first: Any, events: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    enc = wire.MessageStream(p.call, p.rid, prompt_count(first, p.prompt_tokens))
    try:
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            # One write per model event: the start events and the first delta leave together.
            yield b"".join(sse.event(name, obj) for name, obj in [*enc.start(), *enc.feed(first)])
            async for ev in events:
                out = enc.feed(ev)
                if out:
                    yield b"".join(sse.event(name, obj) for name, obj in out)
    except ApiError as e:  # after the headers: the documented ``error`` event ends the stream
        yield stream_error(e, "anthropic")


MESSAGES = Generation("anthropic", ENDPOINT, lambda body, req: wire.messages_call(body, session_of(req)), _events,
                      wire.message_response)


async def messages(request: Request) -> Response:
    return await serve_generation(request, MESSAGES)


async def count_tokens(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    try:
        model, chat = wire.count_tokens_call(await read_json(request))
        n = await gw.count_tokens(model, chat)
        count(request, "messages.count_tokens", 200)
        return JSONResponse({"input_tokens": n})
    except ApiError as e:
        count(request, "messages.count_tokens", e.status)
        return error_response(e, "anthropic")


routes = [
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
