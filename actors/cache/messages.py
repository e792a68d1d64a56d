"""Messages exchanged by the cache actors and ``CacheClient``.

Small frozen dataclasses so they pickle cheaply across thespian
processes.  None of them ever carries KV bytes: blobs move between
processes as files (staging in tmpfs, tier files), and messages carry
paths and row descriptions only.  Requests from outside the actor
system carry a ``req_id`` that the reply echoes, because
``ActorSystem.ask`` returns whatever message reaches the asking
context first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from actors.cache.config import CacheConfig
from actors.errors import ErrorReply

__all__ = ["ErrorReply"]  # the one error reply (actors.errors), re-exported: every actor answers with it


@dataclass(frozen=True)
class RowInfo:
    """What a lookup needs to know about a row, without its tokens or bytes.

    ``blocks`` is the concatenation of the row's chained block hashes
    (32 bytes per full block), so every holder of the description can
    maintain a prefix index without reading the file.  ``location`` is
    the file path for file tiers and the owning client id for ``ram``.
    """

    key: bytes
    ns: bytes
    tier: str
    location: str
    n_tokens: int
    size: int
    has_logits: bool
    reason: int
    blocks: bytes
    created_ns: int
    owner: str | None = None


def row_info_to_list(info: RowInfo) -> list[object]:
    """Compact msgpack-able form, used for file snapshots of the index."""
    return [
        info.key,
        info.ns,
        info.tier,
        info.location,
        info.n_tokens,
        info.size,
        info.has_logits,
        info.reason,
        info.blocks,
        info.created_ns,
        info.owner,
    ]


def row_info_from_list(items: Sequence[Any]) -> RowInfo:
    return RowInfo(*items)


# --- client -> meta -------------------------------------------------------


@dataclass(frozen=True)
class Subscribe:
    client_id: str
    pid: int


@dataclass(frozen=True)
class Unsubscribe:
    client_id: str


@dataclass(frozen=True)
class SaveStaged:
    """A complete .kvc file waiting in the staging directory."""

    info: RowInfo
    staged_path: str
    client_id: str


@dataclass(frozen=True)
class RamRowsChanged:
    """The owner's ram tier stored ``added`` and dropped ``removed``.

    Sent as one message per change so the meta never sees a row added
    after its own eviction.
    """

    client_id: str
    added: tuple[RowInfo, ...] = ()
    removed: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class RowWritten:
    """A model process's write-behind thread published a ram row to a file tier.

    ``info`` describes the file copy.  The meta charges it to the tier (evicting
    for room, or deleting the copy if it cannot fit) and lists it for every
    mirror; the owner keeps serving its ram copy.  ``demotion``: the ram copy
    was already evicted when it was written.
    """

    info: RowInfo
    client_id: str
    demotion: bool = False


@dataclass(frozen=True)
class Touch:
    key: bytes


@dataclass(frozen=True)
class RowFailed:
    """A load found the row missing or failing its checks; the meta
    re-verifies before deleting, so one confused client cannot wipe rows."""

    key: bytes


@dataclass(frozen=True)
class Pin:
    key: bytes
    owner: str


@dataclass(frozen=True)
class Unpin:
    key: bytes
    owner: str


# --- meta -> client -------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Initial mirror contents: inline rows, or a msgpack file for big indexes."""

    rows: tuple[RowInfo, ...] = ()
    path: str | None = None


@dataclass(frozen=True)
class IndexDelta:
    added: tuple[RowInfo, ...] = ()
    removed: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class DropRamRows:
    """The meta evicted these ram rows (pressure or evict_bytes)."""

    keys: tuple[bytes, ...]


# --- meta <-> writers -----------------------------------------------------


@dataclass(frozen=True)
class Demotion:
    key: bytes
    src_path: str
    directory: str


@dataclass(frozen=True)
class WriteJob:
    job_id: int
    tier: str
    directory: str
    key: bytes | None = None
    staged_path: str | None = None
    demotions: tuple[Demotion, ...] = ()
    ttl_s: float = 30.0
    fsync: bool = True


@dataclass(frozen=True)
class DemotionDone:
    key: bytes
    outcome: str
    path: str
    size: int


@dataclass(frozen=True)
class WriteDone:
    job_id: int
    key: bytes | None
    outcome: str
    path: str
    size: int
    detail: str = ""
    elapsed_ns: int = 0
    demoted: tuple[DemotionDone, ...] = ()


@dataclass(frozen=True)
class WriterStart:
    config: CacheConfig


# --- operator API (request/reply with req_id) ------------------------------


@dataclass(frozen=True)
class MetaStart:
    config: CacheConfig
    req_id: str = ""


@dataclass(frozen=True)
class MetaReady:
    req_id: str
    run_dir: str
    rows: int
    corrupt_files: int
    tmp_removed: int


@dataclass(frozen=True)
class EvictBytes:
    n_bytes: int
    tiers: tuple[str, ...]
    req_id: str = ""


@dataclass(frozen=True)
class Evicted:
    req_id: str
    freed: int
    keys: tuple[bytes, ...]


@dataclass(frozen=True)
class Gc:
    req_id: str = ""


@dataclass(frozen=True)
class GcDone:
    req_id: str
    stats: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Dump:
    req_id: str = ""


@dataclass(frozen=True)
class DumpReply:
    req_id: str
    rows: tuple[dict[str, object], ...]


@dataclass(frozen=True)
class GetCounters:
    req_id: str = ""


@dataclass(frozen=True)
class CountersReply:
    req_id: str
    counters: dict[str, int]


@dataclass(frozen=True)
class WaitIdle:
    """Reply once no write job is running or queued (tests, shutdown)."""

    req_id: str = ""


@dataclass(frozen=True)
class Idle:
    req_id: str


@dataclass(frozen=True)
class SweepTick:
    """Self-addressed timer payload for periodic sweeps."""


# --- memory pressure -------------------------------------------------------


@dataclass(frozen=True)
class PressureStart:
    meta: object  # ActorAddress of the meta actor
    source: object  # a PressureSource (picklable)
    high: float
    low: float
    interval_s: float
    tiers: tuple[str, ...]
    req_id: str = ""


@dataclass(frozen=True)
class PressureStatus:
    req_id: str = ""


@dataclass(frozen=True)
class PressureReport:
    req_id: str
    available: bool
    fraction: float | None
    evictions_requested: int
    bytes_requested: int
    last_error: str = ""
    polls: int = 0  # readings the poller has taken so far


# --- CacheClientHost (reference embedding, tests) -------------------------------


@dataclass(frozen=True)
class ClientStart:
    config: CacheConfig
    meta: object  # ActorAddress of the meta actor
    req_id: str = ""


@dataclass(frozen=True)
class HostCall:
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    req_id: str = ""


@dataclass(frozen=True)
class HostReply:
    req_id: str
    value: Any
    error: str = ""
