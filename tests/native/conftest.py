"""Fixtures for the native binding tests: one real model per session, small contexts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.model.llama import Context, Model, default_model_path

PROMPT = "The capital of France is"


@pytest.fixture(scope="session")
def model_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
def model(model_path: Path) -> Iterator[Model]:
    m = Model(model_path)
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def ctx(model: Model) -> Iterator[Context]:
    c = model.new_context(n_ctx=512, n_batch=256)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def greedy(model: Model) -> Iterator:
    s = model.sampler()
    try:
        yield s
    finally:
        s.close()
