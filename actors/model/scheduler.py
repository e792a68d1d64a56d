"""Batch planning and admission order for the model actor: pure functions.

One tick of the model actor is one ``Context.step``: a single
``llama_decode`` that mixes prefill slices and decode rows of several
sequences.  This module decides what goes into that step, given only
counts, so the rules are property-tested without a model:

* the step never carries more than ``n_batch`` tokens;
* a sequence appears at most once per step;
* every sequence that is generating gets its decode row (decode rows
  go first: one token each, so a long prompt never stalls the streams
  already running);
* prefill slices never cross the sequence's next stop point (the
  cold-save boundary, then the end of the prompt), oldest admission
  first; while any sequence is generating they are at most ``chunk``
  tokens (the generating streams wait for the whole step, so the chunk
  bounds their inter-token gap); with no stream to protect a slice may
  fill the batch, because a prompt evaluated in 512-token steps is
  faster than the same prompt in 128-token steps (fewer, fuller
  matrix products; llama-server feeds whole batches too);
* when any sequence has work, the plan is not empty (progress).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal


class ModelPhase(str, Enum):
    """The model's phase as observers see it (status, the shared-memory table, ``top``)."""

    IDLE = "idle"
    PREFILLING = "prefilling"
    GENERATING = "generating"


@dataclass(frozen=True)
class SeqWork:
    """What one admitted sequence wants this tick.

    ``decode``: it has pending logits and wants its next token.
    ``prefill``: tokens left before its next stop point (0 = none).
    ``order``: admission order; lower is older.
    """

    seq: int
    order: int
    decode: bool = False
    prefill: int = 0


@dataclass(frozen=True)
class PlannedRow:
    seq: int
    kind: Literal["prefill", "decode"]
    n: int


def default_chunk(n_batch: int) -> int:
    """Prefill slice size when none is configured: max(64, n_batch / 4), never above n_batch."""
    return max(1, min(n_batch, max(64, n_batch // 4)))


def plan_batch(work: Iterable[SeqWork], n_batch: int, chunk: int) -> list[PlannedRow]:
    if n_batch < 1:
        raise ValueError(f"n_batch must be >= 1, got {n_batch}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    items = sorted(work, key=lambda w: (w.order, w.seq))
    seen: set[int] = set()
    for w in items:
        if w.seq in seen:
            raise ValueError(f"sequence {w.seq} listed twice")
        seen.add(w.seq)
        if w.decode and w.prefill:
            raise ValueError(f"sequence {w.seq} wants both a decode row and a prefill slice")
        if w.prefill < 0:
            raise ValueError(f"sequence {w.seq}: negative prefill count")
    budget = n_batch
    rows: list[PlannedRow] = []
    for w in items:
        if w.decode and budget > 0:
            rows.append(PlannedRow(w.seq, "decode", 1))
            budget -= 1
    limit = chunk if rows else n_batch
    for w in items:
        if w.prefill > 0 and budget > 0:
            n = min(w.prefill, limit, budget)
            rows.append(PlannedRow(w.seq, "prefill", n))
            budget -= n
    return rows


def phase_of(work: Iterable[SeqWork]) -> ModelPhase:
    """The model's phase: generating if any stream is decoding, else prefilling if any prompt is, else idle."""
    prefilling = False
    for w in work:
        if w.decode:
            return ModelPhase.GENERATING
        if w.prefill:
            prefilling = True
    return ModelPhase.PREFILLING if prefilling else ModelPhase.IDLE


def select_admissions(pending: Sequence[tuple[Hashable, bool]], free_slots: int) -> list[Hashable]:
    """Which queued requests to admit now, in FIFO order.

    ``pending`` is (id, needs_slot) in arrival order.  Requests that need a
    free sequence slot are admitted strictly first-come first-served: once
    one has to wait, no later slot-needing request overtakes it.  Requests
    that already own a sequence (a sticky session's pinned slot) need no
    slot and are never held behind the queue.
    """
    out: list[Hashable] = []
    blocked = False
    for rid, needs_slot in pending:
        if not needs_slot:
            out.append(rid)
        elif not blocked and free_slots > 0:
            out.append(rid)
            free_slots -= 1
        else:
            blocked = True
    return out
