"""Loading, model facts, option validation and lifetimes on the real model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors.model.errors import LoadError, OptionError, ReleasedError, Status
from actors.model.llama import Decode, Model, default_model_path, native, type_name, vram_info
from actors.model.options import KV_TYPES
from tests.native.fixtures import write_unknown_arch


def test_model_facts(model: Model) -> None:
    info = model.info
    assert info.n_vocab == 49152
    assert info.n_layer == 30
    assert info.n_ctx_train == 8192
    assert info.n_embd == 576
    assert info.has_chat_template
    assert 90_000_000 < info.size_bytes < 100_000_000
    assert model.meta("general.architecture") == "llama"
    assert model.meta("no.such.key") is None


def test_default_model_path_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLAMA_ACTORS_MODEL", str(tmp_path / "x.gguf"))
    assert default_model_path() == tmp_path / "x.gguf"


def test_load_and_close_is_idempotent(model_path: Path) -> None:
    m = Model(model_path)
    assert not m.closed
    m.close()
    m.close()
    assert m.closed
    with pytest.raises(ReleasedError) as e:
        m.tokenize("hello")
    assert e.value.reason == "released"


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as e:
        Model(tmp_path / "nope.gguf")
    assert e.value.reason == "not_found"


def test_random_bytes_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "random.gguf"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(LoadError) as e:
        Model(bad)
    assert e.value.reason == "malformed_gguf"


def test_truncated_header(tmp_path: Path, model_path: Path) -> None:
    bad = tmp_path / "trunc_header.gguf"
    with open(model_path, "rb") as f:
        bad.write_bytes(f.read(2000))
    with pytest.raises(LoadError) as e:
        Model(bad)
    assert e.value.reason == "malformed_gguf"


def test_truncated_tensor_data(tmp_path: Path, model_path: Path) -> None:
    bad = tmp_path / "trunc_data.gguf"
    with open(model_path, "rb") as f:
        bad.write_bytes(f.read(model_path.stat().st_size // 2))
    with pytest.raises(LoadError) as e:
        Model(bad)
    assert e.value.reason in ("malformed_gguf", "load_failed")


def test_unknown_architecture(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as e:
        Model(write_unknown_arch(tmp_path / "arch.gguf"))
    assert e.value.reason == "load_failed"
    assert "no-such-arch" in e.value.detail


def test_nul_byte_in_path() -> None:
    with pytest.raises(OptionError) as e:
        Model("/tmp/a\x00b.gguf")
    assert e.value.key == "path"


@pytest.mark.parametrize(
    ("opts", "key"),
    [
        ({"n_gpu_layer": 1}, "n_gpu_layer"),
        ({"split_mode": "diagonal"}, "split_mode"),
        ({"tensor_split": [1.0] * 17}, "tensor_split"),
        ({"tensor_split": ["a"]}, "tensor_split"),
        ({"use_mmap": "yes"}, "use_mmap"),
        ({"main_gpu": -1}, "main_gpu"),
        ({"vocab_only": 1}, "vocab_only"),
    ],
)
def test_bad_model_options_rejected_before_load(opts: dict, key: str, tmp_path: Path) -> None:
    # The path does not exist: an OptionError proves nothing was loaded first.
    with pytest.raises(OptionError) as e:
        Model(tmp_path / "missing.gguf", **opts)
    assert e.value.key == key
    assert e.value.reason == "bad_option"


@pytest.mark.parametrize(
    ("opts", "key"),
    [
        ({"n_ctxx": 10}, "n_ctxx"),
        ({"n_batch": 0}, "n_batch"),
        ({"n_ubatch": 1024, "n_batch": 512}, "n_ubatch"),
        ({"flash_attn": "maybe"}, "flash_attn"),
        ({"type_k": "q3_k"}, "type_k"),
        ({"type_v": 1}, "type_v"),
        ({"n_seq_max": 300}, "n_seq_max"),
        ({"embeddings": "on"}, "embeddings"),
    ],
)
def test_bad_context_options(model: Model, opts: dict, key: str) -> None:
    with pytest.raises(OptionError) as e:
        model.new_context(**opts)
    assert e.value.key == key


def test_every_documented_option_loads(model_path: Path) -> None:
    with Model(model_path, n_gpu_layers=0, main_gpu=0, split_mode="none", tensor_split=[1.0], use_mmap=False,
               use_mlock=False) as m, m.new_context(n_ctx=256, n_batch=64, n_ubatch=32, n_seq_max=2, n_threads=1,
                                                   n_threads_batch=2, embeddings=False, offload_kqv=False,
                                                   flash_attn=False, type_k="q8_0", type_v="f16") as c:
        assert c.info.n_batch == 64
        assert c.info.n_ubatch == 32
        assert c.info.n_seq_max == 2
        assert c.info.n_threads == 1
        s = m.sampler()
        assert len(c.generate(0, m.tokenize("Hello"), s, 4)) == 4


def test_vocab_only_model_tokenizes_but_has_no_context(model_path: Path) -> None:
    with Model(model_path, vocab_only=True) as m:
        assert m.tokenize("hi", add_special=False)
        with pytest.raises(Exception) as e:
            m.new_context()
        assert getattr(e.value, "reason", "") == "bad_arg"


def test_kv_type_ids_match_ggml() -> None:
    for name, gid in KV_TYPES.items():
        assert type_name(gid) == name


def test_vram_info_without_gpu() -> None:
    v = vram_info()
    if v.available:  # a CUDA build on a GPU machine
        assert v.total_b >= v.free_b > 0
    else:
        assert v.reason == "no_gpu"


def test_closing_model_while_context_lives(model_path: Path) -> None:
    m = Model(model_path)
    c = m.new_context(n_ctx=256)
    s = m.sampler()
    m.close()
    # The context keeps the weights alive until it is closed itself.
    out = c.generate(0, [1, 504, 3575], s, 3)
    assert len(out) == 3
    with pytest.raises(ReleasedError):
        m.new_context()
    with pytest.raises(ReleasedError):
        m.sampler()
    c.close()
    s.close()
    with pytest.raises(ReleasedError):
        c.prefill(0, [1])
    with pytest.raises(ReleasedError):
        c.step([Decode(0, s)])


def test_status_names_match_the_shim() -> None:
    """errors.Status names every code the compiled shim exports, with the same value, and nothing else."""
    ffi, lib = native()
    exported = {name: value for value, name in ffi.typeof("la_status").elements.items()}
    assert {m.name: m.value for m in Status} == exported
    assert all(getattr(lib, m.name) == m.value for m in Status)
    assert not hasattr(lib, "la_prefill") and not hasattr(lib, "la_decode_one")  # one decode path: la_step


def _spin_count_seen_by_libgomp(preset: str | None) -> str:
    """GOMP_SPINCOUNT in a fresh process once the shim (and with it libgomp) is loaded."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if preset is not None:
        env["GOMP_SPINCOUNT"] = preset
    code = "import os; from actors.model.native import native; native(); print(os.environ['GOMP_SPINCOUNT'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_idle_llama_workers_stop_spinning_soon_unless_the_environment_says_otherwise() -> None:
    from actors.model import native as native_module

    # libgomp's own default kept a model's workers runnable ~9 ms after each request (actors/model/native.py)
    assert int(_spin_count_seen_by_libgomp(None)) == int(native_module.GOMP_SPINCOUNT) < 300_000
    assert _spin_count_seen_by_libgomp("300000") == "300000"  # a user's choice is kept
