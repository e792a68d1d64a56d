"""The model actor: one process per loaded model.

Two threads, one job each:

* the **message thread** (thespian's handler) only moves messages: model
  requests go on the command queue, cache index updates go to the cache
  client's inbox, and status requests are answered at once from the
  engine's last published snapshot, so a status or cancel is never
  stuck behind a decode;
* the **worker thread** loads the model and then owns it: every C call
  (prefill, step, kv pack/unpack, tokenize...) happens there, one engine
  tick per ``step``, draining the command queue between ticks (a cancel
  is seen within one tick).  It never sends through the actor's own
  transport; replies, tokens and ``RequestDone`` notices go through the
  per-destination lanes of :class:`~actors.model.outbox.Outbox`.

Native faults: thespian installs Python handlers for SIGSEGV, SIGBUS,
SIGFPE and SIGILL that just return, so a real segfault in C would
re-execute the faulting instruction forever at 100% CPU and nobody would
notice.  The actor resets them (and SIGABRT) to SIG_DFL, with
``faulthandler`` dumping the Python stacks first, so a native fault
really kills the process and the supervisor sees the exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import os
import queue
import signal
import sys
import threading
import traceback
from typing import Any

from thespian.actors import Actor, ActorExitRequest, ChildActorExited, PoisonMessage, WakeupMessage

from actors.model import messages as mm

_FAULT_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT")
_STOP = object()
_CACHE_POKE = object()


def reset_fault_signals() -> None:
    """Let native faults kill this process (undo thespian's no-op handlers), dumping stacks first."""
    for name in _FAULT_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(Exception):
        faulthandler.enable(file=sys.stderr, all_threads=True)


class ModelActor(Actor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.init: mm.ModelInit | None = None
        self.commands: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.worker: threading.Thread | None = None
        self.outbox: Any = None
        self.cache: Any = None
        self.engine: Any = None
        self.obs: Any = None
        self.state = "new"
        self.stop_reply: tuple[Any, str] | None = None
        self.threads: dict[str, int] = {}  # what llama.cpp runs with now (the node's core budget sets it)
        self.door: Any = None  # the request door (model/door.py), open once the model is ready
        # Requests that came in through the door: the supervisor never saw them, so their end is not
        # posted to it (it tracks only what it routed).  Added by the door's thread, removed by the worker.
        self.door_ids: set[str] = set()

    # ------------------------------------------------------------------ message thread

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        try:
            self._receive(msg, sender)
        except Exception as e:
            req_id = getattr(msg, "req_id", "")
            if req_id:
                self.send(getattr(msg, "reply_to", None) or sender,
                          mm.ErrorReply(req_id, "internal_error", "".join(traceback.format_exception(e))))

    def _receive(self, msg: Any, sender: Any) -> None:
        cache = self.cache
        if cache is not None and cache.handles(msg):
            cache.deliver(msg)  # applied by the worker, which owns the cache client
            self.commands.put(_CACHE_POKE)  # an idle worker applies it now (ram evictions free memory at once)
        elif isinstance(msg, mm.ModelStatusReq):
            status = self._status()
            if msg.entry is not None:
                status["supervisor"] = msg.entry
            self.send(msg.reply_to or sender, mm.ModelStatus(msg.req_id, msg.model, status))
        elif isinstance(msg, mm.ModelRequest):
            if isinstance(msg, mm.Abort):
                self._abort_decode(msg.target)
            if self.init is None:
                self.send(msg.reply_to or sender, mm.ErrorReply(msg.req_id, "not_ready", "model actor not started"))
                return
            self.commands.put(msg if msg.reply_to is not None else _with_reply_to(msg, sender))
        elif isinstance(msg, mm.ModelInit):
            self._init(msg)
        elif isinstance(msg, (mm.StopModel, mm.SetThreads)):
            self.commands.put(msg)
        elif isinstance(msg, mm.CacheRebind):
            self._rebind(msg.meta)
        elif isinstance(msg, ActorExitRequest):
            self._exit()
        elif isinstance(msg, (ChildActorExited, PoisonMessage, WakeupMessage)):
            pass

    def _status(self) -> dict[str, Any]:
        threads: dict[str, int] = dict(self.threads)
        tuner = getattr(getattr(self.engine, "backend", None), "tuner", None)
        if threads and tuner is not None:
            threads["in_use"] = tuner.current  # within the share, chosen by decode step times (model/threads.py)
            threads["host_cap"] = tuner.cap  # what the rest of the host leaves (model/host_load.py)
        base: dict[str, Any] = {"state": self.state, "pid": os.getpid(), "threads": threads,
                                "address": str(self.myAddress)}
        if self.engine is not None:
            base.update(self.engine.status())
        prefix = getattr(getattr(self.engine, "backend", None), "tokens", None)
        if prefix is not None:  # how much resent text was not tokenized again (model/prefix_tokens.py)
            base["tokenizer"] = dataclasses.asdict(prefix.stats)
        if self.outbox is not None:
            base["outbox_errors"] = self.outbox.errors
            base["outbox_last_error"] = self.outbox.last_error
        if self.door is not None:
            base["door"] = {"requests": self.door.received, "refused": self.door.refused,
                            "open": len(self.door_ids)}
        return base

    def _init(self, msg: mm.ModelInit) -> None:
        if self.init is not None:
            return
        reset_fault_signals()
        from actors.model.outbox import Outbox

        self.init = msg
        self.outbox = Outbox(msg.admin_port, undeliverable=self._undeliverable)
        if msg.obs_path and msg.obs_slot >= 0:
            from actors.obs import ObsTable

            try:
                self.obs = ObsTable(msg.obs_path)
                self.obs.update(msg.obs_slot, pid=os.getpid(), phase="loading", pending_len=0, queue_depth=0,
                                restarts=msg.restarts)
            except (OSError, ValueError):
                self.obs = None
        if msg.config.use_cache and msg.meta is not None and msg.cache_config is not None:
            self.cache = self._new_cache_client(msg.meta)
        self.state = "loading"
        self.worker = threading.Thread(target=self._worker, name=f"model-{msg.model_id}", daemon=True)
        self.worker.start()

    def _abort_decode(self, target: str) -> None:
        """Stop the decode in flight now when it holds ``target`` (the worker is inside it; the flag
        is an atomic of the context, read by llama.cpp's abort callback)."""
        eng = self.engine
        if eng is None:
            return
        if any(r.get("req_id") == target and r.get("seq") is not None for r in eng.status().get("requests", ())):
            with contextlib.suppress(Exception):
                eng.backend.abort_decode(True)

    def _undeliverable(self, msg: Any) -> None:
        """A stream event could not reach its caller (gone): cancel the request at the next tick."""
        if self.init is not None and isinstance(msg, (mm.TokenChunk, mm.ThinkingEnd, mm.ToolCallEnd)):
            self.commands.put(mm.Cancel(self.init.model_id, "", None, target=msg.req_id))

    def _new_cache_client(self, meta: Any) -> Any:
        from actors.cache.client import CacheClient

        assert self.init is not None
        me = threading.get_ident()
        outbox = self.outbox

        def send(m: Any) -> None:
            # The subscription is sent from this (message) thread so the meta
            # pushes index updates to this actor; later notices (touches,
            # saves, pins) come from the worker and leave through a lane.
            if threading.get_ident() == me:
                self.send(meta, m)
            else:
                outbox.post(meta, m)

        return CacheClient(self.init.cache_config, send)

    def _rebind(self, meta: Any) -> None:
        if self.init is None or not self.init.config.use_cache:
            return
        self.init = _replace(self.init, meta=meta)
        old, self.cache = self.cache, self._new_cache_client(meta)  # index pushes now reach the new client
        self.commands.put(("rebind", self.cache, old))

    def _exit(self) -> None:
        """Thespian is stopping this process: no saves here (graceful unload uses StopModel)."""
        self.commands.put(_STOP)
        if self.worker is not None:
            self.worker.join(5.0)
        if self.door is not None:
            self.door.close()
        if self.outbox is not None:
            self.outbox.close(2.0)

    def _from_door(self, msg: mm.ModelRequest) -> None:
        """A request from the door's thread: as from the message thread (an abort acts inside a decode)."""
        if isinstance(msg, mm.Abort):
            self._abort_decode(msg.target)
        if msg.req_id:
            self.door_ids.add(msg.req_id)
        self.commands.put(msg)

    def _request_done(self, req_id: str) -> None:
        if req_id in self.door_ids:
            self.door_ids.discard(req_id)
        elif self.init is not None:
            self.outbox.post(self.init.supervisor, mm.RequestDone((req_id,)))

    def _open_door(self) -> Any:
        """Clients on this host may now send generation requests straight here (model/door.py)."""
        from actors.model.door import RequestDoor

        try:
            self.door = RequestDoor(self._from_door, self.outbox.post)
        except OSError:  # no door (no writable temp dir): requests keep coming through the supervisor
            return None
        return self.door.address

    # ------------------------------------------------------------------ worker thread

    def _worker(self) -> None:
        init = self.init
        assert init is not None
        sup = init.supervisor
        try:
            from actors.model.backend import make_backend
            from actors.model.output import parse_markers

            cfg = init.config
            markers = parse_markers(cfg.thinking_markers, cfg.tool_call_markers)
            backend = make_backend(cfg.backend, cfg.path, cfg.model_options, cfg.context, cfg.stub)
        except Exception as e:
            reason = getattr(e, "reason", "load_failed")
            detail = getattr(e, "detail", "") or str(e)
            self.state = "failed"
            self.outbox.post(sup, mm.ModelLoadFailed(init.model_id, reason, detail))
            self._refuse_all(reason, detail)
            return
        try:
            from actors.model.engine import Engine, EngineHooks, EngineSettings
            from actors.model.validate import check_decode_budget, check_limits

            settings = EngineSettings(
                init.model_id, policy=init.cache_config.policy if init.cache_config is not None else None,
                prefill_chunk=cfg.prefill_chunk_size, allow_debug_crash=cfg.allow_debug_crash,
                restarts=init.restarts, markers=markers,
                thinking_key=init.thinking_key.reveal() if init.thinking_key else None, embeddings=cfg.embeddings,
                limits=check_limits(cfg.max_pending, cfg.on_full),
                decode_budget_ms=check_decode_budget(cfg.decode_budget_ms))
            hooks = EngineHooks(
                done=self._request_done,
                adapters_changed=lambda specs: self.outbox.post(sup, mm.AdaptersChanged(init.model_id, specs)),
                observe=self._observer(init.obs_slot))
            self.engine = Engine(settings, backend, self.outbox.post, cache=self.cache, hooks=hooks)
            if init.adapters:
                self.engine.restore_adapters(init.adapters)
        except Exception as e:
            backend.close()
            self.state = "failed"
            reason, detail = getattr(e, "reason", "bad_option"), getattr(e, "detail", "") or str(e)
            self.outbox.post(sup, mm.ModelLoadFailed(init.model_id, reason, detail))
            self._refuse_all(reason, detail)
            return
        self.state = "ready"
        info = backend.info()
        if "n_threads" in info:
            self.threads = {"n_threads": info["n_threads"], "n_threads_batch": info.get("n_threads_batch",
                                                                                        info["n_threads"])}
        self.outbox.post(sup, mm.ModelReady(init.model_id, os.getpid(), info,
                                            self.cache.client_id if self.cache is not None else None,
                                            self._open_door()))
        self._loop()

    def _observer(self, slot: int) -> Any:
        """The engine's observable fields, written to this model's record of the shared-memory table."""
        obs = self.obs
        if obs is None or slot < 0:
            return None

        def observe(f: Any) -> None:
            obs.update(slot, phase=f.phase, pending_len=f.pending_len, queue_depth=f.queue_depth, hit=f.hit,
                       prefix_len=f.prefix_len)

        return observe

    def _refuse_all(self, reason: str, detail: str) -> None:
        while True:
            cmd = self.commands.get()
            if cmd is _STOP:
                return
            if isinstance(cmd, mm.StopModel) and self.init is not None:
                self.outbox.post(self.init.supervisor, mm.ModelStopped(self.init.model_id, cmd.req_id, 0))
            elif isinstance(cmd, mm.ModelRequest) and cmd.req_id and not isinstance(cmd, mm.Cancel):
                self.outbox.post(cmd.reply_to, mm.ErrorReply(cmd.req_id, reason, detail))
                if self.init is not None:
                    self.outbox.post(self.init.supervisor, mm.RequestDone((cmd.req_id,)))

    def _loop(self) -> None:
        eng = self.engine
        init = self.init
        assert eng is not None and init is not None
        while True:
            cmds = []
            if not eng.has_work():
                cmds.append(self.commands.get())
            while True:
                try:
                    cmds.append(self.commands.get_nowait())
                except queue.Empty:
                    break
            for cmd in cmds:
                if cmd is _CACHE_POKE:
                    if eng.cache is not None:
                        eng.cache.apply_pending()
                    continue
                if cmd is _STOP:
                    self._close_engine(save=False)
                    return
                if isinstance(cmd, mm.StopModel):
                    self.state = "stopping"
                    saved = self._close_engine(save=cmd.save)
                    self.outbox.post(init.supervisor, mm.ModelStopped(init.model_id, cmd.req_id, saved))
                    self.outbox.flush(10.0)
                    self._refuse_all("model_stopping", "the model is being unloaded")
                    return
                if isinstance(cmd, mm.SetThreads):
                    set_threads = getattr(eng.backend, "set_threads", None)  # a stub runs no threads
                    if set_threads is not None:
                        set_threads(cmd.n_threads, cmd.n_threads_batch)
                        self.threads = {"n_threads": cmd.n_threads, "n_threads_batch": cmd.n_threads_batch}
                    continue
                if isinstance(cmd, tuple) and cmd[0] == "rebind":
                    _tag, new, old = cmd
                    eng.cache = new
                    if old is not None:
                        with contextlib.suppress(Exception):
                            old.close()
                    continue
                eng.handle(cmd)
            if eng.has_work():
                eng.tick()

    def _close_engine(self, save: bool) -> int:
        eng = self.engine
        saved = 0
        if eng is None:
            return 0
        try:
            saved = eng.shutdown(save=save)
        finally:
            if self.obs is not None and self.init is not None:
                with contextlib.suppress(Exception):
                    self.obs.update(self.init.obs_slot, phase="stopping", pending_len=0, queue_depth=0)
            with contextlib.suppress(Exception):
                eng.backend.close()
            if self.cache is not None:
                with contextlib.suppress(Exception):
                    self.cache.close(spill=save)  # a graceful unload writes ram-only rows behind first
        return saved


def _with_reply_to(msg: Any, sender: Any) -> Any:
    from dataclasses import replace

    return replace(msg, reply_to=sender)


def _replace(obj: Any, **kw: Any) -> Any:
    from dataclasses import replace

    return replace(obj, **kw)
