"""Per-request state of the model engine: a plain class, no I/O.

Invariant: the sequence's KV holds exactly ``target[:pos]``.  ``target``
starts as the prompt and grows with each generated token.  A token
sampled without a decode (the first token after a cache restore or a
prefill, taken straight from the pending logits) is appended to
``target`` at once and reaches KV through a one-token prefill slice in
the next step; a decode row samples and appends in the same step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from actors.model.messages import CacheDelta, Completion, GenOptions
from actors.model.output import OutputShaper
from actors.model.scheduler import SeqWork


class Phase(str, Enum):
    """Where one request is in its life (the model's own phase is ``scheduler.ModelPhase``)."""

    PENDING = "pending"  # queued, waiting for a sequence
    PREFILLING = "prefilling"  # admitted, prompt going into KV
    GENERATING = "generating"  # prompt in, tokens coming out
    DONE = "done"  # answered; nothing more is sent for it


class Kind(str, Enum):
    """Which request message started it: decides streaming, sampling and what ends it."""

    COMPLETE = "complete"
    INFER = "infer"
    PREFILL_ONLY = "prefill_only"
    CONTINUE = "continue"


class HitKind(str, Enum):
    """How the prompt's state was found (``Completion.cache_hit_kind`` carries the value)."""

    COLD = "cold"
    EXACT = "exact"
    PARTIAL = "partial"
    STICKY = "sticky"
    CONTINUATION = "continuation"


@dataclass(eq=False)
class Request:
    req_id: str
    kind: Kind
    reply_to: Any
    stream: bool
    options: GenOptions
    target: list[int]
    order: int
    prompt_len: int = 0
    seq: int | None = None
    pos: int = 0
    boundary: int = 0
    logits: bool = False
    sampler: Any = None
    generated: list[int] = field(default_factory=list)
    shaper: OutputShaper = field(default_factory=OutputShaper)
    fingerprint: bytes = b""  # the model's effective fingerprint at admission (adapters folded in)
    deadline: float | None = None  # perf_counter time after which the request ends with "timeout"
    thinking_tokens: int = 0
    hit_kind: HitKind = HitKind.COLD
    read: int = 0
    saved: dict[int, bytes] = field(default_factory=dict)
    max_saved: int = 0
    last_saved: int = 0
    cancelled: bool = False
    chunks_sent: bool = False  # a stream's first chunk carries the prompt's length
    phase: Phase = Phase.PENDING
    t_submit: float = field(default_factory=time.perf_counter)
    t_admit: float = 0.0
    t_restore: float = 0.0
    t_prefill_done: float = 0.0
    t_first: float = 0.0
    t_done: float = 0.0
    restore_s: float = 0.0
    prompt_logits: bytes | None = None  # kept for the whole-prompt row until it is saved

    def __post_init__(self) -> None:
        if not self.prompt_len:
            self.prompt_len = len(self.target)

    @property
    def session_id(self) -> str | None:
        return self.options.session_id

    @property
    def remaining_prefill(self) -> int:
        return len(self.target) - self.pos

    def work(self) -> SeqWork | None:
        """This request's wish for the next step (None: nothing to do)."""
        if self.seq is None or self.phase in (Phase.PENDING, Phase.DONE):
            return None
        if self.pos < len(self.target):
            stop = self.boundary if self.boundary > self.pos else len(self.target)
            return SeqWork(self.seq, self.order, prefill=stop - self.pos)
        if self.logits and self.kind is not Kind.PREFILL_ONLY:
            return SeqWork(self.seq, self.order, decode=True)
        return None

    def wants_token(self) -> bool:
        return len(self.generated) < self.options.max_tokens

    def last_token_due(self) -> bool:
        """Logits are pending and exactly one token is left to generate: it is sampled, never decoded.

        A decode row samples and then evaluates its token, so the evaluation
        of a reply's final token would serve nothing in this request (one
        whole step per request: a sixteenth of a 16-token reply's decode).
        The sequence and its saved row then end before that token; a next
        turn that sends it back prefills it with its own new tokens.
        """
        return (self.phase is Phase.GENERATING and self.logits and self.pos == len(self.target)
                and len(self.generated) + 1 == self.options.max_tokens and self.kind is not Kind.PREFILL_ONLY)

    def add_token(self, token: int, decoded: bool) -> None:
        """Record a generated (or forced) token; a token not decoded reaches KV by the next prefill slice."""
        self.generated.append(token)
        self.target.append(token)
        if decoded:
            self.pos += 1
        if not self.t_first:
            self.t_first = time.perf_counter()

    def note_saved(self, length: int, key: bytes, accepted: bool) -> None:
        self.saved[length] = key
        if accepted:
            self.max_saved = max(self.max_saved, length)
        self.last_saved = max(self.last_saved, length)

    def stats(self) -> dict[str, Any]:
        t_end = self.t_done or time.perf_counter()
        base = self.t_admit or self.t_submit
        gen_n = len(self.generated)
        decode_s = (t_end - self.t_first) if self.t_first else 0.0
        return {
            "prompt_tokens": self.prompt_len,
            "completion_tokens": gen_n,
            "queue_ms": round(((self.t_admit or t_end) - self.t_submit) * 1e3, 3),
            "restore_ms": round(self.restore_s * 1e3, 3),
            "prefill_ms": round(((self.t_prefill_done or t_end) - base) * 1e3, 3),
            "ttft_ms": round((self.t_first - base) * 1e3, 3) if self.t_first else None,
            "decode_ms": round(decode_s * 1e3, 3),
            "tokens_per_s": round((gen_n - 1) / decode_s, 2) if gen_n > 1 and decode_s > 0 else None,
            "seq": self.seq,
        }

    def completion(self, finish_reason: str) -> Completion:
        context = tuple(self.target[: self.pos])
        created = max(0, self.max_saved - self.read)
        sh = self.shaper
        stats = self.stats()
        if sh.stopped is not None:
            stats["stop_sequence"] = sh.stopped
        return Completion(
            req_id=self.req_id,
            reply=sh.reply,
            generated=tuple(self.generated),
            context_tokens=context,
            committed_tokens=len(context),
            finish_key=self.saved.get(self.pos),
            cache_hit_kind=self.hit_kind.value,
            finish_reason=finish_reason,
            cache_delta=CacheDelta(self.read, created),
            stats=stats,
            stop_sequence=sh.stopped,
            thinking="".join(sh.thinking),
            thinking_signature=sh.signatures[-1] if sh.signatures else "",
            tool_calls=tuple(c.decode("utf-8", "replace") for c in sh.tool_calls),
        )
