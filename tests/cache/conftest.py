from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors.cache.config import CacheConfig
from actors.cache.service import CacheService


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., CacheConfig]:
    """Config with every tier under tmp_path; quotas in bytes.

    Write-behind is off unless a test asks for it: these tests pin down what
    each tier does on its own, and a writer thread copying ram rows to
    ram_file meanwhile would make their listings depend on its timing.
    """

    def make(
        ram: int | None = 1 << 20,
        ram_file: int | None = 1 << 20,
        disk: int | None = 1 << 24,
        default_tier: str = "disk",
        run: str = "run",
        **kw: object,
    ) -> CacheConfig:
        kw.setdefault("write_behind", False)
        return CacheConfig.create(
            tmp_path / run,
            ram=ram,
            ram_file=(tmp_path / "ram_file", ram_file) if ram_file is not None else None,
            disk=(tmp_path / "disk", disk) if disk is not None else None,
            default_tier=default_tier,
            **kw,
        )

    return make


@pytest.fixture
def service(make_config: Callable[..., CacheConfig]) -> Iterator[Callable[..., CacheService]]:
    """Factory for synchronous (writers=0) services, all closed at teardown."""
    made: list[CacheService] = []

    def make(config: CacheConfig | None = None, writers: int = 0, **kw: object) -> CacheService:
        svc = CacheService(config or make_config(**kw), writers=writers)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()
