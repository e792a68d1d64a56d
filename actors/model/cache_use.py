"""The engine's use of the KV cache: restore a prompt's state, save a sequence's state.

One object per model engine, owning nothing but the decisions: the backend
packs and unpacks, the cache client stores and finds rows, the policy says
when a save is worth its bytes.  The engine calls it at admission
(``restore``), when a prompt is in (``prompt_logits`` + ``save``), every
``continued_interval`` tokens, at the end of a request and when a session
is let go (``save_state``).

A failed save never fails a request: it is counted and remembered in
``last_error``, and the request goes on without that row.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from actors.cache.client import EXACT
from actors.cache.kvc import RowMeta
from actors.cache.policy import SavePolicy, prompt_row_due, should_save
from actors.model.backend import Backend
from actors.model.errors import LlamaError
from actors.model.request import HitKind, Request
from actors.model.restore import unpack_cached


@dataclass(frozen=True)
class Restored:
    """What a restore put into the sequence: ``matched`` tokens, with the prompt's logits or not."""

    matched: int
    kind: HitKind
    logits: bool
    key: bytes | None  # the row's key when the row is exactly the restored tokens (else None)


class CacheUse:
    def __init__(self, model_id: str, backend: Backend, cache: Any, policy: SavePolicy,
                 counters: dict[str, int]) -> None:
        self.model_id = model_id
        self.backend = backend
        self.cache = cache  # a CacheClient, or None; replaced in place when the cache meta restarts
        self.policy = policy
        self.counters = counters  # the engine's counters: saves, saves_dropped
        self.last_error = ""

    def on(self, req: Request | None = None) -> bool:
        """Whether the cache is used at all (for this request: ``cache=False`` opts out)."""
        return self.cache is not None and (req is None or req.options.cache)

    # ------------------------------------------------------------------ restore

    def restore(self, req: Request) -> Restored | None:
        """Put the best cached row for the request's prompt into its sequence; None on a miss."""
        if not self.on(req):
            return None
        be, seq = self.backend, req.seq
        assert seq is not None
        try:
            got = unpack_cached(be, self.cache, seq, req.target, req.fingerprint or be.fingerprint,
                                req.options.parent_key)
            if got is None:
                return None
            hit, loaded = got
            logits_ok = False
            if (hit.matched == len(req.target) and hit.logits_usable and loaded.logits is not None
                    and len(loaded.logits)):
                be.set_logits(seq, loaded.logits)
                logits_ok = True
        except LlamaError as e:
            self.last_error = f"restore failed: {e}"
            be.seq_rm(seq)
            return None
        kind = HitKind.EXACT if hit.kind == EXACT else HitKind.PARTIAL
        return Restored(hit.matched, kind, logits_ok, None if hit.needs_truncation else hit.key)

    def lookup_only(self, tokens: list[int]) -> dict[str, Any]:
        """What a request for ``tokens`` would find (an inspection: no counters, no touch)."""
        none = {"length": 0, "kind": "none", "tier": None, "key": None}
        if self.cache is None or not tokens:
            return none
        be = self.backend
        hit = self.cache.lookup(be.fingerprint, be.quant, be.ctx_hash, tokens, record=False)
        if hit is None:
            return none
        return {"length": hit.matched, "kind": hit.kind, "tier": hit.tier, "key": hit.key.hex()}

    # ------------------------------------------------------------------ saves

    def prompt_logits(self, req: Request) -> bytes | None:
        """Logits worth saving with a whole-prompt row, or None when no such save is due."""
        if (not self.on(req) or req.seq is None or req.pos != len(req.target)
                or not prompt_row_due(self.policy, req.pos, req.read) or req.pos in req.saved):
            return None
        try:
            return self.backend.get_logits(req.seq)
        except LlamaError:
            return None

    def save_prompt(self, req: Request) -> None:
        """The whole-prompt row with the logits kept before the first sample (once per request).

        Called after the first token went out, or by the request's ending if that came first: the
        sequence still holds exactly the prompt then (the first token reaches KV in the next step).
        """
        logits, req.prompt_logits = req.prompt_logits, None
        if logits is not None:
            self.save(req, "cold", logits=logits)

    def save(self, req: Request, reason: str, logits: bytes | None = None) -> None:
        """Save ``req``'s sequence (its first ``pos`` tokens) if the policy says the row is worth it."""
        if not self.on(req) or req.seq is None or req.pos <= 0:
            return
        if reason != "cold" and not should_save(self.policy, reason, req.pos, req.last_saved):
            return
        try:
            res = self.save_state(req.seq, req.target[: req.pos], reason, req.options.tier, logits,
                                  req.fingerprint)
        except Exception as e:  # a failed save never fails the request
            self.last_error = f"{reason} save failed: {e!r}"
            return
        if res.accepted or res.detail == "duplicate":
            req.note_saved(req.pos, res.key, res.accepted)

    def save_session(self, seq: int, tokens: list[int], reason: str) -> bytes | None:
        """Save a session's sequence as it is let go; the row's key, or None when nothing was saved."""
        if self.cache is None or not tokens or not should_save(self.policy, reason, len(tokens), 0):
            return None
        try:
            res = self.save_state(seq, tokens, reason, None)
        except Exception as e:
            self.last_error = f"{reason} save failed: {e!r}"
            return None
        return res.key if (res.accepted or res.detail == "duplicate") else None

    def save_state(self, seq: int, tokens: Sequence[int], reason: str, tier: str | None,
                   logits: bytes | None = None, fingerprint: bytes | None = None) -> Any:
        be = self.backend
        t0 = time.perf_counter()
        kv = be.kv_pack(seq)
        if logits is None:
            try:
                logits = be.get_logits(seq)
            except LlamaError:
                logits = None
        meta = RowMeta(fingerprint=fingerprint or be.fingerprint, quant=be.quant, ctx_hash=be.ctx_hash,
                       tokens=list(tokens), context_size=be.context_size, model=self.model_id)
        res = self.cache.save(reason, meta, kv, logits, tier)
        self.counters["save_us"] += int((time.perf_counter() - t0) * 1e6)
        if res.accepted:
            self.counters["saves"] += 1
        elif res.detail != "duplicate":
            self.counters["saves_dropped"] += 1
        return res

    # ------------------------------------------------------------------ pins

    def pin(self, key: bytes | None) -> None:
        if key and self.cache is not None:
            self.cache.pin(key)

    def unpin(self, key: bytes | None) -> None:
        if key and self.cache is not None:
            self.cache.unpin(key)


__all__ = ["CacheUse", "Restored"]
