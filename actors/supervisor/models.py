"""The model supervisor: one model actor per loaded model, and crash bookkeeping.

A model process that dies cannot tell anyone, so every model request that
does not come through the model's own door (``actors.model.door``: a client
on the model's host sends generation straight there and answers its own
requests when that connection ends) is routed through here: the supervisor
records ``req_id -> (model, reply_to)``, forwards the request to the
model's current process and forgets it when the model reports
``RequestDone``.  It lists each ready model's door (``ModelReady.door``)
and removes the door of a process that died.  On
``ChildActorExited`` for a model it did not stop itself, it

1. sends ``ErrorReply(req_id, "model_crashed")`` to every recorded caller
   and subscriber of that model,
2. tells the cache meta to drop the dead process's cache client (its pins
   and ram rows are released at once, not at the next sweep),
3. restarts the model with the same ``ModelConfig`` (one_for_one) and
   points later requests at the new process.

Restart intensity is kept per model: past ``max_restarts`` within
``max_seconds`` that model is marked ``failed`` (requests get
``model_failed``; load it again to retry) while the other models keep
serving.  A crash during the very first load is reported to the loader
and not retried.

Deaths it is not told of: thespian loses exit notices of children that
die close together, so the supervisor also watches each model's pid
(``actors.supervisor.watch``); a vanished pid takes the same path as the
notice, and whichever comes first acts (a model's entry points at one
process at a time, so a second signal for it matches nothing).

Specs that outlive it: after every change to the set of models (a load
accepted, adapters changed, an unload) the supervisor sends its parent the
whole set (``ModelSpecs``).  When this supervisor dies, the root restarts
it with that set in ``ModelSupStart.models`` and every model comes back
with the same configuration and adapters (its former processes are
killed by the root as orphans, see ``supervisor.Supervisor``).

Cores: the supervisor owns the node's core budget (``cores``, at most the
cores this process may run on).  Every llama model is started with its
share from :func:`actors.supervisor.cores.plan`, and when a load, unload or
failure changes the shares, each live model whose share changed is told
(``SetThreads``: llama_set_n_threads on its live context, no restart).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from thespian.actors import Actor, ActorExitRequest, ChildActorExited, PoisonMessage, WakeupMessage

from actors.cache import messages as cm
from actors.model import messages as mm
from actors.model.door import DoorAddress, remove_door
from actors.supervisor import cores
from actors.supervisor import messages as sm
from actors.supervisor.spec import RestartIntensity
from actors.supervisor.watch import WATCH_INTERVAL_S, WATCH_PAYLOAD, PidWatch, probe

MAX_RESTARTS = 3
MAX_SECONDS = 30.0
STOP_TIMEOUT_S = 20.0
DOOR_EXIT_WAIT_S = 1.0  # how long a closed door waits for its process to be seen gone (it is, within ms)


@dataclass
class _Model:
    model_id: str
    config: mm.ModelConfig
    addr: Any
    obs_slot: int
    state: str = "loading"  # loading | ready | restarting | failed | stopping
    intensity: RestartIntensity = field(default_factory=lambda: RestartIntensity(MAX_RESTARTS, MAX_SECONDS))
    restarts: int = 0
    pid: int = 0
    client_id: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    loader: tuple[str, Any] | None = None
    unloaders: list[tuple[str, Any]] = field(default_factory=list)
    last_exit: str = ""
    adapters: tuple[tuple[str, str, float], ...] = ()  # re-applied when the model restarts
    threads: cores.ThreadShare | None = None  # its share of the node's cores (llama models only)
    served: bool = False  # it reached ready once: a restarted supervisor brings it back
    door: DoorAddress | None = None  # its process's request door (model/door.py), while it is ready


class ModelSupervisor(Actor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start: sm.ModelSupStart | None = None
        self.meta: Any = None
        self.obs: Any = None
        self.models: dict[str, _Model] = {}
        self.inflight: dict[str, tuple[str, Any]] = {}
        self.stop_all: tuple[Any, str] | None = None
        self.stopped_count = 0
        self.cores = cores.node_cores()
        self.parent: Any = None
        self.watch = PidWatch()
        self._watching = False
        self._sent_specs: tuple[sm.ModelSpec, ...] = ()

    # ------------------------------------------------------------------ dispatch

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        try:
            self._dispatch(msg, sender)
        except Exception as e:
            req_id = getattr(msg, "req_id", "")
            if req_id:
                self.send(getattr(msg, "reply_to", None) or sender, mm.ErrorReply(req_id, "internal_error", repr(e)))
        finally:
            if not isinstance(msg, mm.ModelRequest):  # the hot path changes no spec
                self._publish_specs()

    def _specs(self) -> tuple[sm.ModelSpec, ...]:
        return tuple(sm.ModelSpec(e.model_id, e.config, e.adapters, e.restarts) for e in self.models.values()
                     if e.served and e.state not in ("failed", "stopping"))

    def _publish_specs(self) -> None:
        specs = self._specs()
        if self.parent is not None and specs != self._sent_specs:
            self._sent_specs = specs
            self.send(self.parent, sm.ModelSpecs(specs))

    def _dispatch(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, mm.ModelRequest):
            self._route(msg, sender)
        elif isinstance(msg, mm.RequestDone):
            for rid in msg.req_ids:
                self.inflight.pop(rid, None)
        elif isinstance(msg, mm.AdaptersChanged):
            entry = self.models.get(msg.model_id)
            if entry is not None:
                entry.adapters = msg.adapters
        elif isinstance(msg, ChildActorExited):
            self._child_exited(msg.childAddress)
        elif isinstance(msg, mm.DoorClosed):
            self._door_closed(msg)
        elif isinstance(msg, mm.ModelReady):
            self._ready(msg)
        elif isinstance(msg, mm.ModelLoadFailed):
            self._load_failed(msg)
        elif isinstance(msg, mm.ModelStopped):
            entry = self.models.get(msg.model_id)
            if entry is not None and entry.addr is not None:
                self.send(entry.addr, ActorExitRequest())
        elif isinstance(msg, mm.LoadModel):
            self._load(msg, sender)
        elif isinstance(msg, mm.UnloadModel):
            self._unload(msg, sender)
        elif isinstance(msg, mm.ListModels):
            self.send(msg.reply_to or sender, mm.Value(msg.req_id, self._list()))
        elif isinstance(msg, sm.ModelSupStart):
            self.start, self.meta, self.parent = msg, msg.meta, sender
            self.cores = cores.budget(msg.cores)
            if msg.obs_path:
                from actors.obs import ObsTable

                self.obs = ObsTable(msg.obs_path)
            self._restore(msg.models)
            self.send(sender, sm.ModelSupReady(len(self.models)))
        elif isinstance(msg, mm.CacheRebind):
            self.meta = msg.meta
            for entry in self.models.values():
                if entry.addr is not None:
                    self.send(entry.addr, msg)
        elif isinstance(msg, sm.StopModels):
            self._stop_all(msg.req_id, sender)
        elif isinstance(msg, WakeupMessage) and msg.payload == WATCH_PAYLOAD:
            self._poll_models()
        elif isinstance(msg, WakeupMessage):
            self._stop_timeout()
        elif isinstance(msg, (ActorExitRequest, PoisonMessage)):
            pass

    # ------------------------------------------------------------------ routing

    def _route(self, msg: mm.ModelRequest, sender: Any) -> None:
        reply_to = msg.reply_to or sender
        entry = self.models.get(msg.model)
        if isinstance(msg, (mm.Cancel, mm.Abort)):  # no reply of their own: not tracked
            if entry is not None and entry.addr is not None:
                self.send(entry.addr, replace(msg, reply_to=reply_to))
            return
        if entry is None:
            self.send(reply_to, mm.ErrorReply(msg.req_id, "no_such_model", f"no model {msg.model!r} is loaded"))
            return
        if entry.state == "failed":
            self.send(reply_to, mm.ErrorReply(msg.req_id, "model_failed",
                                              f"model {msg.model!r} gave up after restarts: {entry.last_exit}"))
            return
        if entry.state == "stopping":
            self.send(reply_to, mm.ErrorReply(msg.req_id, "model_stopping", f"model {msg.model!r} is unloading"))
            return
        if not msg.req_id:
            self.send(reply_to, mm.ErrorReply("", "bad_request", "requests need a req_id"))
            return
        if isinstance(msg, mm.ModelStatusReq):  # answered at once by the model's message thread: not tracked
            self.send(entry.addr, replace(msg, reply_to=reply_to, entry=self._describe(entry)))
            return
        if not isinstance(msg, mm.DebugCrash):  # no reply unless refused: nothing to answer on a crash
            self.inflight[msg.req_id] = (msg.model, reply_to)
        self.send(entry.addr, replace(msg, reply_to=reply_to))

    # ------------------------------------------------------------------ lifecycle

    def _init_msg(self, entry: _Model) -> mm.ModelInit:
        s = self.start
        assert s is not None
        config = entry.config
        if entry.threads is not None:
            config = replace(config, context=cores.with_share(config.context, entry.threads))
        return mm.ModelInit(entry.model_id, config, self.myAddress, self.meta, s.cache_config, s.admin_port,
                            s.obs_path, entry.obs_slot, entry.restarts, s.thinking_key,
                            entry.adapters)

    def _spawn(self, entry: _Model) -> None:
        from actors.model.actor import ModelActor

        entry.addr = self.watch.spawn(entry.model_id, lambda: self.createActor(ModelActor))
        self.send(entry.addr, self._init_msg(entry))
        if not self._watching:
            self._watching = True
            self.wakeupAfter(timedelta(seconds=WATCH_INTERVAL_S), payload=WATCH_PAYLOAD)

    def _poll_models(self) -> None:
        """A model whose process is gone is handled like its exit notice (which thespian may never send)."""
        self._watching = False
        self._reap()
        if any(e.addr is not None for e in self.models.values()):
            self._watching = True
            self.wakeupAfter(timedelta(seconds=WATCH_INTERVAL_S), payload=WATCH_PAYLOAD)

    def _reap(self) -> None:
        for addr in self.watch.poll():
            self._child_exited(addr)
            self.send(self.myAddress, ChildActorExited(addr))  # thespian's own child list (see watch.py)

    def _door_closed(self, msg: mm.DoorClosed) -> None:
        """A client's connection to a model's door ended while it held requests (model/door.py): that
        process is dying.  The client saw the end of its stream before this supervisor saw the process
        go, and answers its requests ``model_crashed`` itself once this message is delivered; the death
        is handled here first (the model marked restarting), so the caller's next request waits for
        the new process instead of going to the dead one.  A process closes its files a moment before
        the kernel marks it exited: that moment is waited out (bounded), never a live process."""
        entry = self.models.get(msg.model)
        if entry is None or entry.pid != msg.pid or entry.addr is None:  # handled already, or not ours
            return
        deadline = time.monotonic() + DOOR_EXIT_WAIT_S
        while probe([msg.pid]).get(msg.pid, 0.0) is not None and time.monotonic() < deadline:
            time.sleep(0.002)
        self._reap()

    def _restore(self, specs: tuple[sm.ModelSpec, ...]) -> None:
        """A restarted supervisor: every model its predecessor served, with the same configuration and adapters."""
        for spec in specs:
            if spec.model_id in self.models:
                continue
            slot = self.obs.claim(spec.model_id) if self.obs is not None else -1
            self.models[spec.model_id] = _Model(spec.model_id, spec.config, None, slot, state="restarting",
                                                restarts=spec.restarts + 1, adapters=spec.adapters, served=True)
        self._rebalance()
        for entry in list(self.models.values()):
            if entry.addr is None and entry.state == "restarting":
                self._spawn(entry)

    def _load(self, msg: mm.LoadModel, sender: Any) -> None:
        reply_to = msg.reply_to or sender
        mid = msg.model_id
        if not isinstance(mid, str) or not mid or len(mid.encode()) > 64:
            self.send(reply_to, mm.ErrorReply(msg.req_id, "bad_option", "model_id: a non-empty string of <= 64 bytes"))
            return
        if not isinstance(msg.config, mm.ModelConfig):
            self.send(reply_to, mm.ErrorReply(msg.req_id, "bad_option", "config must be a ModelConfig"))
            return
        old = self.models.get(mid)
        if old is not None and old.state != "failed":
            self.send(reply_to, mm.ErrorReply(msg.req_id, "model_exists", f"model {mid!r} is already loaded"))
            return
        slot = old.obs_slot if old is not None else (self.obs.claim(mid) if self.obs is not None else -1)
        entry = _Model(mid, msg.config, None, slot, loader=(msg.req_id, reply_to))
        self.models[mid] = entry
        self._rebalance()  # the others shrink first; the new model starts with its share
        self._spawn(entry)

    def _rebalance(self) -> None:
        """Share the node's cores among the live llama models; tell each whose share changed."""
        live = [e for e in self.models.values()
                if e.config.backend == "llama" and e.state not in ("failed", "stopping")]
        plan = cores.plan(self.cores, [cores.ask_of(e.model_id, e.config.context) for e in live])
        for e in live:
            share = plan.shares[e.model_id]
            if e.threads is not None and e.threads != share and e.addr is not None:
                self.send(e.addr, mm.SetThreads(share.n_threads, share.n_threads_batch))
            e.threads = share

    def _ready(self, msg: mm.ModelReady) -> None:
        entry = self.models.get(msg.model_id)
        if entry is None:
            return
        entry.state, entry.pid, entry.info, entry.client_id = "ready", msg.pid, msg.info, msg.cache_client_id
        entry.door = msg.door
        entry.served = True
        if entry.loader is not None:
            req_id, dest = entry.loader
            entry.loader = None
            self.send(dest, mm.ModelLoaded(req_id, entry.model_id, {**msg.info, "pid": msg.pid}))

    def _load_failed(self, msg: mm.ModelLoadFailed) -> None:
        entry = self.models.get(msg.model_id)
        if entry is None:
            return
        entry.last_exit = f"{msg.reason}: {msg.detail}"
        if entry.loader is not None:
            req_id, dest = entry.loader
            entry.loader = None
            self.send(dest, mm.ErrorReply(req_id, msg.reason, msg.detail))
        # Gone from the list at once (the loader may list models right after its error); the
        # process still exits, and its exit notice then matches no entry.
        addr, entry.addr = entry.addr, None
        self._forget(entry)
        if addr is not None:
            self.send(addr, ActorExitRequest())

    def _unload(self, msg: mm.UnloadModel, sender: Any) -> None:
        reply_to = msg.reply_to or sender
        entry = self.models.get(msg.model_id)
        if entry is None:
            self.send(reply_to, mm.ErrorReply(msg.req_id, "no_such_model", f"no model {msg.model_id!r} is loaded"))
            return
        entry.unloaders.append((msg.req_id, reply_to))
        if entry.state == "stopping":
            return
        if entry.state == "failed" or entry.addr is None:
            self._forget(entry)
            return
        entry.state = "stopping"
        self.send(entry.addr, mm.StopModel(msg.req_id, msg.save))
        self.wakeupAfter(timedelta(seconds=STOP_TIMEOUT_S), payload=("stop", entry.model_id))

    def _stop_all(self, req_id: str, sender: Any) -> None:
        self.stop_all = (sender, req_id)
        self.stopped_count = 0
        live = [e for e in self.models.values() if e.state != "failed" and e.addr is not None]
        for entry in list(self.models.values()):
            if entry not in live:
                self._forget(entry)
        for entry in live:
            if entry.state != "stopping":
                entry.state = "stopping"
                self.send(entry.addr, mm.StopModel(req_id, True))
        if not live:
            self._check_all_stopped()
        else:
            self.wakeupAfter(timedelta(seconds=STOP_TIMEOUT_S), payload=("stop-all", None))

    def _stop_timeout(self) -> None:
        for entry in self.models.values():
            if entry.state == "stopping" and entry.addr is not None:
                self.send(entry.addr, ActorExitRequest())

    def _check_all_stopped(self) -> None:
        if self.stop_all is not None and not self.models:
            dest, req_id = self.stop_all
            self.stop_all = None
            self.send(dest, sm.ModelsStopped(req_id, self.stopped_count))

    def _forget(self, entry: _Model) -> None:
        self.models.pop(entry.model_id, None)
        self.watch.forget(entry.model_id)
        self._rebalance()
        for rid, (mid, dest) in list(self.inflight.items()):
            if mid == entry.model_id:
                del self.inflight[rid]
                self.send(dest, mm.ErrorReply(rid, "model_unloaded", f"model {entry.model_id!r} was unloaded"))
        if self.obs is not None and entry.obs_slot >= 0:
            self.obs.release(entry.obs_slot)
        for req_id, dest in entry.unloaders:
            self.send(dest, mm.Value(req_id, {"model": entry.model_id, "unloaded": True}))
        entry.unloaders.clear()
        self._check_all_stopped()

    def _child_exited(self, addr: Any) -> None:
        entry = next((e for e in self.models.values() if e.addr is not None and e.addr == addr), None)
        if entry is None:
            return
        entry.addr = None
        self.watch.forget(entry.model_id)
        remove_door(entry.door)  # a process that died could not remove its own; clients see its end of stream
        entry.door = None
        if entry.state == "stopping":
            self.stopped_count += 1
            self._release_cache_client(entry)
            self._forget(entry)
            return
        detail = f"model {entry.model_id!r} process {entry.pid or '?'} died"
        entry.last_exit = detail
        for rid, (mid, dest) in list(self.inflight.items()):
            if mid == entry.model_id:
                del self.inflight[rid]
                self.send(dest, mm.ErrorReply(rid, "model_crashed", detail))
        self._release_cache_client(entry)
        if entry.loader is not None and entry.restarts == 0 and entry.state == "loading":
            req_id, dest = entry.loader
            entry.loader = None
            self.send(dest, mm.ErrorReply(req_id, "model_crashed", detail + " while loading"))
            entry.state = "failed"
            self._rebalance()
            return
        if self.stop_all is not None:
            self._forget(entry)
            return
        if not entry.intensity.allow(time.monotonic()):
            entry.state = "failed"
            self._rebalance()
            return
        entry.restarts += 1
        entry.state = "restarting"
        self._spawn(entry)

    def _release_cache_client(self, entry: _Model) -> None:
        if entry.client_id and self.meta is not None:
            self.send(self.meta, cm.Unsubscribe(entry.client_id))
        entry.client_id = None

    def _describe(self, e: _Model) -> dict[str, Any]:
        return {"model_id": e.model_id, "state": e.state, "pid": e.pid, "restarts": e.restarts,
                "backend": e.config.backend, "info": e.info, "last_exit": e.last_exit, "address": str(e.addr),
                "threads": e.threads.as_dict() if e.threads is not None else None,
                "door": e.door.as_dict() if e.door is not None else None}

    def _list(self) -> list[dict[str, Any]]:
        return [self._describe(e) for e in self.models.values()]
