"""Checks a request must pass before it is queued: pure functions, no backend state.

Everything here runs on the model's worker thread before admission, so a bad
value is answered with ``ErrorReply(reason, detail)`` at once and never
reaches llama.cpp.  Kept apart from the engine so the rules read in one place
and can be tested without a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.errors import ReasonError
from actors.model import messages as mm

MAX_STOP_SEQUENCES = 32
MAX_STOP_CHARS = 512


class RequestError(ReasonError):
    """A request rejected before admission; becomes ``ErrorReply(reason, detail)``."""


def check_token_ids(tokens: Any, n_vocab: int) -> list[int]:
    """A list of valid token ids, or ``bad_request`` (not a list) / ``bad_token`` (an id out of range)."""
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, (list, tuple)):
        raise RequestError("bad_request", "expected a list of token ids")
    out = list(tokens)
    if out and not (all(type(t) is int for t in out) and min(out) >= 0 and max(out) < n_vocab):
        bad = next(t for t in out if type(t) is not int or not 0 <= t < n_vocab)
        raise RequestError("bad_token", f"invalid token id {bad!r}")
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_options(opts: Any) -> mm.GenOptions:
    """The request's generation options, or ``bad_option`` naming the first bad field."""
    if not isinstance(opts, mm.GenOptions):
        raise RequestError("bad_option", "options must be GenOptions")
    if not _is_int(opts.max_tokens) or opts.max_tokens < 0:
        raise RequestError("bad_option", f"max_tokens: expected an int >= 0, got {opts.max_tokens!r}")
    if opts.session_id is not None and not isinstance(opts.session_id, str):
        raise RequestError("bad_option", "session_id must be a string")
    if opts.parent_key is not None and not isinstance(opts.parent_key, bytes):
        raise RequestError("bad_option", "parent_key must be bytes")
    if not isinstance(opts.sampler, dict):
        raise RequestError("bad_option", "sampler must be a dict of sampler options")
    check_stop_sequences(opts.stop_sequences)
    if opts.thinking not in ("enabled", "disabled"):
        raise RequestError("bad_option", f"thinking: expected 'enabled' or 'disabled', got {opts.thinking!r}")
    budget = opts.thinking_budget_tokens
    if budget is not None and not _is_int(budget):
        raise RequestError("bad_option", f"thinking_budget_tokens: expected an int, got {budget!r}")
    t = opts.timeout_s
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0):
        raise RequestError("bad_option", f"timeout_s: expected a number > 0, got {t!r}")
    return opts


def check_stop_sequences(stops: Any) -> Sequence[str]:
    if isinstance(stops, str) or not isinstance(stops, (tuple, list)) or not all(
            isinstance(x, str) and x for x in stops):
        raise RequestError("bad_option", "stop_sequences: expected a list of non-empty strings")
    if len(stops) > MAX_STOP_SEQUENCES or any(len(x) > MAX_STOP_CHARS for x in stops):
        raise RequestError("bad_option", f"stop_sequences: at most {MAX_STOP_SEQUENCES} strings of at most "
                                         f"{MAX_STOP_CHARS} characters")
    return stops


__all__ = ["RequestError", "check_options", "check_stop_sequences", "check_token_ids"]
