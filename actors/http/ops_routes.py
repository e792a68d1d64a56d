"""Operations routes: ``/health``, ``/metrics``, ``/api/state`` and the page at ``/``."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from actors.http.errors import ApiError
from actors.http.metrics import CONTENT_TYPE
from actors.http.respond import error_response
from actors.http.service import Gateway

PAGE = Path(__file__).with_name("static") / "index.html"


def _gw(request: Request) -> Gateway:
    return request.app.state.gateway


async def health(request: Request) -> Response:
    """200 when every model is ready, 503 otherwise; the body has each model's state and phase."""
    try:
        ok, body = await _gw(request).health()
    except ApiError as e:
        return error_response(e, "openai")
    return JSONResponse(body, 200 if ok else 503)


async def metrics(request: Request) -> Response:
    return Response(_gw(request).metrics.render(), media_type=CONTENT_TYPE)


async def state(request: Request) -> Response:
    try:
        return JSONResponse(await _gw(request).state())
    except ApiError as e:
        return error_response(e, "openai")


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))


routes = [
    Route("/", page, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/api/state", state, methods=["GET"]),
]
