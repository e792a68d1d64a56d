"""The TOML configuration: every key validated up front, one-line errors naming the key path."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from actors.api import System
from actors.cache.pressure import GpuMemorySource, SystemMemorySource
from actors.config import (
    ConfigError,
    load_config,
    load_model_kwargs,
    parse_bytes,
    parse_config,
    system_kwargs,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "llama-actors.toml"


def error_of(data: dict[str, Any], **kw: Any) -> str:
    with pytest.raises(ConfigError) as ei:
        parse_config(data, **kw)
    text = str(ei.value)
    assert "\n" not in text
    return text


def test_example_config_parses_and_maps_to_keywords() -> None:
    config = load_config(EXAMPLE)
    assert config.node.admin_port == 7700
    assert [m.id for m in config.models] == ["smol"]
    kw = system_kwargs(config)
    assert kw["port"] == 7700
    cache = kw["cache"]
    assert [t.name for t in cache.tiers] == ["ram", "ram_file", "disk"]
    assert cache.tier("ram").quota_bytes == 1 << 30
    assert cache.tier("disk").quota_bytes == 20 << 30
    assert cache.default_tier == "ram_file"
    assert cache.policy.min_tokens == 64
    assert isinstance(kw["pressure"]["source"], SystemMemorySource)
    assert (kw["pressure"]["high"], kw["pressure"]["low"]) == (0.90, 0.80)
    model = load_model_kwargs(config.models[0])
    assert model["model_id"] == "smol" and model["path"] is None
    assert model["context"] == {"n_ctx": 8192, "n_seq_max": 4, "n_batch": 512, "n_threads": 2}


def test_keywords_are_those_of_the_python_api() -> None:
    """The config is a spelling of System(...) and load_model(...): no key without a keyword."""
    config = parse_config({"models": [{"id": "s", "backend": "stub", "stub": {"n_seq_max": 2}}]})
    assert set(system_kwargs(config)) <= set(inspect.signature(System.__init__).parameters)
    assert set(load_model_kwargs(config.models[0])) <= set(inspect.signature(System.load_model).parameters)


def test_the_error_names_the_key_path(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[models]]\nid = "a"\n[[models]]\nid = "b"\ncontext = { n_ctx = "big" }\n')
    with pytest.raises(ConfigError) as ei:
        load_config(cfg)
    assert str(ei.value) == 'models[1].context.n_ctx: expected an integer, got "big"'
    assert ei.value.key == "models[1].context.n_ctx"


@pytest.mark.parametrize(("data", "expected"), [
    ({"nodes": {}}, "nodes: unknown key (known: cache, http, models, node, pressure)"),
    ({"node": {"port": 1}}, "node.port: unknown key"),
    ({"node": {"admin_port": "7700"}}, 'node.admin_port: expected an integer, got "7700"'),
    ({"node": {"admin_port": 1900}}, "node.admin_port: 1900 is thespian's default"),
    ({"node": {"multi_host": 1}}, "node.multi_host: expected true or false, got 1"),
    ({"cache": {"ram": "lots"}}, 'cache.ram: expected a byte size (an integer or a string like "512MiB"), got "lots"'),
    ({"cache": {"disk": {"dir": "/tmp/x"}}}, "cache.disk.bytes: missing"),
    ({"cache": {"disk": {"dir": "/tmp/x", "bytes": 1, "quota": 2}}}, "cache.disk.quota: unknown key"),
    ({"cache": {"fsync": "yes"}}, 'cache.fsync: expected true or false, got "yes"'),
    ({"cache": {"writers": 0}}, "cache.writers: must be >= 1, got 0"),
    ({"cache": {"default_tier": "disk"}}, 'cache.default_tier: "disk" is not configured in [cache]'),
    ({"cache": {"default_tier": "tape"}}, 'cache.default_tier: expected one of ram, ram_file, disk, got "tape"'),
    ({"cache": {"ram": False}}, "cache.ram: no tier left"),
    ({"cache": {"policy": {"min_token": 1}}}, "cache.policy.min_token: unknown key"),
    ({"cache": {"policy": {"min_tokens": 300}}}, "cache.policy.cold_min_tokens: 256 is below min_tokens 300"),
    ({"cache": {"ram_file": {"dir": "/tmp/same", "bytes": 1}, "disk": {"dir": "/tmp/same", "bytes": 1}}},
     "cache.disk.dir: ram_file and disk must not share a directory"),
    ({"pressure": {"source": "gpu"}}, 'pressure.source: expected one of system, nvml, got "gpu"'),
    ({"pressure": {"high": 0.5, "low": 0.6}}, "pressure.low: must be below high (0.5), got 0.6"),
    ({"pressure": {"high": 1.5}}, "pressure.high: must be <= 1, got 1.5"),
    ({"pressure": {"device": 1}}, 'pressure.device: only used with source = "nvml"'),
    ({"pressure": {"tiers": ["disk"]}}, 'pressure.tiers[0]: "disk" is not a configured cache tier'),
    ({"pressure": {"tiers": []}}, "pressure.tiers: expected a non-empty array of tier names"),
    ({"models": {"id": "a"}}, "models: expected an array of tables ([[models]]), got a table"),
    ({"models": [{"path": "/x"}]}, "models[0].id: missing"),
    ({"models": [{"id": "a b", "backend": "stub"}]}, "models[0].id: must be at most 64 bytes without spaces"),
    ({"models": [{"id": "a", "backend": "stub"}, {"id": "a", "backend": "stub"}]},
     'models[1].id: "a" is already used by models[0]'),
    ({"models": [{"id": "a", "backend": "vllm"}]}, 'models[0].backend: expected one of llama, stub, got "vllm"'),
    ({"models": [{"id": "a", "path": "/no/such.gguf"}]}, 'models[0].path: no such model file: "/no/such.gguf"'),
    ({"models": [{"id": "a", "ctx": {}}]}, "models[0].ctx: unknown key"),
    ({"models": [{"id": "a", "context": {"n_ctxx": 1}}]}, "models[0].context.n_ctxx: unknown context option"),
    ({"models": [{"id": "a", "context": {"flash_attn": "maybe"}}]},
     'models[0].context.flash_attn: expected one of auto, false, off, on, true, got "maybe"'),
    ({"models": [{"id": "a", "context": {"n_seq_max": 8, "n_batch": 4}}]},
     "models[0].context.n_batch: must be >= n_seq_max (8)"),
    ({"models": [{"id": "a", "model_options": {"split_mode": "diagonal"}}]},
     'models[0].model_options.split_mode: expected one of layer, none, row, got "diagonal"'),
    ({"models": [{"id": "a", "prefill_chunk_size": 0}]}, "models[0].prefill_chunk_size: must be >= 1, got 0"),
    ({"models": [{"id": "a", "embeddings": "no"}]}, 'models[0].embeddings: expected true or false, got "no"'),
    ({"models": [{"id": "a", "thinking_markers": {"start": "<think>"}}]}, "models[0].thinking_markers.end: missing"),
    ({"models": [{"id": "a", "tool_call_markers": {"start": "<a>", "end": "</a>", "args": "x"}}]},
     "models[0].tool_call_markers.args: unknown key"),
    ({"models": [{"id": "a", "tool_call_markers": {"start": "<a>", "end": "</a>", "payload_start": "{"}}]},
     "models[0].tool_call_markers.payload_start: payload_start and payload_end go together"),
    ({"cache": {"ram": False, "disk": {"dir": "/tmp/d", "bytes": 1}}, "pressure": {}},
     "pressure.tiers: no ram or ram_file tier to evict from"),
    ({"models": [{"id": "a", "stub": {}}]}, 'models[0].stub: only used with backend = "stub"'),
    ({"models": [{"id": "a", "backend": "stub", "stub": {"n_seq": 1}}]}, "models[0].stub.n_seq: unknown key"),
    ({"models": [{"id": "a", "backend": "stub", "stub": {"n_seq_max": 8, "n_batch": 4}}]},
     "models[0].stub.n_batch: must be >= n_seq_max (8), got 4"),
])
def test_each_bad_value_is_one_line_naming_its_key(data: dict[str, Any], expected: str) -> None:
    assert error_of(data).startswith(expected)


def test_full_model_entry_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.gguf").write_bytes(b"GGUF")  # only existence is checked here
    cfg = tmp_path / "node.toml"
    cfg.write_text("""
