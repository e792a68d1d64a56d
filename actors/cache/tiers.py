"""Storage tiers.

``RamTier`` keeps blobs inside the model process that produced them:
restoring from it is a pointer hand-off, and the bytes never cross a
thespian message (a pickled 10 MB message costs 0.2-0.3 s per hop).  Its
quota is per process and enforced synchronously at save time, because
that process is the only one that can actually free the memory.

``DirTier`` is a directory of ``.kvc`` files; ``ram_file`` (tmpfs) and
``disk`` are both DirTiers and differ only in where the directory is.
Any process may read a DirTier; only writers create files (through
:mod:`actors.cache.publish`) and only the meta actor deletes rows.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from actors.cache import kvc, publish
from actors.cache.key import namespace
from actors.cache.prefix import chain_blob
from actors.cache.write_policy import CopyState
from actors.private_files import make_private_dirs

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)

# --- ram --------------------------------------------------------------------


@dataclass
class RamEntry:
    key: bytes
    kv: bytes
    logits: bytes | None
    tokens: bytes
    pins: int = 0
    info: Any = None  # the RowInfo announced for it, to re-announce a kept row
    meta: Any = None  # the RowMeta it was saved with (the file header of its copy)
    copy: CopyState = CopyState.NONE  # its file copy (write-behind, demotion)
    file_info: Any = None  # the index's RowInfo of that copy, once DURABLE

    @property
    def size(self) -> int:
        return len(self.kv) + (len(self.logits) if self.logits else 0)


class RamTier:
    """LRU byte-bounded blob store local to one process."""

    def __init__(self, quota_bytes: int) -> None:
        self.quota = quota_bytes
        self.used = 0
        self._entries: OrderedDict[bytes, RamEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def keys(self) -> list[bytes]:
        """Least recently used first."""
        return list(self._entries)

    def entries(self) -> list[RamEntry]:
        """Least recently used first."""
        return list(self._entries.values())

    def put(self, entry: RamEntry) -> tuple[bool, list[RamEntry]]:
        """Store ``entry``; returns (stored, entries evicted to make room, LRU first).

        Evicts nothing when the entry cannot fit even after evicting every
        unpinned row: a save that does not fit is dropped, not allowed to
        wipe the tier for nothing.
        """
        if entry.key in self._entries:
            return False, []
        need = self.used + entry.size - self.quota
        if entry.size > self.quota:
            return False, []
        victims: list[RamEntry] = []
        if need > 0:
            freed = 0
            for e in self._entries.values():
                if e.pins:
                    continue
                victims.append(e)
                freed += e.size
                if freed >= need:
                    break
            if freed < need:
                return False, []
            for e in victims:
                self.remove(e.key)
        self._entries[entry.key] = entry
        self.used += entry.size
        return True, victims

    def get(self, key: bytes, touch: bool = True) -> RamEntry | None:
        e = self._entries.get(key)
        if e is not None and touch:
            self._entries.move_to_end(key)
        return e

    def remove(self, key: bytes, force: bool = False) -> RamEntry | None:
        e = self._entries.get(key)
        if e is None or (e.pins and not force):
            return None
        del self._entries[key]
        self.used -= e.size
        return e

    def pin(self, key: bytes) -> bool:
        e = self._entries.get(key)
        if e is None:
            return False
        e.pins += 1
        return True

    def unpin(self, key: bytes) -> bool:
        e = self._entries.get(key)
        if e is None or not e.pins:
            return False
        e.pins -= 1
        return True

    def clear(self) -> list[bytes]:
        keys = list(self._entries)
        self._entries.clear()
        self.used = 0
        return keys


# --- directories --------------------------------------------------------------


@dataclass(frozen=True)
class ScannedRow:
    info: kvc.KvcInfo
    path: str
    size: int
    blocks: bytes
    ns: bytes


@dataclass(frozen=True)
class ScanResult:
    rows: tuple[ScannedRow, ...]
    corrupt: int
    tmp_removed: int
    reservations_removed: int


class DirTier:
    def __init__(self, name: str, directory: str, quota_bytes: int) -> None:
        self.name = name
        self.directory = directory
        self.quota = quota_bytes
        make_private_dirs(directory)  # a new tier directory is 0700; rows in any tier are 0600

    def path(self, key: bytes) -> str:
        return publish.row_path(self.directory, key)

    def scan(self, block_size: int, reservation_ttl_s: float, tmp_ttl_s: float) -> ScanResult:
        """Startup scan: register valid rows, delete everything that is not.

        Light parse only (header, metadata, size), so a large tier comes up
        quickly; payload corruption is caught by the CRC on first load.  A
        file whose name does not match its metadata's key is corrupt too.
        """
        sweep = publish.sweep_dir(self.directory, reservation_ttl_s, tmp_ttl_s)
        rows: list[ScannedRow] = []
        corrupt = 0
        for entry in os.scandir(self.directory):
            key = publish.key_from_name(entry.name)
            if key is None:
                continue
            try:
                with open(entry.path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    info = kvc.read_info(f, size)
                kvc.verify_identity(info, key)
            except FileNotFoundError:
                continue
            except (OSError, kvc.KvcError):
                corrupt += 1
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                continue
            meta = info.meta
            ns = namespace(meta.fingerprint, meta.quant, meta.ctx_hash)
            rows.append(ScannedRow(info, entry.path, size, chain_blob(ns, meta.tokens, block_size), ns))
        return ScanResult(tuple(rows), corrupt + sweep.foreign_removed, sweep.tmp_removed, sweep.reservations_removed)

    def sweep(self, reservation_ttl_s: float, tmp_ttl_s: float) -> publish.SweepStats:
        return publish.sweep_dir(self.directory, reservation_ttl_s, tmp_ttl_s)

    def remove(self, key: bytes) -> bool:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            return False
        return True

    def used_on_disk(self) -> int:
        """Bytes of published rows actually present (for tests and gc)."""
        total = 0
        for entry in os.scandir(self.directory):
            if publish.key_from_name(entry.name) is not None:
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat().st_size
        return total


class LoadBuffer:
    """A reusable read buffer for disk loads.

    A fresh 47 MB buffer per load spends more time page-faulting than
    copying; reusing one prefaulted buffer makes a warm-cache load a
    single memcpy from the page cache.  Reuse is safe because the buffer
    is only recycled when no view handed out from it is still alive
    (CPython: views hold a reference to the bytearray).
    """

    def __init__(self) -> None:
        self._buf: bytearray | None = None

    def get(self, size: int) -> bytearray:
        buf = self._buf
        if buf is not None and len(buf) >= size and sys.getrefcount(buf) <= 3:
            return buf
        self._buf = bytearray(size)
        return self._buf


def _read_exact(path: str, buf: bytearray) -> memoryview:
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        view = memoryview(buf)[: size + 1] if len(buf) > size else memoryview(buf)[:size]
        done = 0
        while done < len(view):
            n = f.readinto(view[done:])
            if not n:
                break
            done += n
    return view[:done]


def _map(path: str) -> memoryview:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return memoryview(b"")
        mm = mmap.mmap(f.fileno(), size, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ)
    return memoryview(mm)


def load_file(
    path: str, expected_key: bytes | None = None, *, use_mmap: bool = False, buffer: LoadBuffer | None = None
) -> kvc.KvcRow:
    """Full parse of a row file: CRC checked, key recomputed, views returned.

    ``use_mmap`` is for tmpfs (``ram_file``): zero copy, and tmpfs has no
    I/O errors to turn into SIGBUS; our own code never truncates a
    published file (eviction unlinks, replacement renames), so a mapping
    stays valid even if the row is evicted meanwhile.  Disk rows are read
    with ``read`` into ``buffer`` (or a fresh buffer): a failing disk then
    yields EIO and a cold prefill, not a crashed model process.
    """
    for attempt in (0, 1):
        try:
            if use_mmap:
                data = _map(path)
            else:
                data = _read_exact(path, (buffer or LoadBuffer()).get(os.stat(path).st_size + 1))
            return kvc.decode(data, expected_key)
        except kvc.KvcError as exc:
            # The meta bumps the hit counter in place; a read racing that
            # 8-byte write can see a half-updated pair.  One re-read
            # settles it, real corruption fails twice.
            if attempt or exc.detail != kvc.HITS_CHECK_DETAIL:
                raise
    raise AssertionError("unreachable")


def read_tokens(path: str) -> bytes:
    """Token bytes of a row via a light parse (header + metadata only)."""
    with open(path, "rb") as f:
        return kvc.read_info(f).meta.tokens


def bump_hits(path: str, hits: int) -> bool:
    """Persist a row's hit count in place (8 bytes at a fixed offset)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return False
    try:
        os.pwrite(fd, kvc.hits_field(hits), kvc.HITS_OFFSET)
    finally:
        os.close(fd)
    return True


def file_age_s(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0
