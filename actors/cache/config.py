"""Cache configuration shared by every process of one actor system.

The same frozen config is handed to the meta actor, the writers and each
model's ``CacheClient``; anything that must agree across processes
(block size, directories, quotas) lives here so it cannot drift.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from actors.cache.policy import PolicyError, SavePolicy
from actors.errors import ConfigError

RAM = "ram"
RAM_FILE = "ram_file"
DISK = "disk"
TIER_NAMES: tuple[str, ...] = (RAM, RAM_FILE, DISK)
FILE_TIERS: tuple[str, ...] = (RAM_FILE, DISK)


def default_shm_root() -> str:
    """Per-user root under /dev/shm (tmpfs), falling back to the temp dir."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else os.environ.get("TMPDIR", "/tmp")
    return os.path.join(base, f"llama-actors-{os.getuid()}")


@dataclass(frozen=True)
class TierConfig:
    """One tier.  ``quota_bytes`` is enforced at save time; for ``ram`` it is
    per model process, because the bytes live in that process."""

    name: str
    quota_bytes: int
    path: str | None = None


@dataclass(frozen=True)
class CacheConfig:
    run_dir: str
    tiers: tuple[TierConfig, ...] = ()
    default_tier: str = RAM
    block_size: int = 32
    writers: int = 2
    writer_queue: int = 2
    reservation_ttl_s: float = 30.0
    tmp_ttl_s: float = 120.0
    sweep_interval_s: float = 30.0
    demote_to_disk: bool = True
    write_behind: bool = True
    write_behind_queue: int = 16
    write_behind_bytes: int = 256 << 20
    write_behind_nice: int = 10
    spill_budget_s: float = 5.0
    write_behind_gate: str | None = None  # test hook: while this file exists, the writer thread waits
    fsync: bool = True
    max_candidates: int = 8
    policy: SavePolicy = field(default_factory=SavePolicy)

    @classmethod
    def create(
        cls,
        run_dir: str | os.PathLike[str] | None = None,
        *,
        ram: int | None = 1 << 30,
        ram_file: tuple[str | os.PathLike[str], int] | None = None,
        disk: tuple[str | os.PathLike[str], int] | None = None,
        default_tier: str | None = None,
        **kwargs: object,
    ) -> CacheConfig:
        """Convenience constructor: quotas in bytes, paths for file tiers."""
        tiers: list[TierConfig] = []
        if ram is not None:
            tiers.append(TierConfig(RAM, int(ram)))
        if ram_file is not None:
            tiers.append(TierConfig(RAM_FILE, int(ram_file[1]), os.fspath(ram_file[0])))
        if disk is not None:
            tiers.append(TierConfig(DISK, int(disk[1]), os.fspath(disk[0])))
        run = (
            os.fspath(run_dir)
            if run_dir is not None
            else os.path.join(default_shm_root(), f"run-{uuid.uuid4().hex[:12]}")
        )
        if default_tier is None:
            default_tier = tiers[0].name if tiers else RAM
        cfg = cls(run_dir=run, tiers=tuple(tiers), default_tier=default_tier, **kwargs)  # type: ignore[arg-type]
        return cfg.validate()

    def with_run_dir(self, run_dir: str) -> CacheConfig:
        return replace(self, run_dir=run_dir)

    def tier(self, name: str) -> TierConfig | None:
        return next((t for t in self.tiers if t.name == name), None)

    def file_tiers(self) -> tuple[TierConfig, ...]:
        return tuple(t for t in self.tiers if t.name in FILE_TIERS)

    def behind_tier(self) -> TierConfig | None:
        """Where ram rows are written behind and demoted to: the first file tier
        (``ram_file``, else ``disk``); None when there is no ram tier or no file tier."""
        files = self.file_tiers()
        return files[0] if files and self.tier(RAM) is not None else None

    @property
    def staging_dir(self) -> str:
        return os.path.join(self.run_dir, "staging")

    @property
    def counters_dir(self) -> str:
        return os.path.join(self.run_dir, "counters")

    @property
    def snapshot_dir(self) -> str:
        return os.path.join(self.run_dir, "snapshots")

    def validate(self) -> CacheConfig:
        if not self.run_dir:
            raise ConfigError("run_dir", "must be set")
        seen: set[str] = set()
        for t in self.tiers:
            if t.name not in TIER_NAMES:
                raise ConfigError("tiers", f"unknown tier {t.name!r} (known: {', '.join(TIER_NAMES)})")
            if t.name in seen:
                raise ConfigError("tiers", f"tier {t.name!r} configured twice")
            seen.add(t.name)
            if isinstance(t.quota_bytes, bool) or not isinstance(t.quota_bytes, int) or t.quota_bytes < 0:
                raise ConfigError(f"tiers.{t.name}.quota_bytes", f"must be an int >= 0, got {t.quota_bytes!r}")
            if t.name in FILE_TIERS and not t.path:
                raise ConfigError(f"tiers.{t.name}.path", "a file tier needs a directory")
            if t.name == RAM and t.path:
                raise ConfigError(f"tiers.{t.name}.path", "the ram tier has no directory")
        paths = [Path(t.path).resolve() for t in self.tiers if t.path]
        if len(set(paths)) != len(paths):
            raise ConfigError("tiers", "two tiers share one directory")
        if self.tiers and self.default_tier not in seen:
            raise ConfigError("default_tier", f"{self.default_tier!r} is not a configured tier")
        for name in ("block_size", "writers", "max_candidates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"must be an int >= 1, got {value!r}")
        if isinstance(self.writer_queue, bool) or not isinstance(self.writer_queue, int) or self.writer_queue < 0:
            raise ConfigError("writer_queue", f"must be an int >= 0, got {self.writer_queue!r}")
        if isinstance(self.write_behind_queue, bool) or not isinstance(self.write_behind_queue, int) \
                or self.write_behind_queue < 1:
            raise ConfigError("write_behind_queue", f"must be an int >= 1, got {self.write_behind_queue!r}")
        if isinstance(self.write_behind_bytes, bool) or not isinstance(self.write_behind_bytes, int) \
                or self.write_behind_bytes < 0:
            raise ConfigError("write_behind_bytes", f"must be an int >= 0, got {self.write_behind_bytes!r}")
        nice = self.write_behind_nice
        if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
            raise ConfigError("write_behind_nice", f"must be an int in 0..19, got {nice!r}")
        spill = self.spill_budget_s
        if isinstance(spill, bool) or not isinstance(spill, (int, float)) or spill < 0:
            raise ConfigError("spill_budget_s", f"must be a number >= 0, got {spill!r}")
        for name in ("reservation_ttl_s", "tmp_ttl_s", "sweep_interval_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(name, f"must be > 0, got {value!r}")
        try:
            self.policy.validate()
        except PolicyError as exc:
            raise ConfigError(f"policy.{exc.field}", exc.reason) from None
        return self
