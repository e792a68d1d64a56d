"""Fixtures for the actor-tree and model-engine tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.api import System
from actors.cache.config import CacheConfig
from actors.cache.service import CacheService
from actors.supervisor.runtime import alive
from tests.actors.engine_util import TEST_POLICY


def cache_config(tmp_path: Path, default_tier: str = "disk", **kw: object) -> CacheConfig:
    return CacheConfig.create(
        tmp_path / "run",
        ram=64 << 20,
        ram_file=(tmp_path / "ram_file", 64 << 20),
        disk=(tmp_path / "disk", 256 << 20),
        default_tier=default_tier,
        policy=kw.pop("policy", TEST_POLICY),
        fsync=False,
        **kw,
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[CacheService]:
    """A synchronous in-process cache (writers run inline)."""
    svc = CacheService(cache_config(tmp_path), writers=0)
    try:
        yield svc
    finally:
        svc.close()


@contextlib.contextmanager
def running_system(path: Path, thinking_key: bytes | None = None, **cache_kw: Any) -> Iterator[System]:
    """A whole tree on its own free port; stopped in ``finally`` and checked for leftovers."""
    system = System(cache=cache_config(path, **cache_kw), thinking_key=thinking_key)
    pids = set(system.pids())
    try:
        yield system
    finally:
        pids |= set(system.pids())
        system.close()  # raises LeftoverProcesses if anything of the tree survived
        left = alive(pids)
        assert not left, f"processes left behind: {left}"


@pytest.fixture(scope="module")
def stub_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("stubsys")) as system:
        system.load_model("stub", backend="stub", stub={"n_seq_max": 4, "n_batch": 64, "step_delay_s": 0.002})
        yield system
