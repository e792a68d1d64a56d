"""The supervision tree: root, cache supervisor and model supervisor.

::

    RootSupervisor            one_for_one over the two below
    ├── CacheSupervisor       one_for_all: the pressure actor depends on the meta
    │   ├── CacheMetaActor    (supervises its own writer pool)
    │   └── PressureActor     only when memory pressure is configured
    └── ModelSupervisor       one model actor per loaded model (see models.py)

Start order follows dependencies: the model supervisor starts once the
cache meta is up (it hands the meta's address to every model).  When the
cache supervisor restarts its children, it reports the new meta address
and the root passes it on (``CacheRebind``), so models resubscribe
instead of being restarted.

There is no name registry: every model request goes to the model
supervisor, which holds the one table of model id -> current process and
forwards (a restarted model has a new address, which only it needs to know).

The root holds the model specs (``ModelSpecs``, sent by the model
supervisor after every change) so that a restarted model supervisor
brings every model back, and persists them (a private file in the run
directory) so that a restarted root does too (``TreeStart.restore``,
sent by the daemon in ``serve.py`` when it finds the root gone).
"""

from __future__ import annotations

import contextlib
import os
import pickle
from typing import Any

from thespian.actors import ActorExitRequest

from actors.cache import messages as cm
from actors.cache.actors import CacheMetaActor, PressureActor
from actors.model import messages as mm
from actors.supervisor import messages as sm
from actors.supervisor.models import ModelSupervisor
from actors.supervisor.spec import ChildSpec, Restart, Strategy
from actors.supervisor.supervisor import Supervisor


def tree_file(start: sm.TreeStart | None, suffix: str) -> str | None:
    """A file of this tree in its run directory (``specs``: the model specs; ``stopped``: a deliberate stop)."""
    run_dir = getattr(getattr(start, "cache_config", None), "run_dir", None)
    return os.path.join(run_dir, f"tree-{start.admin_port}.{suffix}") if start is not None and run_dir else None


class CacheSupervisor(Supervisor):
    strategy = Strategy.ONE_FOR_ALL
    max_restarts = 3
    max_seconds = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config: Any = None
        self.pressure: dict[str, Any] | None = None
        self.parent: Any = None

    def handle(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, sm.CacheSupStart):
            self.config, self.pressure, self.parent = msg.config, msg.pressure, sender
            self.add_child(ChildSpec("meta", CacheMetaActor))
        elif isinstance(msg, cm.MetaReady):
            if self.pressure and "pressure" not in self.specs:
                self.add_child(ChildSpec("pressure", PressureActor))
            elif not self.pressure:
                self.send(self.parent, sm.CacheReady(self.children.get("meta"), msg.rows, self.watch.pid("meta")))
        elif isinstance(msg, cm.PressureReport):
            if msg.req_id == "pressure-start":
                self.send(self.parent, sm.CacheReady(self.children.get("meta"), meta_pid=self.watch.pid("meta")))
        elif isinstance(msg, cm.ErrorReply):
            self.send(self.parent, sm.TreeFailed("cache", f"cache start failed: {msg}"))

    def init_for(self, spec: ChildSpec) -> Any:
        if spec.id == "meta":
            return cm.MetaStart(self.config, req_id="meta-start")
        p = dict(self.pressure or {})
        return cm.PressureStart(self.children["meta"], p.get("source"), p.get("high", 0.85), p.get("low", 0.75),
                                p.get("interval_s", 5.0), tuple(p.get("tiers", ("ram", "ram_file"))),
                                req_id="pressure-start")


