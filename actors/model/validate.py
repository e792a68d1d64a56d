"""Checks a request must pass before it is queued: pure functions, no backend state.

Everything here runs on the model's worker thread before admission, so a bad
value is answered with ``ErrorReply(reason, detail)`` at once and never
reaches llama.cpp.  Kept apart from the engine so the rules read in one place
and can be tested without a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from actors.cache.config import TIER_NAMES
from actors.errors import ReasonError
from actors.model import messages as mm
from actors.model.errors import OptionError
from actors.model.options import SamplerOptions, parse_sampler_options

MAX_STOP_SEQUENCES = 32
MAX_STOP_CHARS = 512
MAX_SESSION_ID_CHARS = 256
INT32_MAX = 2**31 - 1


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


def is_utf8_text(v: Any) -> bool:
    """A str that encodes to UTF-8: no lone surrogates (which Python strings may hold and C cannot take)."""
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(v: Any, what: str, reason: str = "bad_request") -> str:
    """A text the model can encode, or ``reason`` naming ``what`` (lone surrogates are the usual culprit)."""
    if not isinstance(v, str):
        raise RequestError(reason, f"{what}: expected a string, got {type(v).__name__}")
    if not is_utf8_text(v):
        raise RequestError(reason, f"{what}: not valid Unicode text (a lone surrogate?)")
    return v


def check_texts_deep(v: Any, what: str, depth: int = 0) -> None:
    """Every string inside nested lists/dicts encodes to UTF-8 (chat messages, tool specs)."""
    if depth > 32:
        raise RequestError("bad_request", f"{what}: nested too deeply")
    if isinstance(v, str):
        check_text(v, what)
    elif isinstance(v, dict):
        for k, x in v.items():
            check_texts_deep(k, what, depth + 1)
            check_texts_deep(x, what, depth + 1)
    elif isinstance(v, (list, tuple)):
        for x in v:
            check_texts_deep(x, what, depth + 1)


def check_session_id(sid: Any) -> str | None:
    """None, or a non-empty text of at most ``MAX_SESSION_ID_CHARS`` characters (``bad_option``)."""
    if sid is None:
        return None
    if not isinstance(sid, str) or not sid:
        raise RequestError("bad_option", "session_id must be a non-empty string")
    if len(sid) > MAX_SESSION_ID_CHARS:
        raise RequestError("bad_option", f"session_id: at most {MAX_SESSION_ID_CHARS} characters, got {len(sid)}")
    return check_text(sid, "session_id", "bad_option")


def check_tier(tier: Any, configured: Sequence[str] | None) -> str | None:
    """None (the cache's default), or one of the ``configured`` tiers (None: no cache, any known name)."""
    if tier is None:
        return None
    names = tuple(configured) if configured is not None else TIER_NAMES
    if not isinstance(tier, str) or tier not in names:
        where = "configured" if configured is not None else "known"
        raise RequestError("bad_option", f"tier: {tier!r} is not a {where} cache tier "
                                         f"(one of: {', '.join(names) or 'none'})")
    return tier


def check_options(opts: Any) -> mm.GenOptions:
    """The request's generation options, or ``bad_option`` naming the first bad field."""
    if not isinstance(opts, mm.GenOptions):
        raise RequestError("bad_option", "options must be GenOptions")
    if not _is_int(opts.max_tokens) or opts.max_tokens < 0:
        raise RequestError("bad_option", f"max_tokens: expected an int >= 0, got {opts.max_tokens!r}")
    if opts.max_tokens > INT32_MAX:
        raise RequestError("bad_option", f"max_tokens: at most {INT32_MAX}, got {opts.max_tokens}")
    check_session_id(opts.session_id)
    if opts.parent_key is not None and not isinstance(opts.parent_key, bytes):
        raise RequestError("bad_option", "parent_key must be bytes")
    for name in ("add_special", "parse_special", "cache"):
        if not isinstance(getattr(opts, name), bool):
            raise RequestError("bad_option", f"{name}: expected true or false, got {getattr(opts, name)!r}")
    if opts.tier is not None and not isinstance(opts.tier, str):
        raise RequestError("bad_option", f"tier: expected a tier name, got {opts.tier!r}")
    check_sampler(opts.sampler)
    check_stop_sequences(opts.stop_sequences)
    check_expect_committed(opts.expect_committed)
    if opts.thinking not in ("enabled", "disabled"):
        raise RequestError("bad_option", f"thinking: expected 'enabled' or 'disabled', got {opts.thinking!r}")
    budget = opts.thinking_budget_tokens
    if budget is not None and (not _is_int(budget) or not 0 <= budget <= INT32_MAX):
        raise RequestError("bad_option", f"thinking_budget_tokens: expected an int >= 0, got {budget!r}")
    t = opts.timeout_s
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0):
        raise RequestError("bad_option", f"timeout_s: expected a number > 0, got {t!r}")
    return opts


