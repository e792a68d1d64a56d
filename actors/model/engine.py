"""The model engine: admission, scheduling, cache use and sessions for one model.

Transport-free and single-threaded: the model actor runs it on its one
worker thread (every C call happens there), and tests drive it directly
with the stub backend.  It talks to the world through two callables,
``emit(dest, msg)`` for replies and stream events and ``done(req_id)``
when a request's final reply is out (the supervisor stops tracking it).

One ``tick`` is one backend ``step``: the pure planner
(``actors.model.scheduler``) picks decode rows and prefill slices; the
engine turns the results into tokens, saves and replies.

Cache use per admission: exact row, else the ``parent_key`` row, else
the longest block prefix, else cold (``CacheClient.lookup`` does that
order).  A row that carries the logits of its last position is restored
with ``kv_unpack`` + ``set_logits`` and its first token is sampled at
once, with no decode; a row without them (or cut shorter than the
prompt) gets its last position re-prefilled (the primer).  Save points:
``cold`` (the policy's aligned prefix, the prefill stops exactly there),
``continued`` (every ``continued_interval`` tokens), ``finish``,
``evict`` and ``shutdown``.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from actors.cache.client import EXACT
from actors.cache.kvc import RowMeta
from actors.cache.policy import SavePolicy, cold_save_length, continued_save_length, should_save
from actors.errors import ReasonError
from actors.model import messages as mm
from actors.model import speculative
from actors.model.adapters import AdapterError, AdapterSet
from actors.model.errors import LlamaError
from actors.model.llama import Decode, Prefill
from actors.model.output import THINKING, Delta, OutputShaper, Shaped, SpanEnd
from actors.model.request import (
    COMPLETE,
    CONTINUE,
    DONE,
    GENERATING,
    INFER,
    PREFILL_ONLY,
    PREFILLING,
    Request,
)
from actors.model.restore import unpack_cached
from actors.model.scheduler import IDLE, default_chunk, phase_of, plan_batch, select_admissions
from actors.model.stream import Markers, Span

Emit = Callable[[Any, Any], None]


class RequestError(ReasonError):
    """A request rejected before admission; becomes ``ErrorReply(reason, detail)``."""


@dataclass
class Session:
    seq: int
    tokens: list[int]
    logits: bool
    key: bytes | None
    last_used: float = field(default_factory=time.monotonic)


class Engine:
    def __init__(
        self,
        model_id: str,
        backend: Any,
        emit: Emit,
        done: Callable[[str], None] | None = None,
        cache: Any = None,
        policy: SavePolicy | None = None,
        prefill_chunk: int | None = None,
        obs: Any = None,
        obs_slot: int = -1,
        allow_debug_crash: bool = False,
        restarts: int = 0,
        markers: Markers | None = None,
        thinking_key: bytes | None = None,
        embeddings: bool = True,
        adapters_changed: Callable[[tuple[tuple[str, str, float], ...]], None] | None = None,
    ) -> None:
        self.model_id = model_id
        self.backend = backend
        self.emit = emit
        self.done_cb = done or (lambda _rid: None)
        self.cache = cache
        self.policy = policy or (cache.config.policy if cache is not None else SavePolicy())
        self.n_batch = backend.n_batch
        self.n_seq_max = backend.n_seq_max
        if self.n_batch < self.n_seq_max:
            raise ValueError(f"n_batch ({self.n_batch}) must be >= n_seq_max ({self.n_seq_max}) "
                             "so every generating sequence gets its decode row each step")
        chunk = prefill_chunk if prefill_chunk is not None else default_chunk(self.n_batch)
        if chunk < 1:
            raise ValueError(f"prefill_chunk_size must be >= 1, got {chunk}")
        self.chunk = min(chunk, self.n_batch)
        self.obs = obs
        self.obs_slot = obs_slot
        self.allow_debug_crash = allow_debug_crash
        self.restarts = restarts
        self.markers = markers or Markers()
        self._thinking_key = thinking_key
        self._thinking_end_tokens: list[int] | None = None
        self.embeddings = embeddings
        self._greedy: Any = None
        self.adapters = AdapterSet(backend, self._release_sessions)
        self._adapters_changed = adapters_changed or (lambda _specs: None)
        self.info: dict[str, Any] = dict(backend.info())
        self.free: list[int] = list(range(self.n_seq_max))
        self.active: dict[str, Request] = {}
        self.pending: deque[Request] = deque()
        self.sessions: dict[str, Session] = {}
        self.session_owner: dict[str, str] = {}
        self._order = itertools.count()
        self._crash: str | None = None
        self.last_hit: dict[str, Any] | None = None
        self.counters: dict[str, int] = {
            "requests": 0, "completed": 0, "cancelled": 0, "errors": 0, "tokens_generated": 0,
            "prefill_tokens": 0, "steps": 0, "saves": 0, "saves_dropped": 0,
        }
        self.last_error: str = ""
        self._phase = IDLE
        self._lock = threading.Lock()
        self.status_view: dict[str, Any] = {}
        self._publish()

    # ------------------------------------------------------------------ inputs

    def has_work(self) -> bool:
        return self._crash is not None or any(r.work() is not None for r in self.active.values()) or (
            bool(self.pending) and bool(self.free)) or (bool(self.adapters.waiting) and not self.active)

    def handle(self, msg: Any) -> None:
        """Apply one command (a request message from ``actors.model.messages``)."""
        req_id = getattr(msg, "req_id", "")
        reply_to = getattr(msg, "reply_to", None)
        try:
            self._dispatch(msg)
        except RequestError as e:
            self.counters["errors"] += 1
            self._reply(reply_to, mm.ErrorReply(req_id, e.reason, e.detail), req_id)
        except LlamaError as e:
            self.counters["errors"] += 1
            self._reply(reply_to, mm.ErrorReply(req_id, e.reason, e.detail), req_id)
        except Exception as e:  # a bug must answer the caller, not kill the worker
            self.counters["errors"] += 1
            self.last_error = repr(e)
            self._reply(reply_to, mm.ErrorReply(req_id, "internal_error", repr(e)), req_id)
        finally:
            self._publish()

    def _reply(self, dest: Any, msg: Any, req_id: str) -> None:
        self.emit(dest, msg)
        if req_id:
            self.done_cb(req_id)

    def _dispatch(self, msg: Any) -> None:
        be = self.backend
        if isinstance(msg, (mm.Complete, mm.Infer, mm.PrefillOnly, mm.Continue)):
            self._submit(msg)
        elif isinstance(msg, mm.Cancel):
            self._cancel(msg.target)
            if msg.req_id:
                self.done_cb(msg.req_id)
        elif isinstance(msg, mm.EndSession):
            self._reply(msg.reply_to, mm.Value(msg.req_id, self._end_session(msg.session_id)), msg.req_id)
        elif isinstance(msg, mm.Evict):
            self._reply(msg.reply_to, mm.Value(msg.req_id, self._evict(msg.session_id)), msg.req_id)
        elif isinstance(msg, mm.Tokenize):
            if not isinstance(msg.text, str):
                raise RequestError("bad_request", "text must be a string")
            value: Any = be.tokenize(msg.text, msg.add_special, msg.parse_special)
            self._reply(msg.reply_to, mm.Value(msg.req_id, value), msg.req_id)
        elif isinstance(msg, mm.Detokenize):
            self._reply(msg.reply_to, mm.Value(msg.req_id, be.detokenize(self._check_tokens(msg.tokens))),
                        msg.req_id)
        elif isinstance(msg, mm.ApplyChatTemplate):
            text = be.apply_chat_template(list(msg.messages), msg.system, msg.tools, msg.add_assistant)
            value = be.tokenize(text, True, True) if msg.tokenize else text
            self._reply(msg.reply_to, mm.Value(msg.req_id, value), msg.req_id)
        elif isinstance(msg, mm.Embed):
            if not self.embeddings:
                raise RequestError("embeddings_disabled", "load the model with embeddings=True to embed")
            tokens = self._prompt_tokens(msg.input, mm.GenOptions())
            self._reply(msg.reply_to, mm.Value(msg.req_id, be.embed(tokens)), msg.req_id)
        elif isinstance(msg, mm.EmbedBatch):
            if not self.embeddings:
                raise RequestError("embeddings_disabled", "load the model with embeddings=True to embed")
            if isinstance(msg.inputs, (str, bytes)) or not isinstance(msg.inputs, (list, tuple)):
                raise RequestError("bad_request", "inputs: expected a list of texts or token lists")
            token_lists = [self._prompt_tokens(x, mm.GenOptions()) for x in msg.inputs]
            if any(not t for t in token_lists):
                raise RequestError("bad_request", "an input is empty")
            self._reply(msg.reply_to, mm.Value(msg.req_id, [be.embed(t) for t in token_lists]), msg.req_id)
        elif isinstance(msg, (mm.LoadAdapter, mm.UnloadAdapter, mm.SetAdapterScale)):
            self.adapters.waiting.append(msg)
            self._apply_adapter_ops()
        elif isinstance(msg, mm.ListAdapters):
            self._reply(msg.reply_to, mm.Value(msg.req_id, self.adapters.describe()), msg.req_id)
        elif isinstance(msg, mm.Verify):
            self._reply(msg.reply_to, mm.Value(msg.req_id, self._verify(msg)), msg.req_id)
        elif isinstance(msg, mm.CachedPrefix):
            self._reply(msg.reply_to, mm.Value(msg.req_id, self._cached_prefix(msg.tokens)), msg.req_id)
        elif isinstance(msg, mm.VramInfoReq):
            self._reply(msg.reply_to, mm.Value(msg.req_id, be.vram()), msg.req_id)
        elif isinstance(msg, mm.DebugCrash):
            if not self.allow_debug_crash:
                raise RequestError("debug_disabled", "load the model with allow_debug_crash=True")
            if msg.how not in ("segv", "abort", "kill", "raise"):
                raise RequestError("bad_option", "how: expected segv, abort, kill or raise")
            self._crash = msg.how
            if msg.req_id:
                self.done_cb(msg.req_id)
        elif isinstance(msg, mm.ModelStatusReq):
            self._reply(msg.reply_to, mm.ModelStatus(msg.req_id, self.model_id, self.status()), msg.req_id)
        else:
            raise RequestError("bad_request", f"unknown request {type(msg).__name__}")

    # ------------------------------------------------------------------ validation

    def _check_tokens(self, tokens: Any) -> list[int]:
        if isinstance(tokens, (str, bytes)) or not isinstance(tokens, (list, tuple)):
            raise RequestError("bad_request", "expected a list of token ids")
        out = list(tokens)
        if out and not (all(type(t) is int for t in out) and min(out) >= 0 and max(out) < self.backend.n_vocab):
            bad = next(t for t in out if not self.backend.valid_token(t))
            raise RequestError("bad_token", f"invalid token id {bad!r}")
        return out

    def _prompt_tokens(self, prompt: Any, opts: mm.GenOptions) -> list[int]:
        if isinstance(prompt, str):
            return self.backend.tokenize(prompt, opts.add_special, opts.parse_special)
        return self._check_tokens(prompt)

    def _check_options(self, opts: Any) -> mm.GenOptions:
        if not isinstance(opts, mm.GenOptions):
            raise RequestError("bad_option", "options must be GenOptions")
        if isinstance(opts.max_tokens, bool) or not isinstance(opts.max_tokens, int) or opts.max_tokens < 0:
            raise RequestError("bad_option", f"max_tokens: expected an int >= 0, got {opts.max_tokens!r}")
        if opts.session_id is not None and not isinstance(opts.session_id, str):
            raise RequestError("bad_option", "session_id must be a string")
        if opts.parent_key is not None and not isinstance(opts.parent_key, bytes):
            raise RequestError("bad_option", "parent_key must be bytes")
        if not isinstance(opts.sampler, dict):
            raise RequestError("bad_option", "sampler must be a dict of sampler options")
        stops = opts.stop_sequences
        if isinstance(stops, str) or not isinstance(stops, (tuple, list)) or not all(
                isinstance(x, str) and x for x in stops):
            raise RequestError("bad_option", "stop_sequences: expected a list of non-empty strings")
        if len(stops) > 32 or any(len(x) > 512 for x in stops):
            raise RequestError("bad_option", "stop_sequences: at most 32 strings of at most 512 characters")
        if opts.thinking not in ("enabled", "disabled"):
            raise RequestError("bad_option", f"thinking: expected 'enabled' or 'disabled', got {opts.thinking!r}")
        budget = opts.thinking_budget_tokens
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
            raise RequestError("bad_option", f"thinking_budget_tokens: expected an int, got {budget!r}")
        t = opts.timeout_s
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0):
            raise RequestError("bad_option", f"timeout_s: expected a number > 0, got {t!r}")
        return opts

    # ------------------------------------------------------------------ submit / admit

    def _submit(self, msg: Any) -> None:
        opts = self._check_options(msg.options)
        kind = {mm.Complete: COMPLETE, mm.Infer: INFER, mm.PrefillOnly: PREFILL_ONLY,
                mm.Continue: CONTINUE}[type(msg)]
        stream = kind == INFER or (kind == CONTINUE and msg.stream)
        sid = opts.session_id
        if sid is not None and sid in self.session_owner:
            raise RequestError("sticky_busy", f"session {sid!r} has a request in flight")
        if kind == CONTINUE:
            if sid is None or sid not in self.sessions:
                raise RequestError("no_session", f"session {sid!r} is not pinned on this model")
            if isinstance(msg.suffix, str):  # a tail, not a new text: no BOS
                suffix = self.backend.tokenize(msg.suffix, False, opts.parse_special) if msg.suffix else []
            else:
                suffix = self._check_tokens(msg.suffix)
            target = list(self.sessions[sid].tokens) + suffix
        else:
            target = self._prompt_tokens(msg.prompt, opts) if msg.prompt != "" else []
            if not target:
                raise RequestError("bad_request", "empty prompt")
            if sid is not None and sid not in self.sessions and len(self.sessions) >= self.n_seq_max:
                raise RequestError("session_pool_full",
                                   f"all {self.n_seq_max} sequences are pinned by sessions; end_session one first")
        if len(target) > self.backend.n_ctx_seq:
            raise RequestError("context_overflow",
                               f"{len(target)} tokens do not fit a sequence of {self.backend.n_ctx_seq}")
        try:
            sampler = self.backend.new_sampler(opts.sampler) if kind != PREFILL_ONLY else None
        except LlamaError as e:
            raise RequestError(e.reason, e.detail) from None
        shaper = OutputShaper(self.markers, thinking=opts.thinking == "enabled" and self.markers.has_thinking,
                              stops=tuple(opts.stop_sequences), key=self._thinking_key)
        req = Request(msg.req_id, kind, msg.reply_to, stream, opts, target, next(self._order), sampler=sampler,
                      shaper=shaper, fingerprint=self.backend.fingerprint)
        if opts.timeout_s is not None:
            req.deadline = req.t_submit + float(opts.timeout_s)
        if kind == CONTINUE:
            req.prompt_len = len(target)
        if sid is not None:
            self.session_owner[sid] = req.req_id
        self.counters["requests"] += 1
        self.pending.append(req)
        self._admit_pending()

    def _needs_slot(self, req: Request) -> bool:
        return not (req.session_id is not None and req.session_id in self.sessions)

    def _admit_pending(self) -> None:
        if not self.pending or self.adapters.waiting:  # new work waits behind an adapter change
            return
        if not self.free and any(self._needs_slot(r) for r in self.pending):
            # Only idle sessions hold the slots and nothing running will give one
            # back: evict the least recently used idle session (saved first).
            releasing = any(r.session_id is None for r in self.active.values())
            if not releasing:
                idle = [(s.last_used, sid) for sid, s in self.sessions.items() if sid not in self.session_owner]
                if idle:
                    self._drop_session(min(idle)[1], "evict")
        chosen = set(select_admissions([(r.req_id, self._needs_slot(r)) for r in self.pending], len(self.free)))
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
                reason = getattr(e, "reason", "internal_error")
                self._fail(req, reason, getattr(e, "detail", "") or repr(e))

    def _start(self, req: Request) -> None:
        be = self.backend
        req.t_admit = time.perf_counter()
        req.phase = PREFILLING
        self.active[req.req_id] = req
        sid = req.session_id
        target = req.target
        if sid is not None and sid in self.sessions:
            s = self.sessions[sid]
            stored = s.tokens
            if req.kind == CONTINUE or (len(target) >= len(stored) and target[: len(stored)] == stored):
                req.seq = s.seq
                req.read = len(stored)
                req.hit_kind = "continuation" if req.kind == CONTINUE else "sticky"
                if s.key:
                    req.saved[len(stored)] = s.key
                    req.last_saved = len(stored)
                s.last_used = time.monotonic()
                self._position_restored(req, len(stored), s.logits)
                self._set_hit(req)
                return
            self._drop_session(sid, None)  # diverged: free it, fall through to the normal path
        req.seq = self.free.pop(0)
        be.seq_rm(req.seq)
        self._restore(req)
        if self._cache_on(req) and req.kind != CONTINUE:
            b = cold_save_length(self.policy, len(target))
            if b > req.pos:
                req.boundary = b
        self._set_hit(req)

    def _set_hit(self, req: Request) -> None:
        self.last_hit = {"kind": req.hit_kind, "prefix_len": req.read}
        if req.pos == len(req.target) and req.logits:
            self._after_prefill(req)

    def _position_restored(self, req: Request, length: int, has_logits: bool) -> None:
        """KV holds target[:length]; get logits for it (kept ones, or re-prefill the last position)."""
        seq = req.seq
        assert seq is not None
        if length < len(req.target):
            req.pos = length
        elif has_logits:
            req.pos = length
            req.logits = True
        else:
            self.backend.seq_rm(seq, length - 1, -1)
            req.pos = length - 1

    def _restore(self, req: Request) -> None:
        if not self._cache_on(req):
            return
        be, cache, seq = self.backend, self.cache, req.seq
        assert seq is not None
        t0 = time.perf_counter()
        try:
            got = unpack_cached(be, cache, seq, req.target, req.fingerprint or be.fingerprint,
                                req.options.parent_key)
            if got is None:
                return
            hit, loaded = got
            matched = hit.matched
            logits_ok = False
            if matched == len(req.target) and hit.logits_usable and loaded.logits is not None and len(loaded.logits):
                be.set_logits(seq, loaded.logits)
                logits_ok = True
        except LlamaError as e:
            self.last_error = f"restore failed: {e}"
            be.seq_rm(seq)
            return
        req.read = matched
        req.hit_kind = "exact" if hit.kind == EXACT else "partial"
        if not hit.needs_truncation:
            req.saved[matched] = hit.key
            req.last_saved = matched
        self._position_restored(req, matched, logits_ok)
        req.restore_s = time.perf_counter() - t0

    def _cache_on(self, req: Request | None = None) -> bool:
        return self.cache is not None and (req is None or req.options.cache)

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
        self._admit_pending()
        reqs = sorted(self.active.values(), key=lambda r: r.order)
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
            elif req.shaper.wants_greedy() and not req.options.sampler.get("grammar"):
                # Tool-call syntax: greedy, so the bytes are deterministic (a grammar, when given, rules instead).
                greedy.add(pr.seq)
                brows.append(Decode(pr.seq, self._greedy_sampler()))
            else:
                brows.append(Decode(pr.seq, req.sampler))
        try:
            results = self.backend.step(brows)
        except LlamaError as e:
            for pr in rows:
                self._fail(by_seq[pr.seq], e.reason, e.detail)
            return
        self.counters["steps"] += 1
        for pr, res in zip(rows, results, strict=True):
            req = by_seq[pr.seq]
            if req.phase == DONE:
                continue
            if pr.kind == "prefill":
                req.pos += pr.n
                self.counters["prefill_tokens"] += pr.n
                req.logits = req.pos == len(req.target)
                if req.boundary and req.pos == req.boundary:
                    self._save(req, "cold")
                if req.pos == len(req.target):
                    self._after_prefill(req)
            else:
                req.logits = False
                if pr.seq in greedy and not res.eog:
                    self._accept(req, [int(res.token)])
                self._on_token(req, int(res.token), decoded=not res.eog, eog=res.eog)

    def _after_prefill(self, req: Request) -> None:
        if not req.t_prefill_done:
            req.t_prefill_done = time.perf_counter()
        req.phase = GENERATING
        if req.kind == PREFILL_ONLY:
            self._finish(req, "prefill")
            return
        if not req.wants_token():
            self._finish(req, "length")
            return
        if req.generated:
            return
        # Keep the prompt's last logits before sampling consumes them: saved with the prompt's row,
        # the same prompt next time is an exact hit (restore + sample, no decode, same reply).
        prompt_logits = self._prompt_logits(req)
        # First token straight from the pending logits: no decode before it is out.
        try:
            tok = self.backend.sample(req.seq, req.sampler)
        except LlamaError:
            tok = None
        if prompt_logits is not None:
            self._save(req, "cold", logits=prompt_logits)
        if tok is not None:
            req.logits = False
            self._on_token(req, tok, decoded=False, eog=self.backend.is_eog(tok))

    def _prompt_logits(self, req: Request) -> bytes | None:
        """Logits worth saving with a whole-prompt row, or None when no such save is due."""
        if (not self._cache_on(req) or req.seq is None or req.pos != len(req.target)
                or req.pos < self.policy.min_tokens or req.pos in req.saved):
            return None
        try:
            return self.backend.get_logits(req.seq)
        except LlamaError:
            return None

    def _on_token(self, req: Request, tok: int, decoded: bool, eog: bool) -> None:
        if eog:
            self._finish(req, "stop")
            return
        req.add_token(tok, decoded)
        if decoded:
            req.logits = True
        self.counters["tokens_generated"] += 1
        shaped = req.shaper.feed(self.backend.piece(tok))
        self._send_shaped(req, shaped, (tok,))
        if shaped.stop is not None:
            self._finish(req, "stop")
            return
        budget = req.options.thinking_budget_tokens
        if budget is not None and budget > 0 and req.shaper.span is Span.THINKING:
            if any(isinstance(e, Delta) and e.kind == THINKING for e in shaped.events):
                req.thinking_tokens += 1
            if req.thinking_tokens >= budget:
                self._force_thinking_end(req)
        if not req.wants_token() or len(req.target) >= self.backend.n_ctx_seq:
            self._finish(req, "length")
            return
        if decoded and self._cache_on(req):
            n = continued_save_length(self.policy, req.pos, req.last_saved)
            if n and n == req.pos:
                self._save(req, "continued")

    def _force_thinking_end(self, req: Request) -> None:
        """Budget spent: end the block for the caller and append the end marker to the sequence,
        so the model itself moves on to its answer (not just the caller's view of it)."""
        self._send_shaped(req, req.shaper.close_thinking(), ())
        if self._thinking_end_tokens is None:
            end = self.markers.thinking_end.decode("utf-8", "replace")
            self._thinking_end_tokens = self.backend.tokenize(end, False, True)
        forced = list(self._thinking_end_tokens)
        room = self.backend.n_ctx_seq - len(req.target)
        for t in forced[:max(0, room)]:
            req.add_token(t, decoded=False)
        self._accept(req, forced)
        self.counters["tokens_generated"] += len(forced)

    def _accept(self, req: Request, tokens: list[int]) -> None:
        """Tokens the request's own sampler did not pick still enter its history (repetition penalty)."""
        if req.sampler is None:
            return
        for t in tokens:
            try:
                self.backend.accept(req.sampler, t)
            except Exception:  # a grammar may refuse a forced token: its state is then left as is
                return

    def _greedy_sampler(self) -> Any:
        if self._greedy is None:
            self._greedy = self.backend.new_sampler({})
        return self._greedy

    def _send_shaped(self, req: Request, shaped: Shaped, token_ids: tuple[int, ...]) -> None:
        """Stream one feed's events in order; token ids ride on the first chunk (or an empty one)."""
        if not req.stream:
            return
        ts = time.time()
        for ev in shaped.events:
            if isinstance(ev, Delta):
                self.emit(req.reply_to, mm.TokenChunk(req.req_id, ev.text, token_ids, ts, ev.kind))
                token_ids = ()
            elif isinstance(ev, SpanEnd):
                if ev.kind == THINKING:
                    self.emit(req.reply_to, mm.ThinkingEnd(req.req_id, ev.text, ev.signature, ev.complete))
                else:
                    self.emit(req.reply_to, mm.ToolCallEnd(req.req_id, ev.data, ev.complete))
        if token_ids:
            self.emit(req.reply_to, mm.TokenChunk(req.req_id, "", token_ids, ts, req.shaper.span.value))

    def _expire(self) -> None:
        now = time.perf_counter()
        for req in [*self.pending, *self.active.values()]:
            if req.deadline is not None and now >= req.deadline and req.phase != DONE:
                if req in self.pending:
                    self.pending = deque(r for r in self.pending if r is not req)
                self._finish(req, "timeout")

    # ------------------------------------------------------------------ saves

    def _save_state(self, seq: int, tokens: Sequence[int], reason: str, tier: str | None,
                    logits: bytes | None = None, fingerprint: bytes | None = None) -> Any:
        be = self.backend
        kv = be.kv_pack(seq)
        if logits is None:
            try:
                logits = be.get_logits(seq)
            except LlamaError:
                logits = None
        meta = RowMeta(fingerprint=fingerprint or be.fingerprint, quant=be.quant, ctx_hash=be.ctx_hash,
                       tokens=list(tokens), context_size=be.context_size, model=self.model_id)
        res = self.cache.save(reason, meta, kv, logits, tier)
        if res.accepted:
            self.counters["saves"] += 1
        elif res.detail != "duplicate":
            self.counters["saves_dropped"] += 1
        return res

    def _save(self, req: Request, reason: str, logits: bytes | None = None) -> None:
        if not self._cache_on(req) or req.seq is None or req.pos <= 0:
            return
        if reason != "cold" and not should_save(self.policy, reason, req.pos, req.last_saved):
            return
        try:
            res = self._save_state(req.seq, req.target[: req.pos], reason, req.options.tier, logits,
                                   req.fingerprint)
        except Exception as e:  # a failed save never fails the request
            self.last_error = f"{reason} save failed: {e!r}"
            return
        if res.accepted or res.detail == "duplicate":
            req.note_saved(req.pos, res.key, res.accepted)

    # ------------------------------------------------------------------ endings

    def _release(self, req: Request, keep_session: bool) -> None:
        sid = req.session_id
        if sid is not None and self.session_owner.get(sid) == req.req_id:
            del self.session_owner[sid]
        if req.sampler is not None:
            with contextlib.suppress(Exception):
                self.backend.free_sampler(req.sampler)
            req.sampler = None
        self.active.pop(req.req_id, None)
        if req.seq is None:
            return
        if keep_session and sid is not None:
            old = self.sessions.get(sid)
            key = req.saved.get(req.pos)
            if old is not None and old.key and old.key != key and self.cache is not None:
                self.cache.unpin(old.key)
            if key and self.cache is not None and (old is None or old.key != key):
                self.cache.pin(key)
            self.sessions[sid] = Session(req.seq, req.target[: req.pos], req.logits and req.pos == len(req.target),
                                         key)
        else:
            if sid is not None and sid in self.sessions and self.sessions[sid].seq == req.seq:
                s = self.sessions.pop(sid)
                if s.key and self.cache is not None:
                    self.cache.unpin(s.key)
            self.backend.seq_rm(req.seq)
            self.free.append(req.seq)
            self.free.sort()

    def _finish(self, req: Request, reason: str) -> None:
        if req.phase == DONE:
            return
        self._save(req, "finish")
        self._send_shaped(req, req.shaper.finish(), ())
        req.phase = DONE
        req.t_done = time.perf_counter()
        self._release(req, keep_session=True)
        result = req.completion(reason)
        self.counters["cancelled" if reason == "cancelled" else "completed"] += 1
        self._publish()  # observers see the new state no later than the caller sees its reply
        self._reply(req.reply_to, mm.Done(req.req_id, result) if req.stream else result, req.req_id)

    def _fail(self, req: Request, reason: str, detail: str = "") -> None:
        if req.phase == DONE:
            return
        req.phase = DONE
        self.pending = deque(r for r in self.pending if r is not req)
        self._release(req, keep_session=False)
        self.counters["errors"] += 1
        self._publish()
        self._reply(req.reply_to, mm.ErrorReply(req.req_id, reason, detail), req.req_id)

    def _cancel(self, target: str) -> None:
        for req in list(self.pending):
            if req.req_id == target:
                self.pending = deque(r for r in self.pending if r is not req)
                self._finish(req, "cancelled")
                return
        req = self.active.get(target)
        if req is not None:
            self._finish(req, "cancelled")

    # ------------------------------------------------------------------ adapters, verify, inspection

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
                self._reply(msg.reply_to, mm.ErrorReply(msg.req_id, e.reason, e.detail), msg.req_id)
            except Exception as e:
                self.counters["errors"] += 1
                self._reply(msg.reply_to, mm.ErrorReply(msg.req_id, "internal_error", repr(e)), msg.req_id)
            else:
                self._adapters_changed(self.adapters.specs())  # before the reply: a crash right after keeps it
                self._reply(msg.reply_to, mm.Value(msg.req_id, value), msg.req_id)

    def restore_adapters(self, specs: tuple[tuple[str, str, float], ...]) -> list[str]:
        """After a restart: load the adapter set the model had; returns one line per adapter that failed."""
        failed = []
        for aid, path, scale in specs:
            try:
                self.adapters.apply(mm.LoadAdapter(self.model_id, "", None, path=path, scale=scale, adapter_id=aid))
            except Exception as e:
                failed.append(f"{aid}: {getattr(e, 'reason', '')} {getattr(e, 'detail', '') or e}".strip())
        if failed:
            self.last_error = "adapters not restored: " + "; ".join(failed)
            self._adapters_changed(self.adapters.specs())
        self._publish()
        return failed

    def _release_sessions(self) -> None:
        """Idle sessions hold KV of the old adapter set: save them under its fingerprint and let go."""
        for sid in list(self.sessions):
            self._drop_session(sid, "evict")

    def _verify(self, msg: mm.Verify) -> dict[str, Any]:
        if self.active or self.pending or self.adapters.waiting:
            raise RequestError("busy", "verify runs only while the model is idle")
        if not self.free:
            raise RequestError("busy", "no free sequence (all are pinned by sessions)")
        prefix = self._prompt_tokens(msg.prefix, mm.GenOptions())
        cands = self._check_tokens(msg.candidates)
        if not prefix:
            raise RequestError("bad_request", "empty prefix")
        if len(prefix) + len(cands) > self.backend.n_ctx_seq:
            raise RequestError("context_overflow", f"{len(prefix) + len(cands)} tokens do not fit a sequence")
        if len(cands) + 1 > self.n_batch:
            raise RequestError("batch_overflow", f"at most {self.n_batch - 1} candidates per verify")
        return speculative.verify(self.backend, self.cache, self.free[0], prefix, cands, self.n_batch)

    def _cached_prefix(self, tokens: Any) -> dict[str, Any]:
        toks = self._prompt_tokens(tokens, mm.GenOptions())
        none = {"length": 0, "kind": "none", "tier": None, "key": None}
        if self.cache is None or not toks:
            return none
        be = self.backend
        hit = self.cache.lookup(be.fingerprint, be.quant, be.ctx_hash, toks, record=False)
        if hit is None:
            return none
        return {"length": hit.matched, "kind": hit.kind, "tier": hit.tier, "key": hit.key.hex()}

    # ------------------------------------------------------------------ sessions

    def _drop_session(self, sid: str, save_reason: str | None) -> bytes | None:
        s = self.sessions.pop(sid, None)
        if s is None:
            return None
        key = None
        if save_reason and self.cache is not None and s.tokens and should_save(self.policy, save_reason,
                                                                                len(s.tokens), 0):
            try:
                res = self._save_state(s.seq, s.tokens, save_reason, None)
                key = res.key if (res.accepted or res.detail == "duplicate") else None
            except Exception as e:
                self.last_error = f"{save_reason} save failed: {e!r}"
        if s.key and self.cache is not None:
            self.cache.unpin(s.key)
        self.backend.seq_rm(s.seq)
        self.free.append(s.seq)
        self.free.sort()
        return key or s.key

    def _end_session(self, sid: str) -> bool:
        if sid in self.session_owner:
            raise RequestError("sticky_busy", f"session {sid!r} has a request in flight")
        if sid not in self.sessions:
            return False
        self._drop_session(sid, None)
        return True

    def _evict(self, sid: str | None) -> dict[str, Any]:
        ids = [sid] if sid is not None else [s for s in self.sessions if s not in self.session_owner]
        keys = []
        n = 0
        for s in ids:
            if s in self.session_owner:
                raise RequestError("sticky_busy", f"session {s!r} has a request in flight")
            if s in self.sessions:
                n += 1
                key = self._drop_session(s, "evict")
                if key:
                    keys.append(key)
        return {"evicted": n, "keys": keys}

    def shutdown(self, save: bool = True) -> int:
        """Graceful stop: save live state (reason ``shutdown``), answer everyone, free sequences."""
        saved = 0
        for req in list(self.active.values()):
            if save and req.seq is not None and req.pos > 0:
                before = req.max_saved
                self._save(req, "shutdown")
                saved += req.max_saved > before
            self._fail(req, "model_stopping", "the model is being unloaded")
        for req in list(self.pending):
            self._fail(req, "model_stopping", "the model is being unloaded")
        for sid in list(self.sessions):
            if self._drop_session(sid, "shutdown" if save else None):
                saved += 1
        if self._greedy is not None:
            with contextlib.suppress(Exception):
                self.backend.free_sampler(self._greedy)
            self._greedy = None
        for op in list(self.adapters.waiting):
            self._reply(op.reply_to, mm.ErrorReply(op.req_id, "model_stopping", "the model is being unloaded"),
                        op.req_id)
        self.adapters.waiting.clear()
        self.adapters.close()
        self._publish()
        return saved

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.status_view)

    def _publish(self) -> None:
        # A request whose prompt is in is generating even while its sampled first
        # token waits for its one-token append; otherwise the planner's view.
        if any(r.phase == GENERATING for r in self.active.values()):
            phase = GENERATING
        else:
            phase = phase_of([w for w in (r.work() for r in self.active.values()) if w is not None])
        view = {
            "model": self.model_id,
            "phase": phase,
            "pending_len": len(self.pending),
            "queue_depth": len(self.active),
            "slots": {"n_seq_max": self.n_seq_max, "free": list(self.free)},
            "last_cache_hit": self.last_hit,
            "requests": [
                {"req_id": r.req_id, "kind": r.kind, "seq": r.seq, "phase": r.phase, "pos": r.pos,
                 "prompt_tokens": r.prompt_len, "generated": len(r.generated), "session_id": r.session_id,
                 "sampler": dict(r.options.sampler), "max_tokens": r.options.max_tokens}
                for r in sorted(self.active.values(), key=lambda r: r.order)
            ],
            "pending": [r.req_id for r in self.pending],
            "sessions": [{"session_id": sid, "seq": s.seq, "tokens": len(s.tokens),
                          "busy": sid in self.session_owner, "finish_key": s.key.hex() if s.key else None}
                         for sid, s in self.sessions.items()],
            "counters": dict(self.counters),
            "n_batch": self.n_batch,
            "prefill_chunk_size": self.chunk,
            "info": self.info,
            "fingerprint": self.backend.fingerprint.hex(),
            "adapters": self.adapters.describe(),
            "adapter_ops_waiting": len(self.adapters.waiting),
            "restarts": self.restarts,
            "last_error": self.last_error,
        }
        with self._lock:
            self.status_view = view
        if self.obs is not None and self.obs_slot >= 0:
            hit = self.last_hit
            try:
                self.obs.update(self.obs_slot, phase=phase, pending_len=len(self.pending),
                                queue_depth=len(self.active), hit=hit["kind"] if hit else None,
                                prefix_len=int(hit["prefix_len"]) if hit else None)
            except Exception as e:
                self.last_error = f"obs update failed: {e!r}"
        self._phase = phase




__all__ = ["Engine", "RequestError", "Session"]
