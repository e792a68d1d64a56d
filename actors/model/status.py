"""What a model engine shows observers, built when something changed, not on every token.

Two readers, neither of which may wait behind a decode:

* ``System.status(model)`` is answered by the model's message thread from
  the last published :class:`ModelStatusView` (the engine's worker thread
  publishes, the message thread reads, a lock guards the swap);
* the shared-memory table (``actors.obs``) that ``top`` and ``observe``
  read without a message; it is written only when one of its fields moved.

Building the whole view after every step cost ~0.1 ms per token (the
request list, the sampler dicts, the adapter list), paid inside the decode
loop.  Now the engine marks the view stale on every change of shape
(admission, an ending, a session, an adapter, a counter that a step moved)
and publishes at most every ``PUBLISH_EVERY_S`` while tokens flow, and at
once when a request is admitted or answered: a status read during a stream
is at most that old, and an observer sees a request's end no later than its
caller sees the reply.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

PUBLISH_EVERY_S = 0.05


@dataclass(frozen=True)
class RequestView:
    """One admitted request, as ``status()["requests"]`` lists it."""

    req_id: str
    kind: str  # complete | infer | prefill_only | continue
    seq: int | None
    phase: str  # pending | prefilling | generating | done
    pos: int  # tokens in KV
    prompt_tokens: int
    generated: int
    session_id: str | None
    sampler: dict[str, Any]
    max_tokens: int


@dataclass(frozen=True)
class ModelStatusView:
    """The engine's state: the keys of ``System.status(model)`` (the model actor adds ``state`` and ``pid``).

    ``phase``: idle | prefilling | generating.  ``pending_len``: requests
    waiting for a sequence; ``queue_depth``: requests admitted.
    ``last_cache_hit``: ``{"kind", "prefix_len"}`` of the latest admission.
    ``counters``: requests, completed, cancelled, errors, tokens_generated,
    prefill_tokens (tokens llama.cpp computed), steps, saves, saves_dropped,
    save_us (time spent packing and storing rows), step_us (time inside llama.cpp's decode steps: the
    rest of a request's wall time is the runtime's own cost), restore_us (time finding and unpacking rows
    into a sequence at admission), context_resets (decodes stopped by their
    budget or an abort, each followed by an in-place KV reset; ``last_reset`` says which requests
    failed and which sessions were dropped).
    """

    model: str
    phase: str
    pending_len: int
    queue_depth: int
    slots: dict[str, Any]
    last_cache_hit: dict[str, Any] | None
    requests: list[RequestView]
    pending: list[str]
    sessions: list[dict[str, Any]]
    counters: dict[str, int]
    n_batch: int
    prefill_chunk_size: int
    info: dict[str, Any]
    fingerprint: str
    adapters: list[dict[str, Any]]
    adapter_ops_waiting: int
    restarts: int
    last_error: str
    last_reset: dict[str, Any] | None = None  # the latest in-place context reset (engine._reset_context)
    published_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ObsFields:
    """The few fields the shared-memory table carries; written only when they change."""

    phase: str
    pending_len: int
    queue_depth: int
    hit: str | None
    prefix_len: int | None


class StatusBoard:
    """Holds the last published view; decides when a new one is due.

    The view is kept as built and turned into a dict by the reader: ``asdict`` (a deep copy of the
    request list, the counters, the adapters) cost ~0.9 ms on this VM, paid every
    ``PUBLISH_EVERY_S`` inside the decode loop for a status nobody may ask for.  A view holds only
    containers made for it or replaced (never changed in place) by the engine, so reading it later is
    reading what was published."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._view: ModelStatusView | None = None
        self._stale = True
        self._urgent = True
        self._at = 0.0
        self.last_obs: ObsFields | None = None

    def mark(self, urgent: bool = False) -> None:
        """Something changed; ``urgent``: publish at the next chance (an admission or an ending)."""
        self._stale = True
        self._urgent = self._urgent or urgent

    def due(self, now: float) -> bool:
        return self._stale and (self._urgent or now - self._at >= PUBLISH_EVERY_S)

    def publish(self, view: ModelStatusView, now: float) -> None:
        with self._lock:
            self._view = view
        self._stale = self._urgent = False
        self._at = now

    def read(self) -> dict[str, Any]:
        with self._lock:
            view = self._view
        return {} if view is None else view.as_dict()


__all__ = ["PUBLISH_EVERY_S", "ModelStatusView", "ObsFields", "RequestView", "StatusBoard"]