def check_sampler(sampler: Any) -> SamplerOptions:
    """The sampler options parsed (``options.parse_sampler_options``); ``bad_option`` naming the key."""
    if not isinstance(sampler, dict):
        raise RequestError("bad_option", "sampler must be a dict of sampler options")
    try:
        return parse_sampler_options(sampler)
    except OptionError as e:
        raise RequestError("bad_option", e.detail) from None


ON_FULL = ("queue", "error")
DEFAULT_MAX_PENDING = 1024


@dataclass(frozen=True)
class AdmissionLimits:
    """How many requests may wait for a sequence, and what a request that finds none free gets.

    ``on_full="queue"``: it waits in the FIFO (``pending``) while fewer than ``max_pending`` wait,
    beyond that it is refused with ``seq_capacity``.  ``on_full="error"``: a request that cannot
    start at once (no free sequence, or others already waiting) is refused with ``seq_capacity``.
    """

    max_pending: int = DEFAULT_MAX_PENDING
    on_full: str = "queue"


def check_limits(max_pending: Any, on_full: Any) -> AdmissionLimits:
    """A model's admission limits (``None``: the default), or ``bad_option`` naming the field."""
    if max_pending is None:
        max_pending = DEFAULT_MAX_PENDING
    if not _is_int(max_pending) or not 0 <= max_pending <= INT32_MAX:
        raise RequestError("bad_option", f"max_pending: expected an int >= 0, got {max_pending!r}")
    if on_full not in ON_FULL:
        raise RequestError("bad_option", f"on_full: expected one of {', '.join(ON_FULL)}, got {on_full!r}")
    return AdmissionLimits(max_pending, on_full)


DEFAULT_DECODE_BUDGET_MS = 60_000  # generous: a prefill slice of a large model on a few cores fits well within


def check_decode_budget(v: Any) -> int:
    """A model's per-decode budget in ms (None: the default, 0: unbounded), or ``bad_option``."""
    if v is None:
        return DEFAULT_DECODE_BUDGET_MS
    if not _is_int(v) or not 0 <= v <= INT32_MAX:
        raise RequestError("bad_option", f"decode_budget_ms: expected an int >= 0 (0: unbounded), got {v!r}")
    return v


def check_expect_committed(v: Any) -> int | tuple[int, ...] | None:
    """None, a token count, or a token list (the caller's view of what the model holds for it)."""
    if v is None:
        return None
    if _is_int(v):
        if not 0 <= v <= INT32_MAX:
            raise RequestError("bad_option", f"expect_committed: a count must be >= 0, got {v}")
        return v
    if isinstance(v, (list, tuple)) and all(_is_int(t) and 0 <= t <= INT32_MAX for t in v):
        return tuple(v)
    raise RequestError("bad_option", "expect_committed: expected a token count or a list of token ids")


def check_committed(expected: int | tuple[int, ...] | None, committed: Sequence[int]) -> None:
    """``transcript_mismatch`` unless the caller's view equals what the model holds (count or tokens)."""
    if expected is None:
        return
    if isinstance(expected, int):
        if expected != len(committed):
            raise RequestError("transcript_mismatch",
                               f"the caller expects {expected} committed tokens, the model holds {len(committed)}")
        return
    if tuple(expected) != tuple(committed):
        n = next((i for i, (a, b) in enumerate(zip(expected, committed, strict=False)) if a != b),
                 min(len(expected), len(committed)))
        raise RequestError("transcript_mismatch",
                           f"the caller's {len(expected)} committed tokens differ from the model's {len(committed)} "
                           f"from position {n}")


def check_stop_sequences(stops: Any) -> Sequence[str]:
    if isinstance(stops, str) or not isinstance(stops, (tuple, list)) or not all(
            is_utf8_text(x) and x for x in stops):
        raise RequestError("bad_option", "stop_sequences: expected a list of non-empty strings (valid Unicode)")
    if len(stops) > MAX_STOP_SEQUENCES or any(len(x) > MAX_STOP_CHARS for x in stops):
        raise RequestError("bad_option", f"stop_sequences: at most {MAX_STOP_SEQUENCES} strings of at most "
                                         f"{MAX_STOP_CHARS} characters")
    return stops


__all__ = ["AdmissionLimits", "RequestError", "check_committed", "check_decode_budget", "check_expect_committed",
           "check_limits",
           "check_options", "check_sampler", "check_session_id", "check_stop_sequences", "check_text",
           "check_texts_deep", "check_tier", "check_token_ids", "is_utf8_text"]
