"""Messages of the supervision tree (root, cache supervisor, model supervisor).

Model requests and the model supervisor's management messages live in
``actors.model.messages``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TreeStart:
    """Sent once to the root by the process that started the system."""

    req_id: str
    cache_config: Any
    admin_port: int
    obs_path: str | None = None
    pressure: dict[str, Any] | None = None  # PressureStart fields (source, high, low, interval_s, tiers)
    thinking_key: Any = None  # actors.secret.Secret | None: the node-wide HMAC key for thinking signatures
    cores: int | None = None  # the node's core budget for llama.cpp threads (None: every core it may run on)
    restore: bool = False  # a restarted root: bring back the models its predecessor persisted


@dataclass(frozen=True)
class TreeReady:
    req_id: str
    info: TreeInfo


@dataclass(frozen=True)
class TreeFailed:
    req_id: str
    detail: str


@dataclass(frozen=True)
class TreeInfoReq:
    req_id: str = ""


@dataclass(frozen=True)
class TreeInfo:
    """Addresses and settings an attaching client needs."""

    req_id: str
    root: Any
    cache: Any
    meta: Any
    models: Any
    admin_port: int
    obs_path: str | None
    cache_config: Any
    state: str = "running"  # running | starting | failed | stopping
    restarts: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)  # root, cache, models: watched by clients on this host


@dataclass(frozen=True)
class StopTree:
    """Graceful stop: unload every model (shutdown saves), flush cache writes. Replies TreeStopped."""

    req_id: str = ""


@dataclass(frozen=True)
class TreeStopped:
    req_id: str
    models_unloaded: int


# --- children of the root ------------------------------------------------------


@dataclass(frozen=True)
class CacheSupStart:
    config: Any
    pressure: dict[str, Any] | None = None


@dataclass(frozen=True)
class CacheReady:
    """Cache supervisor -> root: its meta actor is up (again) at ``meta``."""

    meta: Any
    rows: int = 0
    meta_pid: int | None = None  # for TreeInfo.pids: clients watch it to refresh a stale meta address


@dataclass(frozen=True)
class ModelSpec:
    """What a restarted model supervisor needs to bring one model back: held by the root, which outlives it."""

    model_id: str
    config: Any  # actors.model.messages.ModelConfig
    adapters: tuple[tuple[str, str, float], ...] = ()
    restarts: int = 0


@dataclass(frozen=True)
class ModelSpecs:
    """Model supervisor -> root, whenever the set of models (or their adapters) changes: the whole set."""

    specs: tuple[ModelSpec, ...]


@dataclass(frozen=True)
class ModelSupStart:
    meta: Any
    cache_config: Any
    admin_port: int
    obs_path: str | None
    thinking_key: Any = None
    cores: int | None = None
    models: tuple[ModelSpec, ...] = ()  # a restarted supervisor brings these back


@dataclass(frozen=True)
class ModelSupReady:
    models: int = 0


@dataclass(frozen=True)
class StopModels:
    req_id: str = ""


@dataclass(frozen=True)
class ModelsStopped:
    req_id: str
    n: int


# --- generic supervisor test hooks -------------------------------------------------


@dataclass(frozen=True)
class WhichChildren:
    req_id: str = ""


@dataclass(frozen=True)
class Children:
    req_id: str
    children: dict[str, Any]
    restarts: int
    escalated: bool
    pids: dict[str, int] = field(default_factory=dict)  # child id -> pid, as the supervisor watches it
