"""The ASGI application: routes, API-key check, CORS.

Starlette, not FastAPI: both wire formats are validated by hand into
typed calls (``openai_wire``, ``anthropic_wire``) so each API gets its
own documented error body; FastAPI's pydantic models and its 422 error
shape would be one more layer to undo.  Starlette is the small, well
kept core FastAPI itself is built on.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from actors.config import HttpSettings
from actors.http import anthropic_routes, openai_routes, ops_routes
from actors.http.errors import ApiError
from actors.http.respond import error_response
from actors.http.service import Gateway

OPEN_PATHS = ("/", "/health")


def key_of(headers: dict[bytes, bytes]) -> str | None:
    """The presented key: ``Authorization: Bearer <key>`` (OpenAI) or ``x-api-key`` (Anthropic)."""
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    key = headers.get(b"x-api-key")
    return key.decode("latin-1") if key else None


class ApiKeyCheck:
    """Refuse requests without a configured key (401 in the shape of the API the path belongs to)."""

    def __init__(self, app: ASGIApp, keys: tuple[bytes, ...]) -> None:
        self.app = app
        self.keys = keys

    def allowed(self, presented: str | None) -> bool:
        if presented is None:
            return False
        p = presented.encode("utf-8")
        return any(hmac.compare_digest(p, k) for k in self.keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        if self.allowed(key_of(dict(scope["headers"]))):
            await self.app(scope, receive, send)
            return
        api = "anthropic" if scope["path"].startswith("/v1/messages") else "openai"
        err = ApiError(401, "unauthorized", "a valid API key is required (Authorization: Bearer or x-api-key)")
        await error_response(err, api)(scope, receive, send)


def create_app(gateway: Gateway, settings: HttpSettings) -> Starlette:
    middleware = []
    if settings.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["*"]))
    keys = tuple(k.reveal() for k in settings.api_keys)
    middleware.append(Middleware(ApiKeyCheck, keys=keys))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await gateway.bridge.start()  # the loop's own inbox, before the first request
        try:
            yield
        finally:
            gateway.bridge.local.close()

    app = Starlette(routes=[*openai_routes.routes, *anthropic_routes.routes, *ops_routes.routes],
                    middleware=middleware, lifespan=lifespan)
    app.state.gateway = gateway
    return app


__all__ = ["create_app"]
