"""Embeddings and LoRA adapters on the real model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from actors.model.errors import LoadError, ReleasedError, StateError
from actors.model.llama import Model
from tests.native.fixtures import write_lora


def cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings(model: Model) -> None:
    with model.new_context(n_ctx=512, embeddings=True, pooling="mean") as c:
        cat1 = c.embed(model.tokenize("The cat sat on the mat."))
        cat2 = c.embed(model.tokenize("A cat was sitting on the mat."))
        other = c.embed(model.tokenize("Quarterly revenue grew by eight percent."))
        again = c.embed(model.tokenize("The cat sat on the mat."))
    assert len(cat1) == model.info.n_embd
    assert cat1 == again
    assert cat1 != other
    assert cos(cat1, cat2) > cos(cat1, other)


def test_embed_needs_embeddings_context(model: Model) -> None:
    with model.new_context(n_ctx=256) as c, pytest.raises(StateError) as e:
        c.embed([1, 2, 3])
    assert e.value.reason == "not_embeddings"


def test_lora_changes_logits_and_removal_restores(model: Model, tmp_path: Path) -> None:
    path = write_lora(tmp_path / "tiny-lora.gguf")
    p = model.tokenize("The capital of France is")
    with model.new_context(n_ctx=256) as c:
        c.prefill(0, p)
        base = c.get_logits(0)
        adapter = model.load_adapter(path)
        c.seq_clear(0)
        c.set_adapters([(adapter, 1.0)])
        c.prefill(0, p)
        with_lora = c.get_logits(0)
        c.seq_clear(0)
        c.set_adapters([])
        c.prefill(0, p)
        restored = c.get_logits(0)
        adapter.close()
    assert with_lora != base
    assert restored == base
    assert len(adapter.sha256) == 32


def test_adapter_closed_while_attached_stays_valid(model: Model, tmp_path: Path) -> None:
    path = write_lora(tmp_path / "tiny-lora.gguf")
    with model.new_context(n_ctx=256) as c:
        a = model.load_adapter(path)
        c.set_adapters([(a, 0.5)])
        a.close()  # deferred natively: the context still applies it
        c.prefill(0, [1, 504, 3575])
        assert c.has_logits(0)
        with pytest.raises(ReleasedError):
            c.set_adapters([(a, 1.0)])


def test_bad_adapter_file(model: Model, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 100)
    with pytest.raises(LoadError) as e:
        model.load_adapter(bad)
    assert e.value.reason == "adapter_failed"
    with pytest.raises(LoadError):
        model.load_adapter(tmp_path / "missing.gguf")