class RootSupervisor(Supervisor):
    strategy = Strategy.ONE_FOR_ONE
    max_restarts = 5
    max_seconds = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start_msg: sm.TreeStart | None = None
        self.starter: tuple[Any, str] | None = None
        self.meta: Any = None
        self.state = "new"
        self.stop_waiters: list[tuple[Any, str]] = []
        self.models_unloaded = 0
        self.model_specs: tuple[sm.ModelSpec, ...] = ()
        self.meta_pid: int | None = None

    def _specs_path(self) -> str | None:
        return tree_file(self.start_msg, "specs")

    def on_exit_request(self) -> None:
        """Thespian is stopping the root on purpose: the daemon's root watch must not restart it
        (unless the root escalated: then its exit is a failure, for the daemon to restart)."""
        path = tree_file(self.start_msg, "stopped") if not self.escalated else None
        if path is not None:
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))

    def _persist_specs(self) -> None:
        """Write the model specs where a restarted root finds them (private: configs name model files)."""
        path = self._specs_path()
        if path is None:
            return
        with contextlib.suppress(OSError):
            tmp = f"{path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                pickle.dump(self.model_specs, f)
            os.replace(tmp, path)

    def _restore_specs(self) -> tuple[sm.ModelSpec, ...]:
        path = self._specs_path()
        if path is None:
            return ()
        try:
            with open(path, "rb") as f:
                specs = pickle.load(f)  # written by a root of this same system, mode 0600
        except (OSError, pickle.PickleError, EOFError):
            return ()
        return tuple(x for x in specs if isinstance(x, sm.ModelSpec)) if isinstance(specs, tuple) else ()

    def info(self, req_id: str) -> sm.TreeInfo:
        s = self.start_msg
        return sm.TreeInfo(req_id, self.myAddress, self.children.get("cache"),
                           self.meta, self.children.get("models"), s.admin_port if s else 0,
                           s.obs_path if s else None, s.cache_config if s else None, self.state,
                           {"root": self.restart_count},
                           {"root": os.getpid(), **{str(k): v for k, v in self.watch.pids().items()},
                            **({"meta": self.meta_pid} if self.meta_pid else {})})

    def handle(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, sm.TreeStart):
            if self.start_msg is not None:
                self.send(sender, sm.TreeReady(msg.req_id, self.info(msg.req_id)) if self.state == "running"
                          else sm.TreeFailed(msg.req_id, f"tree is {self.state}"))
                return
            self.start_msg, self.starter, self.state = msg, (sender, msg.req_id), "starting"
            with contextlib.suppress(OSError, TypeError):
                os.unlink(tree_file(msg, "stopped"))  # type: ignore[arg-type]
            self.model_specs = self._restore_specs() if msg.restore else ()
            self._persist_specs()
            self.add_child(ChildSpec("cache", CacheSupervisor))
        elif isinstance(msg, sm.ModelSpecs):
            if self.state != "stopping":  # an unload for the stop is not a change of the set to bring back
                self.model_specs = msg.specs
                self._persist_specs()
        elif isinstance(msg, sm.CacheReady):
            self.meta, self.meta_pid = msg.meta, msg.meta_pid
            if "models" not in self.specs:
                self.add_child(ChildSpec("models", ModelSupervisor))
            elif "models" in self.children:
                self.send(self.children["models"], mm.CacheRebind(self.meta))
        elif isinstance(msg, sm.ModelSupReady):
            if self.starter is not None:
                dest, req_id = self.starter
                self.starter = None
                self.state = "running"
                self.send(dest, sm.TreeReady(req_id, self.info(req_id)))
        elif isinstance(msg, sm.TreeFailed):
            self.state = "failed"
            if self.starter is not None:
                dest, req_id = self.starter
                self.starter = None
                self.send(dest, sm.TreeFailed(req_id, msg.detail))
        elif isinstance(msg, sm.TreeInfoReq):
            self.send(sender, self.info(msg.req_id))
        elif isinstance(msg, sm.StopTree):
            self.stop_waiters.append((sender, msg.req_id))
            if len(self.stop_waiters) == 1:
                self.state = "stopping"
                if "models" in self.children:
                    self.send(self.children["models"], sm.StopModels("stop-tree"))
                else:
                    self._models_stopped(0)
        elif isinstance(msg, sm.ModelsStopped):
            self._models_stopped(msg.n)
        elif isinstance(msg, cm.Idle):
            self._reply_stopped()

    def _models_stopped(self, n: int) -> None:
        self.models_unloaded = n
        if self.meta is not None and "cache" in self.children:
            self.send(self.meta, cm.WaitIdle("stop-tree"))  # shutdown saves reach their tier first
        else:
            self._reply_stopped()

    def on_child_down(self, cid: str) -> bool:
        if self.state != "stopping":
            return True
        # Stopping: a dead child is not restarted, and the stop does not wait for it.
        if cid == "models" and self.stop_waiters:
            self._models_stopped(self.models_unloaded)
        elif cid == "cache" and self.stop_waiters:
            self._reply_stopped()
        return False

    def _reply_stopped(self) -> None:
        with contextlib.suppress(OSError, TypeError):
            os.unlink(self._specs_path())  # type: ignore[arg-type]  # a stopped tree restores nothing
        for dest, req_id in self.stop_waiters:
            self.send(dest, sm.TreeStopped(req_id, self.models_unloaded))
        self.stop_waiters.clear()

    def init_for(self, spec: ChildSpec) -> Any:
        s = self.start_msg
        assert s is not None
        if spec.id == "cache":
            return sm.CacheSupStart(s.cache_config, s.pressure)
        if spec.id == "models":
            return sm.ModelSupStart(self.meta, s.cache_config, s.admin_port, s.obs_path, s.thinking_key, s.cores,
                                    self.model_specs)
        return None

    def on_escalate(self, failed: str) -> None:
        """Past its intensity the root exits like any supervisor: the daemon's root watch restarts the
        whole tree (``root_watch``), and gives up after its own intensity, for a process manager."""
        self.state = "failed"
        self.send(self.myAddress, ActorExitRequest())


__all__ = ["CacheSupervisor", "Restart", "RootSupervisor", "tree_file"]
