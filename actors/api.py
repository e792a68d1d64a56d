"""A thin synchronous Python client for the actor tree.

::

    from actors.api import System

    with System() as system:                       # starts a loopback-only tree, stops it on exit
        system.load_model("smol")                  # the bundled SmolLM2; path=... for another GGUF
        r = system.complete("smol", "The capital of France is", max_tokens=16)
        print(r.reply, r.cache_hit_kind, r.finish_key)
        for chunk in system.infer("smol", "Once upon a time", max_tokens=64):
            print(chunk.text, end="", flush=True)

    system = System.attach(7700)                   # another shell, a running daemon

Every call uses a private thespian context per thread and matches
replies by ``req_id`` (``ActorSystem.ask`` alone returns whatever
message reaches the caller first).  Errors arrive as
:class:`ModelError` with a machine-readable ``reason``.

Keyword options of ``complete``/``infer``/``prefill_only``/``continue_``:
``max_tokens``, ``parent_key``, ``session_id``, ``cache``, ``tier``,
``add_special``, ``parse_special``, and any sampler option
(``temperature``, ``top_k``, ``top_p``, ``min_p``,
``repetition_penalty``, ``repeat_last_n``, ``seed``, ``grammar``), or a
``sampler={...}`` dict.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from actors.attach import TreeLink
from actors.cache import messages as cm
from actors.errors import ReasonError
from actors.inbox import Inbox
from actors.model import messages as mm
from actors.model.door import DOOR_REQUESTS, DOORLESS_PHASES, door_of
from actors.obs import ObsRecord, ObsTable
from actors.supervisor import messages as sm
from actors.supervisor import runtime

_GEN_FIELDS = {"max_tokens", "parent_key", "session_id", "add_special", "parse_special", "cache", "tier",
               "stop_sequences", "thinking", "thinking_budget_tokens", "timeout_s", "expect_committed"}
_SAMPLER_FIELDS = {"temperature", "top_k", "top_p", "min_p", "repetition_penalty", "repeat_last_n", "seed",
                   "grammar", "grammar_root", "logit_bias"}
DEFAULT_TIMEOUT = 300.0


class ModelError(ReasonError, RuntimeError):
    """A request failed; ``reason`` is machine-readable (see ``actors.errors.ErrorReply``)."""

    def __init__(self, reason: str, detail: str = "", req_id: str = "") -> None:
        super().__init__(reason, detail)
        self.req_id = req_id


def gen_options(kw: dict[str, Any]) -> mm.GenOptions:
    """Split keyword options into GenOptions fields and sampler options."""
    given = kw.pop("sampler", None)
    if given is not None and not isinstance(given, dict):
        raise ModelError("bad_option", f"sampler: expected a dict of sampler options, got {type(given).__name__}")
    sampler = dict(given or {})
    fields: dict[str, Any] = {}
    for k, v in kw.items():
        if k in _GEN_FIELDS:
            fields[k] = tuple(v) if k in ("stop_sequences", "expect_committed") and isinstance(v, list) else v
        elif k in _SAMPLER_FIELDS:
            sampler[k] = v
        else:
            raise ModelError("bad_option", f"{k}: unknown option (known: "
                                           f"{', '.join(sorted(_GEN_FIELDS | _SAMPLER_FIELDS | {'sampler'}))})")
    return mm.GenOptions(sampler=sampler, **fields)


def _new_id() -> str:
    return uuid.uuid4().hex


class TokenStream:
    """Synchronous iterator over an ``infer`` stream.

    Yields ``TokenChunk``s (``kind`` text, thinking or tool_call) and, where
    a model has markers, ``ThinkingEnd`` / ``ToolCallEnd`` events in stream
    order.  ``result`` holds the final ``Completion`` once the stream ends.  Leaving
    the loop early (``break``, an exception, ``close()``) cancels the request
    and waits for its final ``Done``, so nothing is left generating.
    """

    def __init__(self, system: System, model: str, req_id: str, mailbox: Inbox, timeout: float) -> None:
        self.system = system
        self.model = model
        self.req_id = req_id
        self._mb = mailbox
        self.timeout = timeout
        self.result: mm.Completion | None = None
        self.finished = False
        self.first_token_at: float | None = None

    def __iter__(self) -> Iterator[mm.TokenChunk | mm.ThinkingEnd | mm.ToolCallEnd]:
        try:
            while not self.finished:
                msg = self._mb.recv(self.req_id, self.timeout)
                if isinstance(msg, mm.TokenChunk):
                    if self.first_token_at is None:
                        self.first_token_at = time.perf_counter()
                    yield msg
                elif isinstance(msg, (mm.ThinkingEnd, mm.ToolCallEnd)):
                    yield msg
                else:
                    self._end(msg)
        finally:
            if not self.finished:
                with contextlib.suppress(Exception):
                    self.close()

    def _end(self, msg: Any) -> None:
        self.finished = True
        self._mb.finish(self.req_id)
        if isinstance(msg, mm.Done):
            self.result = msg.result
        elif isinstance(msg, mm.ErrorReply):
            raise ModelError(msg.reason, msg.detail, msg.req_id)
        else:
            raise ModelError("bad_reply", repr(msg), self.req_id)

    def text(self) -> str:
        """Consume the stream and return the answer text (thinking and tool calls excluded)."""
        parts = [c.text for c in self if isinstance(c, mm.TokenChunk) and c.kind == "text"]
        return "".join(parts)

    def cancel(self) -> None:
        if not self.finished:
            self.system.cancel(self.model, self.req_id)

    def close(self, timeout: float = 30.0) -> None:
        """Cancel if still running and wait for the final message."""
        if self.finished:
            return
        self.cancel()
        deadline = time.monotonic() + timeout
        while not self.finished:
            try:
                msg = self._mb.recv(self.req_id, max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                self.finished = True
                self._mb.finish(self.req_id)
                return
            if not isinstance(msg, (mm.TokenChunk, mm.ThinkingEnd, mm.ToolCallEnd)):
                with contextlib.suppress(ModelError):
                    self._end(msg)

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class System:
    """A running actor tree: started here (and stopped on exit) or attached to by port."""

    def __init__(self, port: int | None = None, *, cache: Any = None, attach: bool = False, multi_host: bool = False,
                 start_timeout: float = 60.0, log_path: str | None = None, thinking_key: bytes | str | None = None,
                 pressure: dict[str, Any] | None = None, cores: int | None = None) -> None:
        """``thinking_key``: the node-wide HMAC key that signs thinking blocks (none: empty signatures);
        ``pressure``: memory-pressure settings (``source``, ``high``, ``low``, ``interval_s``, ``tiers``);
        ``cores``: the node's core budget, shared among the models' llama.cpp threads (default: every
        core this process may run on; see ``actors.supervisor.cores``)."""
        self._link = TreeLink(port, cache=cache, attach=attach, multi_host=multi_host, start_timeout=start_timeout,
                              log_path=log_path, thinking_key=thinking_key, pressure=pressure, cores=cores)
        self.port = self._link.port
        self.asys = self._link.asys
        self._guard = self._link.guard
        self.owner = not attach
        self._closed = False
        self._inbox: Inbox | None = None
        self._lock = threading.Lock()
        self._obs: ObsTable | None = None

    @classmethod
    def attach(cls, port: int, multi_host: bool = False) -> System:
        return cls(port, attach=True, multi_host=multi_host)

    # ------------------------------------------------------------------ plumbing

    @property
    def tree(self) -> sm.TreeInfo:
        """The tree's addresses, current: after the model supervisor, the cache meta or the root was restarted,
        the new ones.

        Model requests go to ``tree.models``; a handle that cached a dead process's address would wait
        forever, so a dead one (its pid is watched, on this host) makes this ask the root again."""
        return self._link.current()

    @property
    def admin_pid(self) -> int | None:
        return self._link.admin_pid

    def pids(self) -> list[int]:
        """Every process of the tree (admin session)."""
        pid = self.admin_pid
        return runtime.tree_pids(pid) if pid else []

    def inbox(self) -> Inbox:
        """This client's inbox (started on first use): the HTTP bridge and your own code can route replies
        through it (``Inbox.open(req_id, sink)``)."""
        with self._lock:
            if self._inbox is None:
                self._inbox = Inbox(self.asys, self._guard, self._tell_door_closed)
            return self._inbox

    def _call(self, msg: Any, timeout: float = DEFAULT_TIMEOUT, dest: Any = None) -> Any:
        mb = self.inbox()
        msg = replace(msg, reply_to=mb.address)
        mb.open(msg.req_id)
        try:
            self._send_model(mb, msg, dest)
            reply = mb.recv(msg.req_id, timeout)
        finally:
            mb.finish(msg.req_id)
        if isinstance(reply, mm.ErrorReply):
            raise ModelError(reply.reason, reply.detail, reply.req_id)
        return reply

    # ------------------------------------------------------------------ models

    def load_model(self, model_id: str, path: str | None = None, *, backend: str = "llama",
                   context: dict[str, Any] | None = None, model_options: dict[str, Any] | None = None,
                   prefill_chunk_size: int | None = None, stub: dict[str, Any] | None = None,
                   use_cache: bool = True, allow_debug_crash: bool = False, embeddings: bool = False,
                   thinking_markers: dict[str, str] | None = None, tool_call_markers: dict[str, str] | None = None,
                   max_pending: int | None = None, on_full: str = "queue", decode_budget_ms: int | None = None,
                   timeout: float = 300.0) -> dict[str, Any]:
        """Start a model actor (its own process) and wait until the model is loaded; returns its info.

        ``embeddings``: keep a small pooled-embeddings context beside the generation one (``embed``).
        ``thinking_markers`` ``{"start", "end"}`` and ``tool_call_markers`` ``{"start", "end",
        "payload_start"?, "payload_end"?}`` are marker strings of this model's chat format.
        ``max_pending`` (default 1024) requests may wait for a sequence; ``on_full="error"`` refuses a
        request that cannot start at once instead of queueing it (both: ``seq_capacity``).
        ``decode_budget_ms`` (default 60000, 0: unbounded) bounds every decode: past it the decode is
        stopped (``decode_timeout``) and the context reset in place, the model stays loaded.
        """
        from actors.model.validate import RequestError, check_decode_budget, check_limits

        try:
            check_limits(max_pending, on_full)
            check_decode_budget(decode_budget_ms)
        except RequestError as e:
            raise ModelError(e.reason, e.detail) from None
        cfg = mm.ModelConfig(backend=backend, path=str(path) if path is not None else None,
                             model_options=dict(model_options or {}), context=dict(context or {}),
                             prefill_chunk_size=prefill_chunk_size, stub=dict(stub or {}), use_cache=use_cache,
                             allow_debug_crash=allow_debug_crash, embeddings=embeddings,
                             thinking_markers=dict(thinking_markers) if thinking_markers else None,
                             tool_call_markers=dict(tool_call_markers) if tool_call_markers else None,
                             max_pending=max_pending, on_full=on_full, decode_budget_ms=decode_budget_ms)
        reply = self._call(mm.LoadModel(model_id, cfg, _new_id()), timeout)
        return dict(reply.info)

    def unload_model(self, model_id: str, save: bool = True, timeout: float = 120.0) -> None:
        """Graceful: live sessions and in-flight sequences are saved (reason ``shutdown``) first.

        With ``save`` it returns once the cache writers have published those saves, so a
        reload right after (here or from another shell) finds them.
        """
        self._call(mm.UnloadModel(model_id, _new_id(), save=save), timeout)
        if save:
            with contextlib.suppress(TimeoutError):  # a restarted meta may not be the one we know
                runtime.ask(self.asys, self.tree.meta, cm.WaitIdle(_new_id()), min(timeout, 30.0))


    # ------------------------------------------------------------------ generation

    def complete(self, model: str, prompt: str | Sequence[int] | mm.ChatPrompt, timeout: float = DEFAULT_TIMEOUT,
                 **options: Any) -> mm.Completion:
        """Generate and wait for the ``Completion``.

        ``prompt``: text, token ids, or a ``ChatPrompt`` (messages the model renders through its own chat
        template in the same request).

        ``timeout`` travels with the request (as its ``timeout_s``, unless a shorter one is given): a
        caller that gives up leaves no work behind, the model ends the request (``timeout``) at once.
        """
        return self._call(mm.Complete(model, _new_id(), prompt=_prompt(prompt),
                                      options=_with_deadline(gen_options(options), timeout)), timeout)

    def infer(self, model: str, prompt: str | Sequence[int] | mm.ChatPrompt, timeout: float = DEFAULT_TIMEOUT,
              **options: Any) -> TokenStream:
        """Stream the reply; iterate for ``TokenChunk``s, then read ``.result``."""
        msg = mm.Infer(model, _new_id(), prompt=_prompt(prompt), options=gen_options(options))
        return self._stream(msg, timeout)

    def _send_model(self, mb: Inbox, msg: Any, dest: Any = None) -> None:
        """Generation requests (and their cancel/abort) and text queries go through the model's door when this
        host has one open (``actors.door_client``: no supervisor hop); everything else, and any model without
        a door, through the model supervisor."""
        if dest is None and isinstance(msg, (mm.Cancel, mm.Abort)):
            link = mb.doors.holding(msg.target)  # the way its target went, or the supervisor's
            if link is not None and link.send(msg):
                return
        elif dest is None and isinstance(msg, DOOR_REQUESTS):
            link = self._door(msg.model)
            if link is not None and link.send(msg):
                return
        mb.send(dest or self.tree.models, msg)

    def _door(self, model: str) -> Any:
        """The open door link of ``model``'s current process, or None (another host, not ready, no door)."""
        try:
            rec = self.observe(model)
        except Exception:  # no shared-memory table here (attached from another host)
            return None
        if rec is None or rec.pid <= 0 or rec.phase in DOORLESS_PHASES:
            return None
        return self.inbox().doors.link(model, rec.pid, lambda: door_of(self.list_models(), model))

    def _tell_door_closed(self, model: str, pid: int) -> None:
        """A door closed on requests: the supervisor handles that process's death now (``mm.DoorClosed``)."""
        mb = self._inbox
        if mb is not None:
            mb.send(self.tree.models, mm.DoorClosed(model, pid))

    def _stream(self, msg: Any, timeout: float) -> TokenStream:
        mb = self.inbox()
        msg = replace(msg, reply_to=mb.address)
        mb.open(msg.req_id)
        self._send_model(mb, msg)
        return TokenStream(self, msg.model, msg.req_id, mb, timeout)

    def prefill_only(self, model: str, prompt: str | Sequence[int] | mm.ChatPrompt, timeout: float = DEFAULT_TIMEOUT,
                     **options: Any) -> mm.Completion:
        return self._call(mm.PrefillOnly(model, _new_id(), prompt=_prompt(prompt),
                                         options=_with_deadline(gen_options(options), timeout)), timeout)

    def continue_(self, model: str, suffix: str | Sequence[int], session_id: str, stream: bool = False,
                  timeout: float = DEFAULT_TIMEOUT, **options: Any) -> Any:
        """Append a caller-asserted suffix to a pinned session (Completion, or a TokenStream if ``stream``)."""
        opts = gen_options({**options, "session_id": session_id})
        msg = mm.Continue(model, _new_id(), suffix=_prompt(suffix),
                          options=opts if stream else _with_deadline(opts, timeout), stream=stream)
        return self._stream(msg, timeout) if stream else self._call(msg, timeout)

    def cancel(self, model: str, req_id: str) -> None:
        """Idempotent; the request's own caller gets its final reply with ``finish_reason="cancelled"``."""
        mb = self.inbox()
        self._send_model(mb, mm.Cancel(model, _new_id(), mb.address, target=req_id))

    def abort(self, model: str, req_id: str) -> None:
        """Stop a request now, even inside a decode: a decode holding it is cut short and the model's
        context is reset in place (that step's requests get ``aborted``, other admitted ones
        ``context_reset``, sessions are dropped; the weights and the cache stay).  A request not in a
        decode ends as if cancelled.  Idempotent, no reply."""
        mb = self.inbox()
        self._send_model(mb, mm.Abort(model, _new_id(), mb.address, target=req_id))

    def end_session(self, model: str, session_id: str) -> bool:
        return bool(self._call(mm.EndSession(model, _new_id(), session_id=session_id), 60.0).value)

    def evict(self, model: str, session_id: str | None = None) -> dict[str, Any]:
        return dict(self._call(mm.Evict(model, _new_id(), session_id=session_id), 60.0).value)

    # ------------------------------------------------------------------ pass-throughs

    def tokenize(self, model: str, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return list(self._call(mm.Tokenize(model, _new_id(), text=text, add_special=add_special,
                                           parse_special=parse_special), 60.0).value)

    def detokenize(self, model: str, tokens: Sequence[int]) -> str:
        return str(self._call(mm.Detokenize(model, _new_id(), tokens=_prompt(tokens)), 60.0).value)

    def apply_chat_template(self, model: str, messages: Sequence[dict[str, Any]], system: str | None = None,
                            tools: Sequence[dict[str, Any]] | None = None, add_assistant: bool = True,
                            tokenize: bool = False) -> Any:
        return self._call(mm.ApplyChatTemplate(model, _new_id(), messages=tuple(messages), system=system,
                                               tools=tuple(tools) if tools else None, add_assistant=add_assistant,
                                               tokenize=tokenize), 60.0).value

    def embed(self, model: str, text_or_tokens: str | Sequence[int]) -> list[float]:
        """Pooled embedding (the model must be loaded with ``embeddings=True``)."""
        return list(self._call(mm.Embed(model, _new_id(), input=_prompt(text_or_tokens)), 120.0).value)

    def embed_batch(self, model: str, inputs: Sequence[str | Sequence[int]]) -> list[list[float]]:
        """Embeddings of many texts (or token lists) in one round trip."""
        msg = mm.EmbedBatch(model, _new_id(), inputs=tuple(_prompt(x) for x in inputs))
        return [list(v) for v in self._call(msg, 600.0).value]

    # ------------------------------------------------------------------ LoRA adapters

    def load_adapter(self, model: str, path: str, scale: float = 1.0, adapter_id: str | None = None,
                     timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Load a LoRA adapter and apply it; returns ``{adapter_id, path, sha256, scale}``.

        The change applies between requests (in-flight ones finish first), so a
        cache row never mixes adapter sets; rows of different sets never hit each other.
        """
        msg = mm.LoadAdapter(model, _new_id(), path=str(path), scale=scale, adapter_id=adapter_id)
        return dict(self._call(msg, timeout).value)

    def unload_adapter(self, model: str, adapter_id: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._call(mm.UnloadAdapter(model, _new_id(), adapter_id=adapter_id), timeout)

    def set_adapter_scale(self, model: str, adapter_id: str, scale: float,
                          timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Change an adapter's scale (0: loaded but off)."""
        return dict(self._call(mm.SetAdapterScale(model, _new_id(), adapter_id=adapter_id, scale=scale), timeout).value)

    def list_adapters(self, model: str) -> list[dict[str, Any]]:
        return list(self._call(mm.ListAdapters(model, _new_id()), 60.0).value)

    # ------------------------------------------------------------------ speculative decoding

    def draft_tokens(self, model: str, prefix: str | Sequence[int], max_tokens: int,
                     timeout: float = 10.0) -> list[int]:
        """Greedy continuation of ``prefix`` by a (small) draft model, at most ``max_tokens``.

        The deadline is enforced by the model itself: at ``timeout`` the request
        ends (nothing left running) and the tokens drafted so far come back.
        """
        r = self.complete(model, prefix, timeout=timeout + 60.0, max_tokens=max_tokens, timeout_s=timeout)
        return list(r.generated)

    def verify(self, model: str, prefix: str | Sequence[int], candidates: Sequence[int]) -> Verified:
        """One forward pass of ``candidates`` after ``prefix`` (see ``messages.Verify``); ``busy`` unless idle."""
        v = self._call(mm.Verify(model, _new_id(), prefix=_prompt(prefix), candidates=_prompt(candidates)), 120.0).value
        return Verified(int(v["accepted"]), v["next"], bool(v["eog"]))

    # ------------------------------------------------------------------ introspection

    def list_models(self) -> list[dict[str, Any]]:
        """Every model the supervisor knows: id, state (loading/ready/restarting/failed), pid, restarts, info."""
        return list(self._call(mm.ListModels(_new_id()), 30.0).value)

    def model_info(self, model: str) -> dict[str, Any]:
        """One model in one dict: identity, address, status, phase, queue, last hit, context, quant,
        fingerprint, sequences, adapters and a memory estimate."""
        st = self.status(model)  # one round trip: the supervisor adds its record as it forwards
        entry = st.get("supervisor") or {}
        info = dict(st.get("info") or entry.get("info") or {})
        slots = st.get("slots", {})
        return {
            "model_id": model, "address": st.get("address") or entry.get("address"),
            "status": entry.get("state", st.get("state")),
            "pid": st.get("pid"), "restarts": entry.get("restarts", st.get("restarts")), "phase": st.get("phase"),
            "pending": st.get("pending_len"), "queue_depth": st.get("queue_depth"),
            "last_cache_hit": st.get("last_cache_hit"), "context_size": info.get("n_ctx"),
            "n_ctx_seq": info.get("n_ctx_seq"), "quant": info.get("quant"),
            "fingerprint": st.get("fingerprint") or info.get("fingerprint"), "n_seq_max": slots.get("n_seq_max"),
            "free_sequences": len(slots.get("free", [])), "adapters": st.get("adapters", []),
            "memory": info.get("memory"), "path": info.get("path"),
            # the node's share (asked, node_cores) and what the model's llama.cpp context runs with now
            "threads": {**(entry.get("threads") or {}), **(st.get("threads") or {})} or None,
        }

    def list_cached_prefixes(self, model: str, tokens: str | Sequence[int]) -> dict[str, Any]:
        """Longest cached prefix of ``tokens`` for ``model`` across tiers (an inspection: counts nothing)."""
        return dict(self._call(mm.CachedPrefix(model, _new_id(), tokens=_prompt(tokens)), 60.0).value)

    def vram_info(self, model: str | None = None) -> dict[str, Any]:
        """GPU memory as a model's process sees it (or this process, without ``model``)."""
        if model is not None:
            return dict(self._call(mm.VramInfoReq(model, _new_id()), 60.0).value)
        from dataclasses import asdict

        from actors.model.llama import vram_info

        return asdict(vram_info())

    def phase(self, model: str) -> str | None:
        rec = self.observe(model)
        return rec.phase if rec else None

    def pending_len(self, model: str) -> int:
        rec = self.observe(model)
        return rec.pending_len if rec else 0

    def last_cache_hit(self, model: str) -> dict[str, Any] | None:
        rec = self.observe(model)
        return rec.last_cache_hit if rec else None

    # ------------------------------------------------------------------ observability

    def status(self, model: str, timeout: float = 30.0) -> dict[str, Any]:
        """Rich state from the model actor (answered by its message thread, not behind a decode)."""
        return dict(self._call(mm.ModelStatusReq(model, _new_id()), timeout).status)

    def _table(self) -> ObsTable:
        if self._obs is None:
            if not self.tree.obs_path:
                raise ModelError("no_obs", "this tree has no observability table")
            self._obs = ObsTable(self.tree.obs_path)
        return self._obs

    def observe(self, model: str) -> ObsRecord | None:
        """phase / pending_len / queue_depth / last_cache_hit of a model, read from shared memory (no message)."""
        return self._table().read(model)

    def has_model(self, model: str) -> bool:
        """Whether the tree holds ``model`` in any state, read from shared memory (no message)."""
        return self._table().has(model)

    def observe_all(self) -> list[ObsRecord]:
        return self._table().read_all()

    def queue_depth(self) -> int:
        """Requests admitted into sequences across all models (shared memory, no message)."""
        return self._table().global_queue_depth()

    def cache_counters(self) -> dict[str, int]:
        """The cache's counters (hits, misses, saves, bytes per tier...), read from files, no message."""
        from actors.cache import read_counters

        return read_counters(self.tree.cache_config.counters_dir)

    def debug_crash(self, model: str, how: str = "segv") -> None:
        """Test hook: crash the model process at its next tick (needs ``allow_debug_crash=True`` at load)."""
        mb = self.inbox()
        mb.send(self.tree.models, mm.DebugCrash(model, _new_id(), mb.address, how=how))

    def debug_hold_decode(self, model: str, ms: int) -> None:
        """Test hook: the model's next decode takes ``ms`` (past a short ``decode_budget_ms``, it ends in
        ``decode_timeout``); needs ``allow_debug_crash=True`` at load."""
        mb = self.inbox()
        mb.send(self.tree.models, mm.DebugCrash(model, _new_id(), mb.address, how="hold", hold_ms=int(ms)))

    def model_address(self, model: str) -> str:
        """The model process's current thespian address, as text (it changes when the model restarts).

        Requests never need it: they go to the model supervisor, which forwards them to this address."""
        return str(self.status(model)["address"])

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Detach (attached clients) or stop the whole tree (the owner)."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            inbox, self._inbox = self._inbox, None
        if inbox is not None:
            inbox.close()
        if self._obs is not None:
            self._obs.close()
        self._link.close(stop=self.owner)

    shutdown = close
    unload = unload_model

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Verified:
    """``accepted``: leading candidates the model agrees with; ``next``: its own next
    token after them (None when that is end-of-generation, then ``eog`` is True)."""

    accepted: int
    next: int | None
    eog: bool


def _with_deadline(opts: mm.GenOptions, timeout: float) -> mm.GenOptions:
    """The request ends at the caller's own timeout (or its ``timeout_s``, when that is shorter).

    A stream's ``timeout`` bounds each wait for the next event, not the whole request, so streams
    keep their own ``timeout_s``; a stream the caller leaves is cancelled by ``TokenStream.close``.
    """
    t = opts.timeout_s
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        return opts
    if t is None or (isinstance(t, (int, float)) and not isinstance(t, bool) and t > timeout):
        return replace(opts, timeout_s=float(timeout))
    return opts


def _prompt(p: str | Sequence[int] | mm.ChatPrompt) -> str | tuple[int, ...] | mm.ChatPrompt:
    if isinstance(p, (str, mm.ChatPrompt)):
        return p
    if isinstance(p, (bytes, bytearray)):
        raise ModelError("bad_request", "prompt: a string or a list of token ids")
    try:
        return tuple(p)
    except TypeError:
        raise ModelError("bad_request", f"prompt: a string or a list of token ids, got {type(p).__name__}") from None


ChatPrompt = mm.ChatPrompt

__all__ = ["ChatPrompt", "ModelError", "System", "TokenStream", "Verified", "gen_options"]
