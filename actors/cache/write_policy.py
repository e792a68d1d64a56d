"""Pure decisions of the write-behind path (no I/O, no clock, no threads).

A ``ram`` row lives only in its model process.  Two things copy it to the
next (file) tier so it outlives the ram quota and the process:

* **write-behind**: right after a ram save, a writer thread in the model
  process writes the row to the file tier, off the request path;
* **demotion**: a ram row evicted by the quota before its copy exists is
  written instead of dropped.

Both go through one bounded queue.  These functions decide what happens to
an evicted row, whether a write joins the queue, which write goes next, and
in which order a graceful shutdown spills what is still only in ram.  The
writer thread (:mod:`actors.cache.write_behind`) and the client apply them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum


class CopyState(str, Enum):
    """Where a ram row's file copy stands, as its owning process knows it."""

    NONE = "none"  # no copy written or queued
    QUEUED = "queued"  # a write of it waits in the queue (or is being written)
    WRITTEN = "written"  # published by this process; the index may not list it yet
    DURABLE = "durable"  # the index lists its file copy


class EvictAction(str, Enum):
    RELEASE = "release"  # a file copy exists or is on its way: free the bytes (a demotion)
    DEMOTE = "demote"  # write the evicted bytes to the file tier (queue them, or promote a queued write)
    DROP = "drop"  # nowhere to go: the row leaves the cache (an eviction)


def on_evict(state: CopyState, can_demote: bool) -> EvictAction:
    """What a ram row evicted for quota becomes.

    ``can_demote``: a file tier is configured and demotion is on.  A row whose
    copy is written (or being written) is never written twice.
    """
    if state in (CopyState.WRITTEN, CopyState.DURABLE):
        return EvictAction.RELEASE
    if not can_demote:
        return EvictAction.DROP
    return EvictAction.DEMOTE


@dataclass(frozen=True)
class Job:
    """One queued write.  ``demotion``: its row already left ram, so the
    queue holds the only copy of its bytes."""

    key: bytes
    size: int
    demotion: bool = False


@dataclass(frozen=True)
class QueueLimits:
    """``max_jobs`` queued writes and ``max_bytes`` of their rows, whichever
    comes first.  An empty queue always takes one job, so a row bigger
    than ``max_bytes`` can still be written, one at a time."""

    max_jobs: int
    max_bytes: int


class Verdict(str, Enum):
    QUEUED = "queued"
    PROMOTED = "promoted"  # the key was queued as a write-behind; now it is a demotion
    DUPLICATE = "duplicate"  # the key is already queued: never written twice
    FULL = "full"  # skipped, counted; the caller never waits


@dataclass(frozen=True)
class Admission:
    verdict: Verdict
    displaced: tuple[bytes, ...] = ()  # write-behind jobs pushed out to make room for a demotion


def _fits(count: int, used: int, job: Job, limits: QueueLimits) -> bool:
    if count == 0:
        return True
    return count < limits.max_jobs and used + job.size <= limits.max_bytes


def admit(queue: Sequence[Job], job: Job, limits: QueueLimits) -> Admission:
    """Whether ``job`` joins ``queue`` (oldest first).

    A demotion outranks a write-behind: when the queue is full, the newest
    write-behind jobs make room for it (their rows are still in ram, and are
    demoted in turn if they are evicted later), while a write-behind never
    pushes anything out.
    """
    for queued in queue:
        if queued.key == job.key:
            if job.demotion and not queued.demotion:
                return Admission(Verdict.PROMOTED)
            return Admission(Verdict.DUPLICATE)
    count, used = len(queue), sum(j.size for j in queue)
    if _fits(count, used, job, limits):
        return Admission(Verdict.QUEUED)
    if not job.demotion:
        return Admission(Verdict.FULL)
    displaced: list[bytes] = []
    for queued in reversed(queue):
        if queued.demotion:
            continue
        displaced.append(queued.key)
        count -= 1
        used -= queued.size
        if _fits(count, used, job, limits):
            return Admission(Verdict.QUEUED, tuple(displaced))
    return Admission(Verdict.FULL)


def next_job(queue: Sequence[Job]) -> int | None:
    """Index of the write to run next: the oldest demotion (its bytes are held
    over the ram quota), else the oldest write-behind; None when empty."""
    for i, job in enumerate(queue):
        if job.demotion:
            return i
    return 0 if queue else None


def spill_order(lru_keys: Sequence[bytes], states: Mapping[bytes, CopyState]) -> list[bytes]:
    """Ram rows a graceful shutdown still has to write, most recently used first.

    ``lru_keys`` is the ram tier's order, least recently used first.  Rows with
    a copy written or queued are left out (the queue is flushed anyway).  The
    most recent rows go first because the spill has a time budget and they are
    the likeliest to be asked for again after the restart.
    """
    return [k for k in reversed(lru_keys) if states.get(k, CopyState.NONE) is CopyState.NONE]


__all__ = ["Admission", "CopyState", "EvictAction", "Job", "QueueLimits", "Verdict", "admit", "next_job",
           "on_evict", "spill_order"]
