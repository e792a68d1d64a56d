"""From a request message to an admitted request with its prompt state in place.

``submit`` checks the request (``validate``), builds its :class:`Request`
and queues it FIFO.  ``admit`` gives queued requests their sequences in the
order ``scheduler.select_admissions`` picks, and ``_start`` puts the
prompt's known state into the sequence: a sticky session's live KV, else
the best cached row (``CacheUse.restore``), else nothing (cold).  After
that the request only needs the rest of its prompt prefilled, which the
engine's tick does.

Requests wait while an adapter change is queued: the change applies
between requests (the engine's barrier), so no request mixes two sets.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from actors.cache.policy import cold_save_length
from actors.model import messages as mm
from actors.model.backend import Backend
from actors.model.cache_use import CacheUse
from actors.model.errors import LlamaError
from actors.model.output import OutputShaper
from actors.model.queries import Queries
from actors.model.request import HitKind, Kind, Phase, Request
from actors.model.scheduler import select_admissions
from actors.model.sessions import SessionTable
from actors.model.stream import Markers
from actors.model.validate import (
    AdmissionLimits,
    RequestError,
    check_committed,
    check_options,
    check_text,
    check_tier,
)

KIND_OF: dict[type, Kind] = {mm.Complete: Kind.COMPLETE, mm.Infer: Kind.INFER, mm.PrefillOnly: Kind.PREFILL_ONLY,
                             mm.Continue: Kind.CONTINUE}


class Admission:
    def __init__(self, backend: Backend, cache: CacheUse, slots: SessionTable, queries: Queries,
                 markers: Markers, thinking_key: bytes | None, counters: dict[str, int],
                 prompt_done: Callable[[Request], None], fail: Callable[[Request, str, str], None],
                 limits: AdmissionLimits | None = None) -> None:
        self.backend = backend
        self.cache = cache
        self.slots = slots
        self.queries = queries
        self.markers = markers
        self.thinking_key = thinking_key
        self.counters = counters
        self.prompt_done = prompt_done
        self.fail = fail
        self.limits = limits or AdmissionLimits()
        self.pending: deque[Request] = deque()
        self.active: dict[str, Request] = {}
        self.last_hit: dict[str, Any] | None = None
        self._order = itertools.count()

    # ------------------------------------------------------------------ submit

    def submit(self, msg: Any) -> Request:
        """Check and queue a generation request; RequestError names what is wrong."""
        opts = check_options(msg.options)
        cache = self.cache.cache
        check_tier(opts.tier, [t.name for t in cache.config.tiers] if cache is not None else None)
        kind = KIND_OF[type(msg)]
        stream = kind is Kind.INFER or (kind is Kind.CONTINUE and msg.stream)
        slots = self.slots
        sid = opts.session_id
        if sid is not None and slots.busy(sid):
            raise RequestError("sticky_busy", f"session {sid!r} has a request in flight")
        session = slots.sessions.get(sid) if sid is not None else None
        check_committed(opts.expect_committed, session.tokens if session is not None else ())
        if len(self.pending) >= self.limits.max_pending:
            raise RequestError("seq_capacity", f"{len(self.pending)} requests already wait for a sequence "
                                               f"(max_pending={self.limits.max_pending})")
        if kind is Kind.CONTINUE:
            if sid is None or sid not in slots.sessions:
                raise RequestError("no_session", f"session {sid!r} is not pinned on this model")
            if isinstance(msg.suffix, str):  # a tail, not a new text: no BOS
                suffix = (self.backend.tokenize(check_text(msg.suffix, "suffix"), False, opts.parse_special)
                          if msg.suffix else [])
            else:
                suffix = self.queries.token_ids(msg.suffix)
            target = list(slots.sessions[sid].tokens) + suffix
        else:
            target = (self.queries.prompt_tokens(msg.prompt, opts.add_special, opts.parse_special)
                      if msg.prompt != "" else [])
            if not target:
                raise RequestError("bad_request", "empty prompt")
            n_seq_max = self.backend.n_seq_max
            if sid is not None and sid not in slots.sessions and len(slots.sessions) >= n_seq_max:
                raise RequestError("session_pool_full",
                                   f"all {n_seq_max} sequences are pinned by sessions; end_session one first")
        if len(target) > self.backend.n_ctx_seq:
            raise RequestError("context_overflow",
                               f"{len(target)} tokens do not fit a sequence of {self.backend.n_ctx_seq}")
        try:
            sampler = self.backend.new_sampler(opts.sampler) if kind is not Kind.PREFILL_ONLY else None
        except LlamaError as e:
            raise RequestError(e.reason, e.detail) from None
        shaper = OutputShaper(self.markers, thinking=opts.thinking == "enabled" and self.markers.has_thinking,
                              stops=tuple(opts.stop_sequences), key=self.thinking_key)
        req = Request(msg.req_id, kind, msg.reply_dest, stream, opts, target, next(self._order), sampler=sampler,
                      shaper=shaper, fingerprint=self.backend.fingerprint)
        if opts.timeout_s is not None:
            req.deadline = req.t_submit + float(opts.timeout_s)
        if sid is not None:
            slots.owner[sid] = req.req_id
        self.counters["requests"] += 1
        self.pending.append(req)
        return req

    def remove_pending(self, req: Request) -> bool:
        if req in self.pending:
            self.pending = deque(r for r in self.pending if r is not req)
            return True
        return False

    # ------------------------------------------------------------------ admit

    def _needs_slot(self, req: Request) -> bool:
        return not (req.session_id is not None and req.session_id in self.slots.sessions)

    def admit(self, blocked: bool) -> None:
        """Start what can start now (``blocked``: an adapter change waits, so nothing new starts)."""
        if not self.pending or blocked:
            return
        slots = self.slots
        releasing = any(r.session_id is None for r in self.active.values())
        if not slots.free and not releasing and any(self._needs_slot(r) for r in self.pending):
            # Only idle sessions hold the slots and nothing running will give one
            # back: evict the least recently used idle session (saved first).
            lru = slots.idle_lru()
            if lru is not None:
                slots.drop(lru, "evict")
        chosen = set(select_admissions([(r.req_id, self._needs_slot(r)) for r in self.pending], len(slots.free)))
        if not chosen:
            return
        queue = list(self.pending)
        self.pending = deque(r for r in queue if r.req_id not in chosen)
        for req in queue:
            if req.req_id not in chosen:
                continue
            try:
                self._start(req)
            except Exception as e:
                self.fail(req, getattr(e, "reason", "internal_error"), getattr(e, "detail", "") or repr(e))

    def _start(self, req: Request) -> None:
        req.t_admit = time.perf_counter()
        req.phase = Phase.PREFILLING
        self.active[req.req_id] = req
        slots = self.slots
        sid = req.session_id
        target = req.target
        if sid is not None and sid in slots.sessions:
            s = slots.sessions[sid]
            stored = s.tokens
            if req.kind is Kind.CONTINUE or (len(target) >= len(stored) and target[: len(stored)] == stored):
                req.seq = s.seq
                req.read = len(stored)
                req.hit_kind = HitKind.CONTINUATION if req.kind is Kind.CONTINUE else HitKind.STICKY
                if s.key:
                    req.saved[len(stored)] = s.key
                    req.last_saved = len(stored)
                s.last_used = time.monotonic()
                self._position(req, len(stored), s.logits)
                self._hit(req)
                return
            slots.drop(sid, None)  # diverged: free it, fall through to the normal path
        req.seq = slots.take()
        t0 = time.perf_counter()
        got = self.cache.restore(req)
        if got is not None:
            req.read = got.matched
            req.hit_kind = got.kind
            if got.key is not None:
                req.saved[got.matched] = got.key
                req.last_saved = got.matched
            self._position(req, got.matched, got.logits)
            req.restore_s = time.perf_counter() - t0
            self.counters["restore_us"] += int(req.restore_s * 1e6)
        if self.cache.on(req) and req.kind is not Kind.CONTINUE and req.read == 0:
            # Only a miss gets a mid-prompt row: after any hit, the whole-prompt row saved after the
            # first token serves every prompt that shares a prefix with it (a longer row is restored
            # and truncated), so a second pack of the sequence would buy nothing and cost a split
            # prefill.
            b = cold_save_length(self.cache.policy, len(target))
            if b > req.pos:
                req.boundary = b
        self._hit(req)

    def _hit(self, req: Request) -> None:
        self.last_hit = {"kind": req.hit_kind.value, "prefix_len": req.read}
        if req.pos == len(req.target) and req.logits:
            self.prompt_done(req)

    def _position(self, req: Request, length: int, has_logits: bool) -> None:
        """KV holds target[:length]; get logits for it (kept ones, or re-prefill the last position)."""
        assert req.seq is not None
        if length < len(req.target):
            req.pos = length
        elif has_logits:
            req.pos = length
            req.logits = True
        else:
            self.backend.seq_rm(req.seq, length - 1, -1)
            req.pos = length - 1


__all__ = ["KIND_OF", "Admission"]
