"""When to save, and how many tokens to save.

Pure functions over token counts.  The model actor decides *whether* to
call ``CacheClient.save``; these helpers make the decision consistent
and testable.  ``save`` itself never applies the policy, so operators
and tests can store any row they like.

Why trim and align: the tail of a rendered prompt (chat-template
assistant header, generation prompt) is usually re-rendered differently
on the next turn.  Saving at ``n - boundary_trim_tokens`` rounded down to
a multiple of ``boundary_align_tokens`` produces rows whose tokens the
next turn's prompt still shares, and block-aligned rows are matched by
whole blocks with no extension work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TypeVar

from actors.cache.kvc import SaveReason

T = TypeVar("T")


class PolicyError(ValueError):
    """Invalid save policy; ``field`` names the offending setting."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class SavePolicy:
    """Save gates and boundary shaping.

    min_tokens: no row shorter than this is worth a file (restoring costs
        more than recomputing).
    cold_min_tokens / cold_max_tokens: a cold (first-prefill) save fires
        only for prompts of at least ``cold_min_tokens`` and covers at
        most ``cold_max_tokens`` of them.
    continued_interval: during long generations save again every this
        many tokens past the last save; 0 disables continued saves.
    boundary_trim_tokens / boundary_align_tokens: see module docstring.
    """

    min_tokens: int = 64
    cold_min_tokens: int = 256
    cold_max_tokens: int = 32768
    continued_interval: int = 2048
    boundary_trim_tokens: int = 32
    boundary_align_tokens: int = 32

    def validate(self) -> SavePolicy:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise PolicyError(f.name, f"must be an int, got {type(value).__name__}")
            if value < 0:
                raise PolicyError(f.name, f"must be >= 0, got {value}")
        if self.min_tokens < 1:
            raise PolicyError("min_tokens", "must be >= 1")
        if self.boundary_align_tokens < 1:
            raise PolicyError("boundary_align_tokens", "must be >= 1")
        if self.cold_min_tokens < self.min_tokens:
            raise PolicyError("cold_min_tokens", f"{self.cold_min_tokens} is below min_tokens {self.min_tokens}")
        if self.cold_max_tokens < self.cold_min_tokens:
            raise PolicyError(
                "cold_max_tokens", f"{self.cold_max_tokens} is below cold_min_tokens {self.cold_min_tokens}"
            )
        if self.cold_max_tokens < self.boundary_align_tokens:
            raise PolicyError(
                "cold_max_tokens",
                f"{self.cold_max_tokens} is below boundary_align_tokens {self.boundary_align_tokens}",
            )
        if 0 < self.continued_interval < self.boundary_align_tokens:
            raise PolicyError(
                "continued_interval",
                f"{self.continued_interval} is below boundary_align_tokens {self.boundary_align_tokens}",
            )
        return self


def align_down(n: int, align: int) -> int:
    return n - n % align if n > 0 else 0


def trimmed_length(policy: SavePolicy, n_tokens: int) -> int:
    """Save length for an ``n_tokens`` context: trimmed, aligned, never above n."""
    return align_down(max(n_tokens - policy.boundary_trim_tokens, 0), policy.boundary_align_tokens)


def cold_save_length(policy: SavePolicy, n_prompt: int) -> int:
    """Tokens covered by the cold save for a prompt, or 0 when no cold save fires."""
    if n_prompt < policy.cold_min_tokens:
        return 0
    n = min(trimmed_length(policy, n_prompt), align_down(policy.cold_max_tokens, policy.boundary_align_tokens))
    return n if n >= policy.min_tokens else 0


def cold_split(policy: SavePolicy, tokens: Sequence[T]) -> tuple[Sequence[T], Sequence[T]] | None:
    """Split a cold prompt into (prefix to prefill then save, remainder).

    The save must fire between the two prefills so the row holds exactly
    the aligned prefix; ``prefix + rest == tokens`` always.
    """
    n = cold_save_length(policy, len(tokens))
    if n == 0:
        return None
    return tokens[:n], tokens[n:]


def prompt_row_due(policy: SavePolicy, n_prompt: int, n_restored: int) -> bool:
    """Whether a request's whole prompt (with its last logits: an exact hit later) is worth a row.

    For a cold prompt (nothing restored) of at least ``min_tokens``, and after a restored prefix only
    when the request evaluated at least ``cold_min_tokens`` more. A chat turn that restored its
    conversation and evaluated one new message gets no prompt row: its finish row holds the same
    prefix for the next turn, a resend of the same prompt re-evaluates only that message, and the
    row would cost a second copy of the whole context per request (llama-server saves once a turn).
    """
    if n_prompt < policy.min_tokens:
        return False
    return n_restored <= 0 or n_prompt - n_restored >= policy.cold_min_tokens


def should_save(
    policy: SavePolicy,
    reason: SaveReason | str,
    n_tokens: int,
    last_saved_tokens: int = 0,
) -> bool:
    """Gate for one save.

    ``last_saved_tokens`` is the length of the previous save of this
    sequence (0 if none); it matters only for continued saves.
    """
    reason = SaveReason.parse(reason)
    if n_tokens < policy.min_tokens:
        return False
    if reason is SaveReason.COLD:
        return cold_save_length(policy, n_tokens) > 0
    if reason is SaveReason.CONTINUED:
        return policy.continued_interval > 0 and n_tokens - last_saved_tokens >= policy.continued_interval
    return n_tokens > last_saved_tokens


def continued_save_length(policy: SavePolicy, n_tokens: int, last_saved_tokens: int) -> int:
    """Length for a continued save (aligned), or 0 if none is due."""
    if not should_save(policy, SaveReason.CONTINUED, n_tokens, last_saved_tokens):
        return 0
    n = align_down(n_tokens, policy.boundary_align_tokens)
    return n if n > last_saved_tokens and n >= policy.min_tokens else 0
