"""Cache counters readable cheaply from any process.

Choice: one small memory-mapped file of u64 slots *per writing process*
under ``<run_dir>/counters`` (tmpfs by default), plus one gauge file
written only by the meta actor.

* Each file has exactly one writer, so increments need no cross-process
  lock and are never lost (a shared slot bumped from several processes
  with read-modify-write would drop counts).
* A reader sums the counter files and reads the gauge file: a handful of
  ``read`` calls on tmpfs, no actor round trip, usable from a router or a
  shell while the system is busy.
* Files of exited processes are kept, so counters stay cumulative across
  model restarts.  Gauges (bytes and rows per tier) are absolute values
  and have a single writer, the meta actor, which keeps them true.

File layout: ``magic (8) | n_slots u32 | reserved u32 | n_slots x u64``
(little-endian).  Slot order is append-only so older files stay readable.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

MAGIC = b"LACTRS\x00\x01"
_HEAD = struct.Struct("<8sII")
_SLOT = struct.Struct("<Q")
U64_MAX = (1 << 64) - 1

COUNTERS: tuple[str, ...] = (
    "hits_exact",
    "hits_resume",
    "hits_longest_prefix",
    "misses",
    "saves_cold",
    "saves_continued",
    "saves_finish",
    "saves_evict",
    "saves_shutdown",
    "saves_dropped",
    "evictions",
    "corrupt_files",
    "duplicate_dropped",
    "demotions",
    "load_failures",
    "tmp_removed",
    "reservations_removed",
    "lookup_ns_total",
    "lookup_count",
    "lookup_probes",
    "load_ns_total",
    "load_count",
    "load_bytes",
    "pack_ns_total",
    "pack_count",
    "pack_bytes",
    "write_ns_total",
    "write_count",
    "write_behind_queued",
    "write_behind_written",
    "write_behind_skipped",
    "write_behind_deduped",
    "write_behind_failed",
    "write_behind_bytes",
    "write_behind_ns_total",
    "spilled",
    "spill_skipped",
)

GAUGES: tuple[str, ...] = (
    "bytes_ram",
    "bytes_ram_file",
    "bytes_disk",
    "rows_ram",
    "rows_ram_file",
    "rows_disk",
    "writer_busy",
    "writer_queued",
    "writer_capacity",
)

GAUGE_FILE = "gauges.ctr"


class SlotFile:
    """A fixed array of u64 slots in an mmap'ed file with a single writer."""

    def __init__(self, path: str, names: Sequence[str]) -> None:
        self.path = path
        self.names = tuple(names)
        self._index = {n: i for i, n in enumerate(self.names)}
        size = _HEAD.size + _SLOT.size * len(self.names)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            current = os.fstat(fd).st_size
            if current != size:
                os.ftruncate(fd, size)
            self._mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        _HEAD.pack_into(self._mm, 0, MAGIC, len(self.names), 0)

    def add(self, name: str, n: int = 1) -> None:
        off = _HEAD.size + _SLOT.size * self._index[name]
        (value,) = _SLOT.unpack_from(self._mm, off)
        _SLOT.pack_into(self._mm, off, min(value + n, U64_MAX))

    def set(self, name: str, value: int) -> None:
        off = _HEAD.size + _SLOT.size * self._index[name]
        _SLOT.pack_into(self._mm, off, min(max(int(value), 0), U64_MAX))

    def get(self, name: str) -> int:
        return int(_SLOT.unpack_from(self._mm, _HEAD.size + _SLOT.size * self._index[name])[0])

    def close(self) -> None:
        if not self._mm.closed:
            self._mm.close()


class Counters:
    """This process's counter slots for one run directory.

    One instance per (directory, pid): ``for_dir`` hands the same object to
    every caller in the process and transparently opens a new file after
    a fork, so a forked actor never writes into its parent's slots.
    """

    _instances: ClassVar[dict[str, Counters]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.pid = os.getpid()
        self._lock = threading.Lock()
        name = f"p{self.pid}-{time.monotonic_ns()}.ctr"
        self._file = SlotFile(os.path.join(directory, name), COUNTERS)

    @classmethod
    def for_dir(cls, directory: str) -> Counters:
        with cls._guard:
            inst = cls._instances.get(directory)
            if inst is None or inst.pid != os.getpid():
                inst = cls(directory)
                cls._instances[directory] = inst
            return inst

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._file.add(name, n)

    def add_many(self, values: dict[str, int]) -> None:
        with self._lock:
            for name, n in values.items():
                self._file.add(name, n)

    @contextmanager
    def timed(self, prefix: str) -> Iterator[None]:
        """Accumulate ``<prefix>_ns_total`` and ``<prefix>_count`` around a block."""
        t0 = time.perf_counter_ns()
        try:
            yield
        finally:
            self.add_many({f"{prefix}_ns_total": time.perf_counter_ns() - t0, f"{prefix}_count": 1})


class Gauges:
    """Absolute values with a single writer (the meta actor)."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self._file = SlotFile(os.path.join(directory, GAUGE_FILE), GAUGES)

    def set_many(self, values: dict[str, int]) -> None:
        for name, value in values.items():
            self._file.set(name, value)

    def get(self, name: str) -> int:
        return self._file.get(name)

    def close(self) -> None:
        self._file.close()


def _read_slots(path: str) -> tuple[int, ...]:
    with open(path, "rb") as f:
        head = f.read(_HEAD.size)
        if len(head) < _HEAD.size:
            return ()
        magic, n, _ = _HEAD.unpack(head)
        if magic != MAGIC:
            return ()
        body = f.read(_SLOT.size * n)
    n = len(body) // _SLOT.size
    return struct.unpack(f"<{n}Q", body[: n * _SLOT.size])


def read_counters(directory: str) -> dict[str, int]:
    """Sum of all processes' counters plus the current gauges.

    Lock-free: a value may be read while its writer is mid-update of a
    *different* slot, never a torn single slot (aligned 8-byte stores).
    """
    out = dict.fromkeys(COUNTERS, 0)
    out.update(dict.fromkeys(GAUGES, 0))
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return out
    for name in names:
        path = os.path.join(directory, name)
        try:
            values = _read_slots(path)
        except OSError:
            continue
        if name == GAUGE_FILE:
            for gname, v in zip(GAUGES, values, strict=False):
                out[gname] = v
        elif name.endswith(".ctr"):
            for cname, v in zip(COUNTERS, values, strict=False):
                out[cname] += v
    return out


def read_gauges(directory: str) -> dict[str, int]:
    """Only the meta's gauges: one small read, used on the save path to
    see whether the writer pool is full before staging a blob."""
    try:
        values = _read_slots(os.path.join(directory, GAUGE_FILE))
    except OSError:
        values = ()
    out = dict.fromkeys(GAUGES, 0)
    out.update(zip(GAUGES, values, strict=False))
    return out
