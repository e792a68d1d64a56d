"""The row table owned by the meta actor.

Plain Python, no I/O and no actors, so every rule (status transitions,
quota accounting, LRU order, pins) is unit-testable.  The meta actor is
its only writer; clients hold read-only mirrors built from the deltas
the meta pushes.

Accounting rule: a tier's ``used`` counts every row charged to it,
whatever its status, from the moment space is reserved for a write
until the row is removed.  Quota decisions therefore never race with
writes in flight.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from actors.cache.messages import RowInfo


class Status(str, Enum):
    WRITING = "writing"
    AVAILABLE = "available"
    EVICTING = "evicting"


class RowTableError(ValueError):
    pass


@dataclass
class Row:
    info: RowInfo
    status: Status
    hits: int = 0
    pins: set[str] = field(default_factory=set)

    @property
    def key(self) -> bytes:
        return self.info.key

    @property
    def tier(self) -> str:
        return self.info.tier

    @property
    def size(self) -> int:
        return self.info.size


class CacheIndex:
    """Rows by key, per-tier byte accounting and LRU, pins by owner.

    ``quotas`` maps tier name to bytes, or None for a tier whose quota is
    enforced elsewhere (``ram``: by each owning process).
    """

    def __init__(self, quotas: Mapping[str, int | None]) -> None:
        self.quotas: dict[str, int | None] = dict(quotas)
        self._rows: dict[bytes, Row] = {}
        self._lru: dict[str, OrderedDict[bytes, None]] = {t: OrderedDict() for t in self.quotas}
        self._used: dict[str, int] = dict.fromkeys(self.quotas, 0)
        self._count: dict[str, int] = dict.fromkeys(self.quotas, 0)

    # -- queries ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: bytes) -> bool:
        return key in self._rows

    def get(self, key: bytes) -> Row | None:
        return self._rows.get(key)

    def rows(self) -> list[Row]:
        return list(self._rows.values())

    def available(self) -> list[Row]:
        return [r for r in self._rows.values() if r.status is Status.AVAILABLE]

    def used(self, tier: str) -> int:
        return self._used.get(tier, 0)

    def count(self, tier: str) -> int:
        return self._count.get(tier, 0)

    def lru_order(self, tier: str) -> list[bytes]:
        """Least recently used first."""
        return list(self._lru.get(tier, ()))

    # -- transitions -----------------------------------------------------------

    def _check_tier(self, tier: str) -> None:
        if tier not in self.quotas:
            raise RowTableError(f"tier {tier!r} is not configured")

    def add(self, info: RowInfo, status: Status = Status.AVAILABLE, hits: int = 0) -> Row:
        self._check_tier(info.tier)
        if info.key in self._rows:
            raise RowTableError(f"row {info.key.hex()[:16]} already indexed")
        row = Row(info, status, hits)
        self._rows[info.key] = row
        self._used[info.tier] += info.size
        self._count[info.tier] += 1
        if status is Status.AVAILABLE:
            self._lru[info.tier][info.key] = None
        return row

    def add_scanned(self, infos: Iterable[tuple[RowInfo, int]]) -> None:
        """Register rows found on disk, most-hit rows most recently used.

        Persisted hit counts thus survive a restart: a popular prefix is
        not the first thing a fresh process evicts.
        """
        for info, hits in sorted(infos, key=lambda p: (p[1], p[0].created_ns)):
            self.add(info, Status.AVAILABLE, hits)

    def make_available(self, key: bytes, info: RowInfo | None = None) -> Row:
        row = self._require(key)
        if info is not None:
            self._recharge(row, info)
        row.status = Status.AVAILABLE
        self._lru[row.tier][key] = None
        self._lru[row.tier].move_to_end(key)
        return row

    def mark_evicting(self, key: bytes) -> Row:
        row = self._require(key)
        row.status = Status.EVICTING
        self._lru[row.tier].pop(key, None)
        return row

    def move(self, key: bytes, info: RowInfo) -> Row:
        """Recharge a row to another tier (demotion); it stays unavailable
        until :meth:`make_available`."""
        row = self._require(key)
        self._lru[row.tier].pop(key, None)
        self._check_tier(info.tier)
        self._recharge(row, info)
        row.status = Status.EVICTING
        return row

    def _recharge(self, row: Row, info: RowInfo) -> None:
        self._used[row.tier] -= row.size
        self._count[row.tier] -= 1
        self._lru[row.tier].pop(row.key, None)
        row.info = info
        self._used[info.tier] += info.size
        self._count[info.tier] += 1

    def remove(self, key: bytes) -> Row | None:
        row = self._rows.pop(key, None)
        if row is None:
            return None
        self._used[row.tier] -= row.size
        self._count[row.tier] -= 1
        self._lru[row.tier].pop(key, None)
        return row

    def touch(self, key: bytes) -> Row | None:
        row = self._rows.get(key)
        if row is None or row.status is not Status.AVAILABLE:
            return None
        row.hits += 1
        self._lru[row.tier].move_to_end(key)
        return row

    # -- pins --------------------------------------------------------------------

    def pin(self, key: bytes, owner: str) -> bool:
        row = self._rows.get(key)
        if row is None:
            return False
        row.pins.add(owner)
        return True

    def unpin(self, key: bytes, owner: str) -> bool:
        row = self._rows.get(key)
        if row is None or owner not in row.pins:
            return False
        row.pins.discard(owner)
        return True

    def release_owner(self, owner: str) -> list[bytes]:
        """Drop every pin held by ``owner`` (its process went away)."""
        released = []
        for row in self._rows.values():
            if owner in row.pins:
                row.pins.discard(owner)
                released.append(row.key)
        return released

    # -- space -------------------------------------------------------------------

    def victims(
        self, tier: str, need: int, owner: str | None = None, exclude: Iterable[bytes] = ()
    ) -> list[Row] | None:
        """Least recently used, unpinned, available rows freeing >= ``need``
        bytes, or None when even all of them would not be enough."""
        if need <= 0:
            return []
        skip = set(exclude)
        chosen: list[Row] = []
        freed = 0
        for key in self._lru.get(tier, ()):
            row = self._rows[key]
            if row.pins or key in skip or (owner is not None and row.info.owner != owner):
                continue
            chosen.append(row)
            freed += row.size
            if freed >= need:
                return chosen
        return None

    def plan_space(self, tier: str, size: int, exclude: Iterable[bytes] = ()) -> list[Row] | None:
        """Rows to evict so ``size`` more bytes fit in ``tier``'s quota.

        None means the save cannot fit (bigger than the quota, or the rest
        is pinned / busy) and must be dropped.
        """
        self._check_tier(tier)
        quota = self.quotas[tier]
        if quota is None:
            return []
        if size > quota:
            return None
        return self.victims(tier, self._used[tier] + size - quota, exclude=exclude)

    def reclaimable(self, tiers: Iterable[str], n_bytes: int) -> list[Row]:
        """LRU-first unpinned rows across ``tiers`` (in the given order) adding
        up to at least ``n_bytes`` if possible, else all of them."""
        out: list[Row] = []
        freed = 0
        for tier in tiers:
            for key in self._lru.get(tier, ()):
                if freed >= n_bytes:
                    return out
                row = self._rows[key]
                if row.pins:
                    continue
                out.append(row)
                freed += row.size
        return out

    def over_quota(self, tier: str) -> int:
        quota = self.quotas.get(tier)
        return 0 if quota is None else max(self._used.get(tier, 0) - quota, 0)

    # -- introspection -------------------------------------------------------------

    def dump(self) -> list[dict[str, object]]:
        order = {t: {k: i for i, k in enumerate(lru)} for t, lru in self._lru.items()}
        return [
            {
                "key": r.key.hex(),
                "tier": r.tier,
                "status": r.status.value,
                "size": r.size,
                "n_tokens": r.info.n_tokens,
                "hits": r.hits,
                "pins": sorted(r.pins),
                "lru_rank": order.get(r.tier, {}).get(r.key),
                "location": r.info.location,
                "reason": r.info.reason,
                "has_logits": r.info.has_logits,
                "owner": r.info.owner,
            }
            for r in self._rows.values()
        ]

    def _require(self, key: bytes) -> Row:
        row = self._rows.get(key)
        if row is None:
            raise RowTableError(f"row {key.hex()[:16]} not indexed")
        return row
