"""One configuration format for a whole node: a TOML file, or the same tables as Python dicts.

::

    from actors.config import load_config, start_system

    config = load_config("llama-actors.toml")     # ConfigError: one line naming the key path
    with start_system(config) as system:           # System(...) plus one load_model(...) per [[models]]
        system.complete("smol", "Hello")

Everything is checked here, before any process starts or any model loads:
an unknown key, a value of the wrong type, a missing model file or a bad
context option is a :class:`ConfigError` whose text is one line that names
the key path (``models[1].context.n_ctx: expected an integer, got "big"``).
Model and context options go through the same validators the native
binding uses (``actors.model.options``), so the file cannot accept
something the model process would refuse later.

The parsed result is a tree of frozen dataclasses.  :func:`system_kwargs`
and :func:`load_model_kwargs` turn it into the keyword arguments of
``actors.api.System`` and ``System.load_model``; those keywords are the
Python spelling of every key, so a program never needs the file.

Relative paths in a file (model paths, tier directories, ``log``,
``thinking_key_file``) are taken relative to the file's directory, so a
config keeps working whatever the current directory of the process is.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.config_values import (
    as_bool,
    as_int,
    as_number,
    as_path,
    as_str,
    as_table,
    check_keys,
    parse_bytes,
    show_value,
)
from actors.errors import ConfigError
from actors.secret import Secret

if TYPE_CHECKING:
    from actors.api import System

TIER_NAMES = ("ram", "ram_file", "disk")
BACKENDS = ("llama", "stub")
PRESSURE_SOURCES = ("system", "nvml")

# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class NodeSettings:
    """``[node]``: the actor system itself."""

    admin_port: int | None = None
    multi_host: bool = False
    log: str | None = None
    # Wrapped so that printing the config (or a traceback holding it) never shows the key.
    thinking_key: Secret | None = None
    # The node's core budget for llama.cpp threads (None: every core it may run on), shared among its models.
    cores: int | None = None


@dataclass(frozen=True)
class TierDir:
    """A file tier (``ram_file`` or ``disk``): its directory and its quota in bytes."""

    dir: str
    bytes: int


@dataclass(frozen=True)
class CacheSettings:
    """``[cache]``: what ``CacheConfig.create`` is called with.

    Kept as settings, not as a built ``CacheConfig``, because a config with
    no ``run_dir`` must get a fresh run directory for every system it starts.
    """

    run_dir: str | None = None
    ram: int | None = 1 << 30
    ram_file: TierDir | None = None
    disk: TierDir | None = None
    default_tier: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # other CacheConfig fields (fsync, writers, ...)
    policy: Mapping[str, int] = field(default_factory=dict)  # SavePolicy fields

    def to_cache_config(self) -> Any:
        """A new ``CacheConfig`` (a fresh run directory under /dev/shm when ``run_dir`` is unset)."""
        from actors.cache.config import CacheConfig
        from actors.cache.policy import SavePolicy

        return CacheConfig.create(
            self.run_dir,
            ram=self.ram,
            ram_file=(self.ram_file.dir, self.ram_file.bytes) if self.ram_file else None,
            disk=(self.disk.dir, self.disk.bytes) if self.disk else None,
            default_tier=self.default_tier,
            policy=SavePolicy(**dict(self.policy)),
            **dict(self.options),
        )


@dataclass(frozen=True)
class PressureSettings:
    """``[pressure]``: the memory-pressure poller (off when the table is absent)."""

    source: str = "system"
    device: int = 0
    high: float = 0.85
    low: float = 0.75
    interval_s: float = 5.0
    tiers: tuple[str, ...] = ("ram", "ram_file")

    def to_kwargs(self) -> dict[str, Any]:
        """The ``System(pressure=...)`` dict: the ``PressureStart`` fields with a source object."""
        from actors.cache.pressure import GpuMemorySource, SystemMemorySource

        source = GpuMemorySource(self.device) if self.source == "nvml" else SystemMemorySource()
        return {"source": source, "high": self.high, "low": self.low, "interval_s": self.interval_s,
                "tiers": self.tiers}


@dataclass(frozen=True)
class ModelSettings:
    """One ``[[models]]`` entry: the arguments of ``System.load_model``."""

    id: str
    path: str | None = None
    backend: str = "llama"
    context: Mapping[str, Any] = field(default_factory=dict)
    model_options: Mapping[str, Any] = field(default_factory=dict)
    prefill_chunk_size: int | None = None
    use_cache: bool = True
    embeddings: bool = False
    thinking_markers: Mapping[str, str] | None = None
    tool_call_markers: Mapping[str, str] | None = None
    stub: Mapping[str, Any] = field(default_factory=dict)
    max_pending: int | None = None
    on_full: str = "queue"
    decode_budget_ms: int | None = None


@dataclass(frozen=True)
class HttpSettings:
    """``[http]``: the OpenAI/Anthropic HTTP front door (``actors.http``, docs/http.md).

    ``api_keys``: accepted bearer / ``x-api-key`` values (none: no check, allowed on loopback only);
    ``queue_limit``: requests per model in flight at the server (running or waiting) before 429,
    ``queue_limits`` the same per model id; ``cors_origins``: origins allowed to call from a browser.
    """

    bind: str = "127.0.0.1"
    port: int = 8080
    api_keys: tuple[Secret, ...] = ()
    queue_limit: int = 16
    queue_limits: Mapping[str, int] = field(default_factory=dict)
    cors_origins: tuple[str, ...] = ()
    default_max_tokens: int = 1024
    retry_after_s: int = 1


@dataclass(frozen=True)
class Config:
    """A whole validated configuration; ``source`` is the file it came from (None for a dict)."""

    node: NodeSettings = field(default_factory=NodeSettings)
    cache: CacheSettings | None = None
    pressure: PressureSettings | None = None
    models: tuple[ModelSettings, ...] = ()
    source: str | None = None
    http: HttpSettings | None = None


# --------------------------------------------------------------------------- sections


def _node(v: Any, base: Path | None, env: Mapping[str, str]) -> NodeSettings:
    t = as_table(v, "node")
    check_keys(t, ("admin_port", "multi_host", "log", "thinking_key", "thinking_key_file", "thinking_key_env", "cores"),
          "node")
    port = None
    if "admin_port" in t:
        port = as_int(t["admin_port"], "node.admin_port", 1, 65535)
        from actors.supervisor.runtime import port_refusal

        refusal = port_refusal(port)
        if refusal is not None:
            raise ConfigError("node.admin_port", refusal)
    sources = [k for k in ("thinking_key", "thinking_key_file", "thinking_key_env") if k in t]
    if len(sources) > 1:
        raise ConfigError(f"node.{sources[1]}", f"give only one of thinking_key, thinking_key_file, "
                                                f"thinking_key_env (also got {sources[0]})")
    key: bytes | None = None
    if "thinking_key" in t:
        key = as_str(t["thinking_key"], "node.thinking_key").encode("utf-8")
    elif "thinking_key_file" in t:
        path = as_path(t["thinking_key_file"], "node.thinking_key_file", base)
        try:
            with open(path, "rb") as f:
                key = f.read().rstrip(b"\r\n")
        except OSError as e:
            raise ConfigError("node.thinking_key_file", f"cannot read {show_value(path)}: {e.strerror}") from None
        if not key:
            raise ConfigError("node.thinking_key_file", f"{show_value(path)} is empty")
    elif "thinking_key_env" in t:
        name = as_str(t["thinking_key_env"], "node.thinking_key_env")
        if not env.get(name):
            raise ConfigError("node.thinking_key_env", f"the environment variable {name} is not set or empty")
        key = env[name].encode("utf-8")
    return NodeSettings(
        admin_port=port,
        multi_host=as_bool(t.get("multi_host", False), "node.multi_host"),
        log=as_path(t["log"], "node.log", base) if "log" in t else None,
        thinking_key=Secret(key) if key else None,
        cores=as_int(t["cores"], "node.cores", 1, 4096) if "cores" in t else None,
    )


_CACHE_OPTIONS: dict[str, Callable[[Any, str], Any]] = {
    "fsync": as_bool,
    "demote_to_disk": as_bool,
    "block_size": lambda v, k: as_int(v, k, 1),
    "writers": lambda v, k: as_int(v, k, 1),
    "writer_queue": lambda v, k: as_int(v, k, 0),
    "max_candidates": lambda v, k: as_int(v, k, 1),
    "reservation_ttl_s": lambda v, k: as_number(v, k, 0, lo_open=True),
    "tmp_ttl_s": lambda v, k: as_number(v, k, 0, lo_open=True),
    "sweep_interval_s": lambda v, k: as_number(v, k, 0, lo_open=True),
    "write_behind": as_bool,
    "write_behind_queue": lambda v, k: as_int(v, k, 1),
    "write_behind_bytes": parse_bytes,
    "write_behind_nice": lambda v, k: as_int(v, k, 0, 19),
    "spill_budget_s": lambda v, k: as_number(v, k, 0),
}
_POLICY_KEYS = ("min_tokens", "cold_min_tokens", "cold_max_tokens", "continued_interval", "boundary_trim_tokens",
                "boundary_align_tokens")


def _tier_dir(v: Any, key: str, base: Path | None) -> TierDir:
    t = as_table(v, key)
    check_keys(t, ("dir", "bytes"), key)
    for k in ("dir", "bytes"):
        if k not in t:
            raise ConfigError(f"{key}.{k}", "missing (a file tier needs a directory and a quota)")
    return TierDir(as_path(t["dir"], f"{key}.dir", base), parse_bytes(t["bytes"], f"{key}.bytes"))


def _cache(v: Any, base: Path | None) -> CacheSettings:

    t = as_table(v, "cache")
    check_keys(t, ("run_dir", "ram", "ram_file", "disk", "default_tier", "policy", *_CACHE_OPTIONS), "cache")
    ram: int | None = 1 << 30
    if "ram" in t:  # false: no ram tier
        ram = None if t["ram"] is False else parse_bytes(t["ram"], "cache.ram")
    ram_file = _tier_dir(t["ram_file"], "cache.ram_file", base) if "ram_file" in t else None
    disk = _tier_dir(t["disk"], "cache.disk", base) if "disk" in t else None
    configured = [n for n, on in (("ram", ram is not None), ("ram_file", ram_file), ("disk", disk)) if on]
    if not configured:
        raise ConfigError("cache.ram", "no tier left: set ram, ram_file or disk (or leave [cache] out)")
    default_tier = None
    if "default_tier" in t:
        default_tier = as_str(t["default_tier"], "cache.default_tier", TIER_NAMES)
        if default_tier not in configured:
            raise ConfigError("cache.default_tier", f"{show_value(default_tier)} is not configured in [cache] "
                                                    f"(configured: {', '.join(configured) or 'none'})")
    if ram_file and disk and Path(ram_file.dir).resolve() == Path(disk.dir).resolve():
        raise ConfigError("cache.disk.dir", "ram_file and disk must not share a directory")
    options = {k: check(t[k], f"cache.{k}") for k, check in _CACHE_OPTIONS.items() if k in t}
    policy: dict[str, int] = {}
    if "policy" in t:
        p = as_table(t["policy"], "cache.policy")
        check_keys(p, _POLICY_KEYS, "cache.policy")
        policy = {k: as_int(p[k], f"cache.policy.{k}", 0) for k in _POLICY_KEYS if k in p}
    run_dir = as_path(t["run_dir"], "cache.run_dir", base) if "run_dir" in t else None
    settings = CacheSettings(run_dir, ram, ram_file, disk, default_tier, options, policy)
    try:  # the cache's own cross-field rules (policy relations, ...), without creating anything
        dataclasses.replace(settings, run_dir=settings.run_dir or "/nonexistent/validation").to_cache_config()
    except ConfigError as e:  # the cache names its own key; the file's path for it starts with cache.
        raise ConfigError(f"cache.{e.key}", e.text) from None
    return settings


def _pressure(v: Any, configured: tuple[str, ...]) -> PressureSettings:
    t = as_table(v, "pressure")
    check_keys(t, ("source", "device", "high", "low", "interval_s", "tiers"), "pressure")
    d = PressureSettings()
    source = as_str(t.get("source", d.source), "pressure.source", PRESSURE_SOURCES)
    device = as_int(t.get("device", d.device), "pressure.device", 0)
    if "device" in t and source != "nvml":
        raise ConfigError("pressure.device", 'only used with source = "nvml"')
    high = as_number(t.get("high", d.high), "pressure.high", 0, 1, lo_open=True)
    low = as_number(t.get("low", d.low), "pressure.low", 0, 1, lo_open=True)
    if not low < high:
        raise ConfigError("pressure.low", f"must be below high ({high}), got {low}")
    # By default the memory tiers that exist: evicting disk rows frees no memory.
    tiers_v = t.get("tiers", [n for n in d.tiers if n in configured])
    if not isinstance(tiers_v, list) or not tiers_v:
        if "tiers" not in t:
            raise ConfigError("pressure.tiers", "no ram or ram_file tier to evict from; list the tiers to evict")
        raise ConfigError("pressure.tiers", f"expected a non-empty array of tier names, got {show_value(tiers_v)}")
    tiers = tuple(as_str(x, f"pressure.tiers[{i}]", TIER_NAMES) for i, x in enumerate(tiers_v))
    for i, tier in enumerate(tiers):
        if tier not in configured:
            raise ConfigError(f"pressure.tiers[{i}]", f"{show_value(tier)} is not a configured cache tier")
    return PressureSettings(source, device, high, low,
                            as_number(t.get("interval_s", d.interval_s), "pressure.interval_s", 0, lo_open=True), tiers)


_MODEL_KEYS = ("id", "path", "backend", "context", "model_options", "prefill_chunk_size", "use_cache", "embeddings",
               "thinking_markers", "tool_call_markers", "stub", "max_pending", "on_full",
               "decode_budget_ms")


def _option_error(e: Any, opts: Mapping[str, Any], key: str) -> ConfigError:
    """Re-key an ``OptionError`` from ``actors.model.options`` under the config path, values shown TOML-style."""
    detail = e.detail.split(": ", 1)[1] if e.detail.startswith(f"{e.key}: ") else e.detail
    if e.key in opts and not isinstance(opts[e.key], (Mapping, list)):
        detail = detail.replace(repr(opts[e.key]), show_value(opts[e.key]))
    return ConfigError(f"{key}.{e.key}", detail)


def _max_devices() -> int:
    """llama_max_devices() of the built extension (bounds tensor_split and main_gpu)."""
    try:
        from actors.model.llama import native

        return int(native()[1].la_max_devices())
    except Exception:  # no extension here: the model process reports it at load
        return 16


def _model(v: Any, i: int, base: Path | None, seen: dict[str, int]) -> ModelSettings:
    from actors.model.errors import OptionError
    from actors.model.options import parse_context_options, parse_model_options

    key = f"models[{i}]"
    t = as_table(v, key)
    check_keys(t, _MODEL_KEYS, key)
    if "id" not in t:
        raise ConfigError(f"{key}.id", "missing (every model needs an id)")
    mid = as_str(t["id"], f"{key}.id")
    if len(mid.encode()) > 64 or any(c.isspace() or not c.isprintable() for c in mid):
        raise ConfigError(f"{key}.id", f"must be at most 64 bytes without spaces or control characters, "
                                       f"got {show_value(mid)}")
    if mid in seen:
        raise ConfigError(f"{key}.id", f"{show_value(mid)} is already used by models[{seen[mid]}]")
    seen[mid] = i
    backend = as_str(t.get("backend", "llama"), f"{key}.backend", BACKENDS)
    path = None
    if "path" in t:
        path = as_path(t["path"], f"{key}.path", base)
        if backend == "llama" and not os.path.isfile(path):
            raise ConfigError(f"{key}.path", f"no such model file: {show_value(path)}")
    elif backend == "llama":
        from actors.model.llama import default_model_path

        try:
            bundled = default_model_path()
        except FileNotFoundError as e:
            raise ConfigError(f"{key}.path", f"not given, and {e}") from None
        if not bundled.is_file():
            raise ConfigError(f"{key}.path", f"not given, and the bundled model {show_value(str(bundled))} is missing")
    context = dict(as_table(t.get("context", {}), f"{key}.context"))
    model_options = dict(as_table(t.get("model_options", {}), f"{key}.model_options"))
    try:
        ctx = parse_context_options(context)
    except OptionError as e:
        raise _option_error(e, context, f"{key}.context") from None
    if ctx.n_batch < ctx.n_seq_max:
        raise ConfigError(f"{key}.context.n_batch", f"must be >= n_seq_max ({ctx.n_seq_max}) so every generating "
                                                    f"sequence gets its decode row each step, got {ctx.n_batch}")
    try:
        # Only these two keys need llama_max_devices(); the native library (and, on a GPU build, the
        # driver) is not initialised in this process for nothing.
        bounded = "tensor_split" in model_options or "main_gpu" in model_options
        parse_model_options(model_options, _max_devices() if bounded else 16)
    except OptionError as e:
        raise _option_error(e, model_options, f"{key}.model_options") from None
    stub: dict[str, Any] = {}
    if "stub" in t:
        if backend != "stub":
            raise ConfigError(f"{key}.stub", 'only used with backend = "stub"')
        from actors.model.backend import StubConfig

        stub = dict(as_table(t["stub"], f"{key}.stub"))
        check_keys(stub, {f.name for f in dataclasses.fields(StubConfig)}, f"{key}.stub")
        for k, x in stub.items():
            want = type(getattr(StubConfig(), k))
            if want is str:
                as_str(x, f"{key}.stub.{k}")
            elif want is float:
                as_number(x, f"{key}.stub.{k}", 0)
            else:
                as_int(x, f"{key}.stub.{k}", 0)
        sized = StubConfig(**stub)
        if sized.n_batch < sized.n_seq_max:
            raise ConfigError(f"{key}.stub.n_batch", f"must be >= n_seq_max ({sized.n_seq_max}), got {sized.n_batch}")
    thinking, tools = t.get("thinking_markers"), t.get("tool_call_markers")
    try:  # the model process's own rules, so the file and the keyword arguments agree
        from actors.model.output import parse_markers

        parse_markers(thinking, tools)
    except OptionError as e:
        raise ConfigError(f"{key}.{e.key}", e.detail.split(": ", 1)[-1]) from None
    thinking = dict(thinking) if thinking else None
    tools = dict(tools) if tools else None
    chunk = None
    if "prefill_chunk_size" in t:
        chunk = as_int(t["prefill_chunk_size"], f"{key}.prefill_chunk_size", 1)
    return ModelSettings(
        id=mid,
        path=path,
        backend=backend,
        context=context,
        model_options=model_options,
        prefill_chunk_size=chunk,
        use_cache=as_bool(t.get("use_cache", True), f"{key}.use_cache"),
        embeddings=as_bool(t.get("embeddings", False), f"{key}.embeddings"),
        thinking_markers=thinking,
        tool_call_markers=tools,
        stub=stub,
        max_pending=as_int(t["max_pending"], f"{key}.max_pending", 0, 2**31 - 1) if "max_pending" in t else None,
        on_full=as_str(t.get("on_full", "queue"), f"{key}.on_full", ("queue", "error")),
        decode_budget_ms=(as_int(t["decode_budget_ms"], f"{key}.decode_budget_ms", 0, 2**31 - 1)
                          if "decode_budget_ms" in t else None),
    )


def _http(v: Any) -> HttpSettings:
    t = as_table(v, "http")
    check_keys(t, ("bind", "port", "api_keys", "queue_limit", "queue_limits", "cors_origins", "default_max_tokens",
              "retry_after_s"), "http")
    d = HttpSettings()

    def strings(key: str) -> tuple[str, ...]:
        v = t.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise ConfigError(f"http.{key}", f"expected an array of non-empty strings, got {show_value(v)}")
        return tuple(v)

    limits = as_table(t.get("queue_limits", {}), "http.queue_limits")
    return HttpSettings(
        bind=as_str(t["bind"], "http.bind") if "bind" in t else d.bind,
        port=as_int(t.get("port", d.port), "http.port", 0, 65535),
        api_keys=tuple(Secret(k.encode("utf-8")) for k in strings("api_keys")),
        queue_limit=as_int(t.get("queue_limit", d.queue_limit), "http.queue_limit", 1),
        queue_limits={k: as_int(n, f"http.queue_limits.{k}", 1) for k, n in limits.items()},
        cors_origins=strings("cors_origins"),
        default_max_tokens=as_int(t.get("default_max_tokens", d.default_max_tokens), "http.default_max_tokens", 1),
        retry_after_s=as_int(t.get("retry_after_s", d.retry_after_s), "http.retry_after_s", 0),
    )


# --------------------------------------------------------------------------- entry points


def parse_config(data: Mapping[str, Any], base_dir: str | os.PathLike[str] | None = None,
                 source: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Validate a configuration given as nested dicts (what ``tomllib`` returns).

    ``base_dir`` anchors relative paths (None: the current directory);
    ``env`` is where ``thinking_key_env`` is looked up (default ``os.environ``).
    """
    base = Path(base_dir) if base_dir is not None else None
    top = as_table(data, "")
    check_keys(top, ("node", "cache", "pressure", "models", "http"), "")
    models_v = top.get("models", [])
    if not isinstance(models_v, list):
        raise ConfigError("models", f"expected an array of tables ([[models]]), got {show_value(models_v)}")
    seen: dict[str, int] = {}
    cache = _cache(top["cache"], base) if "cache" in top else None
    tiers = ("ram",) if cache is None else tuple(
        n for n, on in (("ram", cache.ram is not None), ("ram_file", cache.ram_file), ("disk", cache.disk)) if on)
    pressure = _pressure(top["pressure"], tiers) if "pressure" in top else None
    return Config(
        node=_node(top.get("node", {}), base, os.environ if env is None else env),
        cache=cache,
        pressure=pressure,
        models=tuple(_model(m, i, base, seen) for i, m in enumerate(models_v)),
        source=source,
        http=_http(top["http"]) if "http" in top else None,
    )


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML file (ConfigError for a missing file, bad TOML or any bad value)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    p = Path(path)
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("", f"no such config file: {p}") from None
    except OSError as e:
        raise ConfigError("", f"cannot read {p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"not valid TOML: {e}") from None
    return parse_config(data, p.resolve().parent, str(p), env)


def system_kwargs(config: Config, port: int | None = None) -> dict[str, Any]:
    """Keyword arguments of ``actors.api.System`` for this config (``port`` overrides ``admin_port``)."""
    node = config.node
    return {
        "port": port if port is not None else node.admin_port,
        "cache": config.cache.to_cache_config() if config.cache is not None else None,
        "multi_host": node.multi_host,
        "log_path": node.log,
        "thinking_key": node.thinking_key,
        "pressure": config.pressure.to_kwargs() if config.pressure is not None else None,
        "cores": node.cores,
    }


def load_model_kwargs(model: ModelSettings) -> dict[str, Any]:
    """Keyword arguments of ``System.load_model`` for one ``[[models]]`` entry (``model_id`` included)."""
    kw: dict[str, Any] = {
        "model_id": model.id,
        "path": model.path,
        "backend": model.backend,
        "context": dict(model.context),
        "model_options": dict(model.model_options),
        "prefill_chunk_size": model.prefill_chunk_size,
        "use_cache": model.use_cache,
        "embeddings": model.embeddings,
        "thinking_markers": dict(model.thinking_markers) if model.thinking_markers else None,
        "tool_call_markers": dict(model.tool_call_markers) if model.tool_call_markers else None,
        "max_pending": model.max_pending,
        "on_full": model.on_full,
        "decode_budget_ms": model.decode_budget_ms,
    }
    if model.stub:
        kw["stub"] = dict(model.stub)
    return kw


def load_models(system: System, config: Config,
                progress: Callable[[ModelSettings, float | None, dict[str, Any] | None], None] | None = None,
                ) -> list[dict[str, Any]]:
    """Load every model of ``config`` in file order; ``progress(model, elapsed_s, info)`` before and after each.

    ``elapsed_s`` and ``info`` are None in the call made before the load starts.
    """
    import time

    infos = []
    for m in config.models:
        if progress is not None:
            progress(m, None, None)
        t0 = time.monotonic()
        info = system.load_model(**load_model_kwargs(m))
        if progress is not None:
            progress(m, time.monotonic() - t0, info)
        infos.append(info)
    return infos


def start_system(config: Config, port: int | None = None,
                 progress: Callable[[ModelSettings, float | None, dict[str, Any] | None], None] | None = None,
                 ) -> System:
    """Start a system for ``config`` and load its models; on any failure the system is stopped again."""
    from actors.api import System

    system = System(**system_kwargs(config, port))
    try:
        load_models(system, config, progress)
    except BaseException:
        system.close()
        raise
    return system


__all__ = ["CacheSettings", "Config", "ConfigError", "HttpSettings", "ModelSettings", "NodeSettings",
           "PressureSettings", "TierDir", "load_config", "load_model_kwargs", "load_models", "parse_bytes",
           "parse_config", "start_system", "system_kwargs"]
