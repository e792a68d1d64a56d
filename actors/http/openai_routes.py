"""OpenAI routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.http import openai_wire as wire
from actors.http import sse
from actors.http.calls import prompt_count
from actors.http.errors import ApiError
from actors.http.respond import Generation, count, error_response, read_json, serve_generation, session_of, stream_error
from actors.http.service import Gateway, Prepared


def _gw(request: Request) -> Gateway:
    return request.app.state.gateway


async def _events(p: Prepared, first: Any, events: AsyncIterator[Any], text_completion: bool) -> AsyncIterator[bytes]:
    enc = wire.ChatStream(p.call, p.rid, prompt_count(first, p.prompt_tokens), text_completion=text_completion)
    try:
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            yield b"".join(sse.data(chunk) for chunk in enc.feed(first))  # one write per model event
            async for ev in events:
                out = enc.feed(ev)
                if out:
                    yield b"".join(sse.data(chunk) for chunk in out)
    except ApiError as e:  # a crash or a failure after the headers went out: an error event, never a hang
        yield stream_error(e, "openai")
    yield sse.DONE


CHAT = Generation("openai", "chat.completions",
                  lambda body, req: wire.chat_call(body, _gw(req).settings.default_max_tokens, session_of(req)),
                  lambda p, first, events: _events(p, first, events, text_completion=False), wire.chat_response)
COMPLETIONS = Generation("openai", "completions",
                         lambda body, req: wire.completion_call(body, _gw(req).settings.default_max_tokens,
                                                                session_of(req)),
                         lambda p, first, events: _events(p, first, events, text_completion=True),
                         wire.completion_response)


async def chat_completions(request: Request) -> Response:
    return await serve_generation(request, CHAT)


async def completions(request: Request) -> Response:
    return await serve_generation(request, COMPLETIONS)


async def embeddings(request: Request) -> Response:
    gw = _gw(request)
    try:
        model, inputs, fmt = wire.embedding_inputs(await read_json(request))
        with gw.admitted(model):
            vectors, n = await gw.embed(model, inputs)
        count(request, "embeddings", 200)
        return JSONResponse(wire.embeddings_response(model, vectors, n, fmt))
    except ApiError as e:
        count(request, "embeddings", e.status)
        return error_response(e, "openai")


async def list_models(request: Request) -> Response:
    try:
        return JSONResponse(wire.models_response(await _gw(request).models()))
    except ApiError as e:
        return error_response(e, "openai")


async def get_model(request: Request) -> Response:
    model = request.path_params["model"]
    try:
        found = [m for m in await _gw(request).models() if m["model_id"] == model]
        if not found:
            raise ApiError(404, "model_not_found", f"no model {model!r} is loaded", "model")
        return JSONResponse(wire.models_response(found)["data"][0])
    except ApiError as e:
        return error_response(e, "openai")


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
]
