"""Operator API for a cache running inside an actor system.

Counters are read straight from the counter files (no actor involved, so
a router can poll them at will); everything else is one request/reply
with the meta actor through :meth:`SystemHandle.ask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.cache import messages as m
from actors.cache.actors import CacheMetaActor, PressureActor
from actors.cache.config import CacheConfig
from actors.cache.counters import read_counters
from actors.cache.pressure import PressureSource
from actors.system import SystemHandle


class CacheAdminError(RuntimeError):
    pass


def _check(reply: Any, expected: type) -> Any:
    if isinstance(reply, m.ErrorReply):
        raise CacheAdminError(str(reply))
    if not isinstance(reply, expected):
        raise CacheAdminError(f"unexpected reply {type(reply).__name__}")
    return reply


class CacheAdmin:
    def __init__(self, system: SystemHandle, meta: Any, config: CacheConfig, timeout: float = 30.0) -> None:
        self.system = system
        self.meta = meta
        self.config = config
        self.timeout = timeout
        self.ready: m.MetaReady | None = None

    @classmethod
    def start(cls, system: SystemHandle, config: CacheConfig, timeout: float = 30.0) -> CacheAdmin:
        """Create the meta actor (and its writers) and wait for its startup scan."""
        meta = system.create(CacheMetaActor)
        admin = cls(system, meta, config, timeout)
        admin.ready = _check(system.ask(meta, m.MetaStart(config), timeout), m.MetaReady)
        return admin

    def get_counters(self) -> dict[str, int]:
        return read_counters(self.config.counters_dir)

    def dump(self) -> list[dict[str, object]]:
        return list(_check(self.system.ask(self.meta, m.Dump(), self.timeout), m.DumpReply).rows)

    def evict_bytes(self, n_bytes: int, tiers: Sequence[str]) -> m.Evicted:
        return _check(self.system.ask(self.meta, m.EvictBytes(n_bytes, tuple(tiers)), self.timeout), m.Evicted)

    def gc(self) -> dict[str, int]:
        return _check(self.system.ask(self.meta, m.Gc(), self.timeout), m.GcDone).stats

    def wait_idle(self, timeout: float | None = None) -> None:
        _check(self.system.ask(self.meta, m.WaitIdle(), timeout or self.timeout), m.Idle)

    def start_pressure(
        self,
        source: PressureSource,
        high: float = 0.85,
        low: float = 0.75,
        interval_s: float = 5.0,
        tiers: Sequence[str] = ("ram", "ram_file"),
    ) -> Any:
        """Start a pressure poller (off unless called); returns its address."""
        addr = self.system.create(PressureActor)
        msg = m.PressureStart(self.meta, source, high, low, interval_s, tuple(tiers))
        _check(self.system.ask(addr, msg, self.timeout), m.PressureReport)
        return addr

    def pressure_status(self, addr: Any) -> m.PressureReport:
        return _check(self.system.ask(addr, m.PressureStatus(), self.timeout), m.PressureReport)
