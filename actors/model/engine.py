"""The model engine: one model's requests, from message to reply, behind one small facade.

Transport-free and single-threaded: the model actor runs it on its one
worker thread (every C call happens there), and tests drive it directly
with the stub backend.  It talks to the world through ``emit(dest, msg)``
(replies and stream events) and the callables of :class:`EngineHooks`.

The work is split by responsibility, each part a class of its own:

* :mod:`~actors.model.admission` checks, queues and starts requests
  (sessions, cache restore, the cold-save boundary);
* the tick here plans one step with the pure planner
  (:mod:`~actors.model.scheduler`), runs it, and hands each row's result on;
* :mod:`~actors.model.generation` turns logits into tokens and tokens into
  stream events, and decides when a request ends;
* :mod:`~actors.model.cache_use` restores and saves rows;
* :mod:`~actors.model.sessions` knows which sequence belongs to whom;
* :mod:`~actors.model.queries` answers tokenize, templates, embeddings and
  inspection;
* :mod:`~actors.model.status` publishes what observers read, when it changed.

The engine itself routes commands, owns the endings (finish, fail, cancel,
timeout), the adapter barrier, verify and shutdown.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.cache.policy import SavePolicy
from actors.model import messages as mm
from actors.model import speculative
from actors.model.adapters import AdapterError, AdapterSet
from actors.model.admission import KIND_OF, Admission
from actors.model.backend import Backend
from actors.model.cache_use import CacheUse
from actors.model.errors import DecodeStopped, LlamaError
from actors.model.generation import Generation
from actors.model.llama import Decode, Prefill
from actors.model.queries import Queries
from actors.model.request import Phase, Request
from actors.model.scheduler import ModelPhase, default_chunk, phase_of, plan_batch
from actors.model.sessions import Session, SessionTable
from actors.model.status import ModelStatusView, ObsFields, RequestView, StatusBoard
from actors.model.stream import Markers
from actors.model.validate import DEFAULT_DECODE_BUDGET_MS, AdmissionLimits, RequestError, check_session_id

Emit = Callable[[Any, Any], None]
AdapterSpecs = tuple[tuple[str, str, float], ...]
COUNTERS = ("requests", "completed", "cancelled", "errors", "tokens_generated", "prefill_tokens", "steps", "saves",
            "saves_dropped", "save_us", "step_us", "restore_us", "context_resets")


@dataclass(frozen=True)
class EngineSettings:
    """How one model's engine behaves (from its ``ModelConfig`` and the node)."""

    model_id: str
    policy: SavePolicy | None = None  # None: the cache's policy, or the default one without a cache
    prefill_chunk: int | None = None  # None: max(64, n_batch / 4)
    allow_debug_crash: bool = False
    restarts: int = 0
    markers: Markers = field(default_factory=Markers)
    thinking_key: bytes | None = None
    embeddings: bool = True
    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    decode_budget_ms: int = DEFAULT_DECODE_BUDGET_MS  # 0: unbounded


@dataclass
class EngineHooks:
    """What the engine tells its host: a request's final reply is out, the adapter set changed,
    the observable fields moved (written to the shared-memory table)."""

    done: Callable[[str], None] = lambda _rid: None
    adapters_changed: Callable[[AdapterSpecs], None] = lambda _specs: None
    observe: Callable[[ObsFields], None] | None = None


