"""HTTP errors and the error bodies each API documents (pure).

Every failure inside the server is an :class:`ApiError` carrying an HTTP
status, a machine-readable ``code`` (the model actor's ``reason`` where it
came from one) and a message.  The route that caught it renders it in its
API's shape: OpenAI ``{"error": {"message", "type", "param", "code"}}``,
Anthropic ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The model actor's reasons (actors.model.messages.ErrorReply) and their HTTP status.
_REASON_STATUS = {
    "bad_option": 400, "bad_request": 400, "bad_token": 400, "bad_grammar": 400, "context_overflow": 400,
    "embeddings_disabled": 400, "no_session": 400, "not_supported": 400,
    "unauthorized": 401,
    "no_such_model": 404, "not_found": 404,
    "sticky_busy": 409, "transcript_mismatch": 409,
    "payload_too_large": 413,
    "overloaded": 429, "session_pool_full": 429, "busy": 429, "seq_capacity": 429,
    "model_crashed": 500, "internal_error": 500, "bad_reply": 500,
    "model_stopping": 503, "model_not_ready": 503, "aborted": 503, "context_reset": 503,
    "timeout": 504, "decode_timeout": 504,
}

# OpenAI error ``type`` by status.
_OPENAI_TYPE = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                409: "conflict_error", 413: "invalid_request_error", 429: "rate_limit_error"}
# Anthropic error ``type`` by status (https://docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPE = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 409: "invalid_request_error", 413: "request_too_large",
                   429: "rate_limit_error", 500: "api_error", 503: "overloaded_error", 504: "api_error",
                   529: "overloaded_error"}


@dataclass
class ApiError(Exception):
    """A request failed: ``status`` for the response, ``code`` machine-readable, ``param`` the field at fault."""

    status: int
    code: str
    message: str
    param: str | None = None
    retry_after_s: float | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def from_reason(reason: str, detail: str = "") -> ApiError:
    """The ApiError for a model actor's ``ErrorReply(reason, detail)``."""
    status = _REASON_STATUS.get(reason, 500)
    code = "context_length_exceeded" if reason == "context_overflow" else reason
    return ApiError(status, code, detail or reason)


def openai_body(err: ApiError) -> dict[str, Any]:
    etype = _OPENAI_TYPE.get(err.status, "server_error" if err.status >= 500 else "invalid_request_error")
    return {"error": {"message": err.message, "type": etype, "param": err.param, "code": err.code}}


def anthropic_status(err: ApiError) -> int:
    """Anthropic answers an overloaded server with 529, not 429."""
    return 529 if err.code == "overloaded" else err.status


def anthropic_body(err: ApiError) -> dict[str, Any]:
    status = anthropic_status(err)
    etype = _ANTHROPIC_TYPE.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": etype, "message": f"{err.code}: {err.message}"}}


def bad_request(message: str, param: str | None = None, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message, param)


__all__ = ["ApiError", "anthropic_body", "anthropic_status", "bad_request", "from_reason", "openai_body"]