[node]
log = "logs/serve.log"
[cache]
run_dir = "run"
ram = "64M"
disk = { dir = "kv", bytes = "1.5GB" }
default_tier = "disk"
fsync = false
writers = 3
[[models]]
id = "m"
path = "models/m.gguf"
context = { n_ctx = 2048, n_seq_max = 2, flash_attn = "off", type_k = "q8_0" }
model_options = { n_gpu_layers = 0, use_mmap = false }
prefill_chunk_size = 96
use_cache = false
embeddings = true
thinking_markers = { start = "<think>", end = "</think>" }
tool_call_markers = { start = "<tool_call>", end = "</tool_call>", payload_start = "{", payload_end = "}" }
max_pending = 8
on_full = "error"
decode_budget_ms = 5000
""")
    config = load_config(cfg)
    assert config.node.log == str(tmp_path / "logs" / "serve.log")
    cache = system_kwargs(config)["cache"]
    assert cache.run_dir == str(tmp_path / "run")
    assert cache.tier("disk").path == str(tmp_path / "kv")
    assert cache.tier("disk").quota_bytes == 1_500_000_000
    assert cache.tier("ram").quota_bytes == 64 << 20
    assert (cache.fsync, cache.writers) == (False, 3)
    assert load_model_kwargs(config.models[0]) == {
        "model_id": "m",
        "path": str(tmp_path / "models" / "m.gguf"),
        "backend": "llama",
        "context": {"n_ctx": 2048, "n_seq_max": 2, "flash_attn": "off", "type_k": "q8_0"},
        "model_options": {"n_gpu_layers": 0, "use_mmap": False},
        "prefill_chunk_size": 96,
        "use_cache": False,
        "embeddings": True,
        "thinking_markers": {"start": "<think>", "end": "</think>"},
        "tool_call_markers": {"start": "<tool_call>", "end": "</tool_call>", "payload_start": "{", "payload_end": "}"},
        "max_pending": 8,
        "on_full": "error",
        "decode_budget_ms": 5000,
    }


def test_defaults_leave_the_runtime_defaults_alone() -> None:
    kw = system_kwargs(parse_config({}))
    assert kw == {"port": None, "cache": None, "multi_host": False, "log_path": None, "thinking_key": None,
                  "pressure": None, "cores": None}
    assert system_kwargs(parse_config({}), port=7788)["port"] == 7788


def test_node_cores_is_the_core_budget() -> None:
    assert system_kwargs(parse_config({"node": {"cores": 3}}))["cores"] == 3
    for bad in (0, -1, "2", True):
        with pytest.raises(ConfigError) as e:
            parse_config({"node": {"cores": bad}})
        assert e.value.key == "node.cores"


def test_each_start_gets_a_fresh_run_dir_unless_one_is_set() -> None:
    config = parse_config({"cache": {"ram": "1MiB"}})
    assert system_kwargs(config)["cache"].run_dir != system_kwargs(config)["cache"].run_dir


def test_nvml_pressure_source_with_device() -> None:
    kw = system_kwargs(parse_config({"pressure": {"source": "nvml", "device": 1, "interval_s": 2}}))
    assert isinstance(kw["pressure"]["source"], GpuMemorySource)
    assert kw["pressure"]["source"].device_index == 1
    assert kw["pressure"]["interval_s"] == 2.0
    assert kw["pressure"]["tiers"] == ("ram",)  # the memory tiers that exist (no [cache]: ram only)


@pytest.mark.parametrize(("value", "n"), [
    (0, 0), (4096, 4096), ("4096", 4096), ("512MiB", 512 << 20), ("512 mib", 512 << 20), ("1GiB", 1 << 30),
    ("2G", 2 << 30), ("64k", 64 << 10), ("1.5GB", 1_500_000_000), ("10MB", 10_000_000), ("3B", 3),
    ("0.5KiB", 512), ("1TiB", 1 << 40),
])
def test_byte_sizes(value: Any, n: int) -> None:
    assert parse_bytes(value) == n


@pytest.mark.parametrize("value", [-1, True, 1.5, "", "12XB", "1.5", "-3MiB", "MiB", [1]])
def test_bad_byte_sizes(value: Any) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_bytes(value, "cache.ram")
    assert str(ei.value).startswith("cache.ram: ")


def test_thinking_key_sources_and_the_key_is_never_shown(tmp_path: Path) -> None:
    secret = "correct horse battery staple"
    (tmp_path / "k").write_text(secret + "\n")
    for node, env in (({"thinking_key": secret}, {}),
                      ({"thinking_key_file": str(tmp_path / "k")}, {}),
                      ({"thinking_key_env": "LA_KEY"}, {"LA_KEY": secret})):
        config = parse_config({"node": node}, env=env)
        assert config.node.thinking_key is not None
        assert config.node.thinking_key.reveal() == secret.encode()
        kw = system_kwargs(config)
        for text in (repr(config), str(config), repr(kw)):
            assert secret not in text
    assert error_of({"node": {"thinking_key_env": "LA_NOPE"}}, env={}) == (
        "node.thinking_key_env: the environment variable LA_NOPE is not set or empty")
    assert error_of({"node": {"thinking_key": "a", "thinking_key_file": "/k"}}).startswith(
        "node.thinking_key_file: give only one of")
    assert error_of({"node": {"thinking_key_file": str(tmp_path / "none")}}).startswith(
        "node.thinking_key_file: cannot read")
    (tmp_path / "empty").write_text("\n")
    assert error_of({"node": {"thinking_key_file": str(tmp_path / "empty")}}).endswith("is empty")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\nadmin_port = 1\n")
    with pytest.raises(ConfigError) as ei:
        load_config(bad)
    assert str(ei.value).startswith("not valid TOML: ") and "\n" not in str(ei.value)


@pytest.mark.parametrize("key,value", [("max_pending", -1), ("max_pending", "8"), ("on_full", "drop"),
                                       ("decode_budget_ms", -5), ("decode_budget_ms", 1.5)])
def test_admission_limits_are_checked(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config({"models": [{"id": "s", "backend": "stub", key: value}]})
    assert ei.value.key == f"models[0].{key}"


def test_stub_models_need_no_file() -> None:
    config = parse_config({"models": [{"id": "s", "backend": "stub", "stub": {"n_seq_max": 2, "step_delay_s": 0}}]})
    kw = load_model_kwargs(config.models[0])
    assert kw["backend"] == "stub" and kw["stub"] == {"n_seq_max": 2, "step_delay_s": 0}