class Engine:
    def __init__(self, settings: EngineSettings, backend: Backend, emit: Emit, cache: Any = None,
                 hooks: EngineHooks | None = None) -> None:
        self.settings = settings
        self.model_id = settings.model_id
        self.backend = backend
        self.emit = emit
        self.hooks = hooks or EngineHooks()
        self.n_batch = backend.n_batch
        self.n_seq_max = backend.n_seq_max
        if self.n_batch < self.n_seq_max:
            raise ValueError(f"n_batch ({self.n_batch}) must be >= n_seq_max ({self.n_seq_max}) "
                             "so every generating sequence gets its decode row each step")
        chunk = settings.prefill_chunk if settings.prefill_chunk is not None else default_chunk(self.n_batch)
        if chunk < 1:
            raise ValueError(f"prefill_chunk_size must be >= 1, got {chunk}")
        self.chunk = min(chunk, self.n_batch)
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        policy = settings.policy or (cache.config.policy if cache is not None else SavePolicy())
        self.cache_use = CacheUse(self.model_id, backend, cache, policy, self.counters)
        self.slots = SessionTable(self.n_seq_max, backend, self.cache_use)
        self.queries = Queries(backend, self.cache_use, settings.embeddings)
        self.gen = Generation(backend, self.cache_use, emit, self._finish, lambda: self._publish(force=True),
                              settings.markers, self.counters)
        self.admission = Admission(backend, self.cache_use, self.slots, self.queries, settings.markers,
                                   settings.thinking_key, self.counters, self.gen.prompt_done, self._fail,
                                   settings.limits)
        self.adapters = AdapterSet(backend, self._release_sessions)
        self.info: dict[str, Any] = dict(backend.info())
        self.restarts = settings.restarts
        self.last_error = ""
        self.last_reset: dict[str, Any] | None = None
        self._crash: str | None = None
        backend.set_decode_budget(settings.decode_budget_ms)
        self.board = StatusBoard()
        self._publish(force=True)

    # ------------------------------------------------------------------ views used by the host and tests

    @property
    def cache(self) -> Any:
        return self.cache_use.cache

    @cache.setter
    def cache(self, client: Any) -> None:  # the cache meta restarted: the actor rebinds a fresh client
        self.cache_use.cache = client

    @property
    def active(self) -> dict[str, Request]:
        return self.admission.active

    @property
    def pending(self) -> Any:
        return self.admission.pending

    @property
    def free(self) -> list[int]:
        return self.slots.free

    @property
    def sessions(self) -> dict[str, Session]:
        return self.slots.sessions

    def has_work(self) -> bool:
        return self._crash is not None or any(r.work() is not None for r in self.active.values()) or (
            bool(self.pending) and bool(self.free)) or (bool(self.adapters.waiting) and not self.active)

    # ------------------------------------------------------------------ commands

    def handle(self, msg: Any) -> None:
        """Apply one command (a request message from ``actors.model.messages``)."""
        req_id = getattr(msg, "req_id", "")
        reply_to = msg.reply_dest if isinstance(msg, mm.ModelRequest) else getattr(msg, "reply_to", None)
        try:
            self._dispatch(msg)
        except DecodeStopped as e:  # a verify's decode ran past its budget or was aborted
            self.counters["errors"] += 1
            self._reply(reply_to, mm.ErrorReply(req_id, e.reason, e.detail), req_id)
            self._reset_context(e.reason, ())
        except (RequestError, LlamaError) as e:
            self.counters["errors"] += 1
            self._reply(reply_to, mm.ErrorReply(req_id, e.reason, e.detail), req_id)
        except Exception as e:  # a bug must answer the caller, not kill the worker
            self.counters["errors"] += 1
            self.last_error = repr(e)
            self._reply(reply_to, mm.ErrorReply(req_id, "internal_error", repr(e)), req_id)
        finally:
            self._publish(force=True)

    def _reply(self, dest: Any, msg: Any, req_id: str) -> None:
        self.emit(dest, msg)
        if req_id:
            self.hooks.done(req_id)

    def _value(self, msg: Any, value: Any) -> None:
        self._reply(msg.reply_dest, mm.Value(msg.req_id, value), msg.req_id)

    def _dispatch(self, msg: Any) -> None:
        if type(msg) in KIND_OF:
            req = self.admission.submit(msg)
            self.admission.admit(bool(self.adapters.waiting))
            if self.settings.limits.on_full == "error" and req in self.pending:
                self._fail(req, "seq_capacity", "no free sequence for this request now (on_full=error)")
        elif self.queries.handles(msg):
            self._value(msg, self.queries.answer(msg))
        elif isinstance(msg, mm.Cancel):
            self._cancel(msg.target)
            if msg.req_id:
                self.hooks.done(msg.req_id)
        elif isinstance(msg, mm.Abort):
            # The actor set the abort flag when it received this; a decode it stopped has already
            # reset the context (the target got ``aborted``).  Otherwise it ends like a cancel.
            self.backend.abort_decode(False)
            self._cancel(msg.target)
            if msg.req_id:
                self.hooks.done(msg.req_id)
        elif isinstance(msg, mm.EndSession):
            self._value(msg, self.slots.end(check_session_id(msg.session_id)))
        elif isinstance(msg, mm.Evict):
            self._value(msg, self.slots.evict(check_session_id(msg.session_id)))
        elif isinstance(msg, (mm.LoadAdapter, mm.UnloadAdapter, mm.SetAdapterScale)):
            self.adapters.waiting.append(msg)
            self._apply_adapter_ops()
        elif isinstance(msg, mm.ListAdapters):
            self._value(msg, self.adapters.describe())
        elif isinstance(msg, mm.Verify):
            self._value(msg, self._verify(msg))
        elif isinstance(msg, mm.DebugCrash):
            if not self.settings.allow_debug_crash:
                raise RequestError("debug_disabled", "load the model with allow_debug_crash=True")
            if msg.how not in ("segv", "abort", "kill", "raise", "hold"):
                raise RequestError("bad_option", "how: expected segv, abort, kill, raise or hold")
            if msg.how == "hold":
                self.backend.hold_next_decode(max(0, int(msg.hold_ms)))
            else:
                self._crash = msg.how
            if msg.req_id:
                self.hooks.done(msg.req_id)
        elif isinstance(msg, mm.ModelStatusReq):
            self._publish(force=True)
            self._reply(msg.reply_dest, mm.ModelStatus(msg.req_id, self.model_id, self.status()), msg.req_id)
        else:
            raise RequestError("bad_request", f"unknown request {type(msg).__name__}")

    # ------------------------------------------------------------------ the tick

    def tick(self) -> None:
        """One scheduler step.  Never raises for a request's fault: it is failed instead."""
        try:
            self._tick()
        except Exception as e:  # engine bug: answer everyone, reset, keep serving
            self.last_error = repr(e)
            for req in list(self.active.values()):
                self._fail(req, "internal_error", repr(e))
        finally:
            self._publish()

    def _tick(self) -> None:
        if self._crash is not None:
            how, self._crash = self._crash, None
            if how == "raise":
                raise RuntimeError("debug: a Python exception inside a tick")
            self.backend.crash(how)
        self._expire()
        self._apply_adapter_ops()
        self.admission.admit(bool(self.adapters.waiting))
        reqs = sorted(self.active.values(), key=lambda r: r.order)
        for req in reqs:
            if req.last_token_due():
                self.gen.last_token(req)
        reqs = [r for r in reqs if r.phase is not Phase.DONE]
        work = [w for w in (r.work() for r in reqs) if w is not None]
        rows = plan_batch(work, self.n_batch, self.chunk)
        if not rows:
            return
        by_seq = {r.seq: r for r in reqs}
        brows: list[Prefill | Decode] = []
        greedy: set[int] = set()
        for pr in rows:
            req = by_seq[pr.seq]
            if pr.kind == "prefill":
                brows.append(Prefill(pr.seq, req.target[req.pos : req.pos + pr.n]))
            else:
                sampler, is_greedy = self.gen.decode_sampler(req)
                if is_greedy:
                    greedy.add(pr.seq)
                brows.append(Decode(pr.seq, sampler))
        t0 = time.perf_counter()
        try:
            results = self.backend.step(brows)
        except DecodeStopped as e:
            self._reset_context(e.reason, [by_seq[pr.seq] for pr in rows], e.detail)
            return
        except LlamaError as e:
            for pr in rows:
                self._fail(by_seq[pr.seq], e.reason, e.detail)
            return
        self.counters["steps"] += 1
        self.counters["step_us"] += int((time.perf_counter() - t0) * 1e6)
        self.board.mark()
        for pr, res in zip(rows, results, strict=True):
            req = by_seq[pr.seq]
            if req.phase is Phase.DONE:
                continue
            if pr.kind == "prefill":
                req.pos += pr.n
                self.counters["prefill_tokens"] += pr.n
                req.logits = req.pos == len(req.target)
                if req.boundary and req.pos == req.boundary:
                    self.cache_use.save(req, "cold")
                if req.pos == len(req.target):
                    self.gen.prompt_done(req)
            else:
                req.logits = False
                if pr.seq in greedy and not res.eog:
                    self.gen.accept(req, [int(res.token)])
                self.gen.on_token(req, int(res.token), decoded=not res.eog, eog=res.eog)

    def _expire(self) -> None:
        now = time.perf_counter()
        for req in [*self.pending, *self.active.values()]:
            if req.deadline is not None and now >= req.deadline and req.phase is not Phase.DONE:
                self.admission.remove_pending(req)
                self._finish(req, "timeout")

    # ------------------------------------------------------------------ endings

    def _release(self, req: Request, keep_session: bool) -> None:
        sid = req.session_id
        if sid is not None and self.slots.owner.get(sid) == req.req_id:
            del self.slots.owner[sid]
        if req.sampler is not None:
            with contextlib.suppress(Exception):
                self.backend.free_sampler(req.sampler)
            req.sampler = None
        self.active.pop(req.req_id, None)
        if req.seq is None:
            return
        if keep_session and sid is not None:
            self.slots.keep(sid, req.seq, req.target[: req.pos], req.logits and req.pos == len(req.target),
                            req.saved.get(req.pos))
        else:
            self.slots.forget(sid, req.seq)

    def _finish(self, req: Request, reason: str) -> None:
        if req.phase is Phase.DONE:
            return
        self.cache_use.save_prompt(req)  # a request that ended on its first token still leaves its prompt row
        self.cache_use.save(req, "finish")
        self.gen.send(req, req.shaper.finish(), ())
        req.phase = Phase.DONE
        req.t_done = time.perf_counter()
        self._release(req, keep_session=True)
        result = req.completion(reason)
        self.counters["cancelled" if reason == "cancelled" else "completed"] += 1
        self._publish(force=True)  # observers see the new state no later than the caller sees its reply
        self._reply(req.reply_to, mm.Done(req.req_id, result) if req.stream else result, req.req_id)

    def _fail(self, req: Request, reason: str, detail: str = "") -> None:
        if req.phase is Phase.DONE:
            return
        req.phase = Phase.DONE
        self.admission.remove_pending(req)
        self._release(req, keep_session=False)
        self.counters["errors"] += 1
        self._publish(force=True)
        self._reply(req.reply_to, mm.ErrorReply(req.req_id, reason, detail), req.req_id)

    def _cancel(self, target: str) -> None:
        for req in list(self.pending):
            if req.req_id == target:
                self.admission.remove_pending(req)
                self._finish(req, "cancelled")
                return
        req = self.active.get(target)
        if req is not None:
            self._finish(req, "cancelled")

    def _reset_context(self, reason: str, stepped: Any, detail: str = "") -> None:
        """A decode stopped part way (``decode_timeout``, ``aborted``): clear the KV in place and go on.

        What the stopped batch decoded may remain in KV, so every sequence is cleared: the
        requests of that step get ``reason``, other admitted requests ``context_reset`` (their KV
        is gone), and the sessions are dropped unsaved (their last saved rows stay in the cache).
        The weights, adapters, queued requests and cache tiers are untouched.
        """
        self.backend.reset()
        in_step = {r.req_id for r in stepped}
        failed = []
        for req in sorted(self.active.values(), key=lambda r: r.order):
            failed.append(req.req_id)
            if req.req_id in in_step:
                self._fail(req, reason, detail or "the decode was stopped; the context was reset")
            else:
                self._fail(req, "context_reset", f"another request's decode was stopped ({reason})")
        dropped = list(self.sessions)
        for sid in dropped:
            self.slots.drop(sid, None)
        self.counters["context_resets"] += 1
        self.last_reset = {"reason": reason, "at": time.time(), "requests_failed": failed,
                           "sessions_dropped": dropped}
        self.last_error = (f"context reset after {reason}: {len(failed)} requests failed, "
                           f"{len(dropped)} sessions dropped")
        self._publish(force=True)

    # ------------------------------------------------------------------ adapters and verify

    def _apply_adapter_ops(self) -> None:
        """Apply queued adapter changes once nothing is in flight (a barrier between requests)."""
        if not self.adapters.waiting or self.active:
            return
        while self.adapters.waiting:
            msg = self.adapters.waiting.popleft()
            try:
                value = self.adapters.apply(msg)
            except (AdapterError, LlamaError) as e:
                self.counters["errors"] += 1
                self._reply(msg.reply_dest, mm.ErrorReply(msg.req_id, e.reason, e.detail), msg.req_id)
            except Exception as e:
                self.counters["errors"] += 1
                self._reply(msg.reply_dest, mm.ErrorReply(msg.req_id, "internal_error", repr(e)), msg.req_id)
            else:
                self.hooks.adapters_changed(self.adapters.specs())  # before the reply: a crash right after keeps it
                self._value(msg, value)
        self.board.mark(urgent=True)

    def restore_adapters(self, specs: AdapterSpecs) -> list[str]:
        """After a restart: load the adapter set the model had; returns one line per adapter that failed."""
        failed = []
        for aid, path, scale in specs:
            try:
                self.adapters.apply(mm.LoadAdapter(self.model_id, "", None, path=path, scale=scale, adapter_id=aid))
            except Exception as e:
                failed.append(f"{aid}: {getattr(e, 'reason', '')} {getattr(e, 'detail', '') or e}".strip())
        if failed:
            self.last_error = "adapters not restored: " + "; ".join(failed)
            self.hooks.adapters_changed(self.adapters.specs())
        self._publish(force=True)
        return failed

    def _release_sessions(self) -> None:
        """Idle sessions hold KV of the old adapter set: save them under its fingerprint and let go."""
        for sid in list(self.sessions):
            self.slots.drop(sid, "evict")

    def _verify(self, msg: mm.Verify) -> dict[str, Any]:
        if self.active or self.pending or self.adapters.waiting:
            raise RequestError("busy", "verify runs only while the model is idle")
        if not self.free:
            raise RequestError("busy", "no free sequence (all are pinned by sessions)")
        prefix = self.queries.prompt_tokens(msg.prefix)
        cands = self.queries.token_ids(msg.candidates)
        if not prefix:
            raise RequestError("bad_request", "empty prefix")
        if len(prefix) + len(cands) > self.backend.n_ctx_seq:
            raise RequestError("context_overflow", f"{len(prefix) + len(cands)} tokens do not fit a sequence")
        if len(cands) + 1 > self.n_batch:
            raise RequestError("batch_overflow", f"at most {self.n_batch - 1} candidates per verify")
        return speculative.verify(self.backend, self.cache, self.free[0], prefix, cands, self.n_batch)

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, save: bool = True) -> int:
        """Graceful stop: save live state (reason ``shutdown``), answer everyone, free sequences."""
        saved = 0
        for req in list(self.active.values()):
            if save and req.seq is not None and req.pos > 0:
                before = req.max_saved
                self.cache_use.save(req, "shutdown")
                saved += req.max_saved > before
            self._fail(req, "model_stopping", "the model is being unloaded")
        for req in list(self.pending):
            self._fail(req, "model_stopping", "the model is being unloaded")
        for sid in list(self.sessions):
            if self.slots.drop(sid, "shutdown" if save else None):
                saved += 1
        with contextlib.suppress(Exception):
            self.gen.close()
        for op in list(self.adapters.waiting):
            self._reply(op.reply_dest, mm.ErrorReply(op.req_id, "model_stopping", "the model is being unloaded"),
                        op.req_id)
        self.adapters.waiting.clear()
        self.adapters.close()
        self._publish(force=True)
        return saved

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The last published view (``status.ModelStatusView`` as a dict); safe from any thread."""
        return self.board.read()

    def phase(self) -> ModelPhase:
        # A request whose prompt is in is generating even while its sampled first
        # token waits for its one-token append; otherwise the planner's view.
        if any(r.phase is Phase.GENERATING for r in self.active.values()):
            return ModelPhase.GENERATING
        return phase_of([w for w in (r.work() for r in self.active.values()) if w is not None])

    def _publish(self, force: bool = False) -> None:
        """Publish the status view if something changed (``force``: an admission, an ending, a command)."""
        now = time.monotonic()
        if force:
            self.board.mark(urgent=True)
        phase = self.phase()
        hit = self.admission.last_hit
        obs = ObsFields(phase.value, len(self.pending), len(self.active), hit["kind"] if hit else None,
                        int(hit["prefix_len"]) if hit else None)
        if obs != self.board.last_obs:  # the phase, the queue or the last hit moved: everyone sees it now
            self.board.mark(urgent=True)
            self.board.last_obs = obs
            if self.hooks.observe is not None:
                try:
                    self.hooks.observe(obs)
                except Exception as e:
                    self.last_error = f"obs update failed: {e!r}"
        if self.board.due(now):
            self.board.publish(self._view(phase), now)

    def _view(self, phase: ModelPhase) -> ModelStatusView:
        last_error = self.last_error or self.cache_use.last_error
        return ModelStatusView(
            model=self.model_id, phase=phase.value, pending_len=len(self.pending), queue_depth=len(self.active),
            slots={"n_seq_max": self.n_seq_max, "free": list(self.free)},
            last_cache_hit=self.admission.last_hit,
            requests=[RequestView(r.req_id, r.kind.value, r.seq, r.phase.value, r.pos, r.prompt_len,
                                  len(r.generated), r.session_id, dict(r.options.sampler), r.options.max_tokens)
                      for r in sorted(self.active.values(), key=lambda r: r.order)],
            pending=[r.req_id for r in self.pending], sessions=self.slots.describe(),
            counters=dict(self.counters), n_batch=self.n_batch, prefill_chunk_size=self.chunk, info=self.info,
            fingerprint=self.backend.fingerprint.hex(), adapters=self.adapters.describe(),
            adapter_ops_waiting=len(self.adapters.waiting), restarts=self.restarts, last_error=last_error,
            last_reset=self.last_reset)


__all__ = ["Engine", "EngineHooks", "EngineSettings", "RequestError", "Session"]
