"""Per-model observability readable from any process without a message.

A router probing load must not queue behind the decode it is probing, so
each model actor writes a fixed-size record into a memory-mapped file
(tmpfs) at every transition, and any process, another shell included,
reads it with no actor round trip.  One file per actor system, named by
its admin port (``obs_path(port)``).

Records use a sequence lock: the writer bumps a counter to odd, writes,
bumps it to even; a reader retries until it sees the same even value
before and after copying the record.  The model supervisor claims and
releases slots (one per loaded model id, kept across restarts); the
model actor process writes the live fields.  A record whose writer
process is gone reads as phase ``down``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import time
from dataclasses import dataclass

from actors.cache.config import default_shm_root

MAGIC = b"LAOBS001"
_HEADER = struct.Struct("<8sII48x")  # magic, version, n_slots -> 64 bytes
_SLOT = struct.Struct("<IiBBBxIIIIQ64s")  # seq, pid, phase, hit, used, restarts, pending, depth, prefix, ns, id
SLOT_SIZE = 128
DEFAULT_SLOTS = 64

PHASES = ("idle", "prefilling", "generating", "loading", "down", "stopping")
HIT_KINDS = ("none", "exact", "partial", "cold", "sticky", "continuation")


def obs_path(port: int) -> str:
    return os.path.join(default_shm_root(), f"obs-{port}.tbl")


@dataclass(frozen=True)
class ObsRecord:
    model_id: str
    pid: int
    phase: str
    pending_len: int
    queue_depth: int
    last_cache_hit: dict[str, object] | None
    restarts: int
    updated_ns: int


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (dead, not yet reaped by its parent) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


class ObsTable:
    """The mapped file.  ``create=True`` makes (or resets) it; otherwise it must exist."""

    def __init__(self, path: str, create: bool = False, n_slots: int = DEFAULT_SLOTS) -> None:
        self.path = path
        size = _HEADER.size + n_slots * SLOT_SIZE
        if create:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.ftruncate(fd, size)
                self._mm = mmap.mmap(fd, size)
            finally:
                os.close(fd)
            self._mm[: _HEADER.size] = _HEADER.pack(MAGIC, 1, n_slots)
        else:
            fd = os.open(path, os.O_RDWR)
            try:
                self._mm = mmap.mmap(fd, 0)
            finally:
                os.close(fd)
            magic, _version, n = _HEADER.unpack_from(self._mm, 0)
            if magic != MAGIC:
                self._mm.close()
                raise ValueError(f"{path}: not an observability table")
            n_slots = n
        self.n_slots = n_slots

    def _off(self, slot: int) -> int:
        if not 0 <= slot < self.n_slots:
            raise IndexError(f"slot {slot} out of range")
        return _HEADER.size + slot * SLOT_SIZE

    def _raw(self, slot: int) -> tuple:
        off = self._off(slot)
        for _ in range(1000):
            s1 = struct.unpack_from("<I", self._mm, off)[0]
            if s1 & 1:
                continue
            rec = _SLOT.unpack_from(self._mm, off)
            if rec[0] == s1:
                return rec
        return _SLOT.unpack_from(self._mm, off)

    def _write(self, slot: int, **fields: object) -> None:
        off = self._off(slot)
        rec = list(_SLOT.unpack_from(self._mm, off))
        seq = rec[0]
        struct.pack_into("<I", self._mm, off, (seq + 1) & 0xFFFFFFFF | 1)
        names = ("seq", "pid", "phase", "hit", "used", "restarts", "pending", "depth", "prefix", "ns", "id")
        for k, v in fields.items():
            rec[names.index(k)] = v
        rec[0] = ((seq | 1) + 1) & 0xFFFFFFFF
        rec[9] = time.time_ns()
        body = _SLOT.pack(*rec)
        self._mm[off + 4 : off + _SLOT.size] = body[4:]
        struct.pack_into("<I", self._mm, off, rec[0])

    # -- supervisor side ---------------------------------------------------------

    def claim(self, model_id: str) -> int:
        """Slot for ``model_id`` (the same one again if it already has one)."""
        raw_id = model_id.encode()[:64]
        free = None
        for slot in range(self.n_slots):
            rec = self._raw(slot)
            if rec[4] and rec[10].rstrip(b"\0") == raw_id:
                return slot
            if not rec[4] and free is None:
                free = slot
        if free is None:
            raise RuntimeError(f"observability table full ({self.n_slots} models)")
        self._write(free, pid=0, phase=PHASES.index("loading"), hit=0, used=1, restarts=0, pending=0, depth=0,
                    prefix=0, id=raw_id)
        return free

    def release(self, slot: int) -> None:
        self._write(slot, used=0, pid=0, phase=PHASES.index("down"), pending=0, depth=0, id=b"")

    # -- model side ------------------------------------------------------------------

    def update(self, slot: int, *, pid: int | None = None, phase: str | None = None, pending_len: int | None = None,
               queue_depth: int | None = None, hit: str | None = None, prefix_len: int | None = None,
               restarts: int | None = None) -> None:
        fields: dict[str, object] = {}
        if pid is not None:
            fields["pid"] = pid
        if phase is not None:
            fields["phase"] = PHASES.index(phase)
        if pending_len is not None:
            fields["pending"] = pending_len
        if queue_depth is not None:
            fields["depth"] = queue_depth
        if hit is not None:
            fields["hit"] = HIT_KINDS.index(hit)
        if prefix_len is not None:
            fields["prefix"] = prefix_len
        if restarts is not None:
            fields["restarts"] = restarts
        self._write(slot, **fields)

    # -- readers -----------------------------------------------------------------------

    def _record(self, rec: tuple) -> ObsRecord:
        _seq, pid, phase, hit, _used, restarts, pending, depth, prefix, ns, raw_id = rec
        name = PHASES[phase] if phase < len(PHASES) else "idle"
        if name not in ("loading", "down") and not _pid_alive(pid):
            name, pending, depth = "down", 0, 0
        last = None if hit == 0 else {"kind": HIT_KINDS[hit] if hit < len(HIT_KINDS) else "none",
                                      "prefix_len": prefix}
        return ObsRecord(raw_id.rstrip(b"\0").decode("utf-8", "replace"), pid, name, pending, depth, last,
                         restarts, ns)

    def read(self, model_id: str) -> ObsRecord | None:
        raw_id = model_id.encode()[:64]
        for slot in range(self.n_slots):
            rec = self._raw(slot)
            if rec[4] and rec[10].rstrip(b"\0") == raw_id:
                return self._record(rec)
        return None

    def has(self, model_id: str) -> bool:
        """Whether a slot holds ``model_id`` (its id field only: no record, no liveness check)."""
        raw_id = model_id.encode()[:64]
        return any(rec[4] and rec[10].rstrip(b"\0") == raw_id for rec in map(self._raw, range(self.n_slots)))

    def read_all(self) -> list[ObsRecord]:
        return [self._record(rec) for rec in (self._raw(s) for s in range(self.n_slots)) if rec[4]]

    def global_queue_depth(self) -> int:
        return sum(r.queue_depth for r in self.read_all())

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self._mm.close()


def open_table(port: int) -> ObsTable:
    """Open a running system's table (read side), e.g. from another shell."""
    return ObsTable(obs_path(port))
