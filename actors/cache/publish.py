"""Crash-safe publication of a row file into a tier directory.

Protocol (every step is a point where the writer may die)::

    reserve   create <key>.reserve with O_EXCL (pid, host, token); refreshed
              while a long copy runs; a stale one (dead pid or past TTL) is
              taken over
    tmp       create <key>.<token>.tmp with O_EXCL (or hard-link the staged
              file when it already lives on the same filesystem)
    fsync     the tmp file's data reaches stable storage
    check     the reservation still exists and still carries our token
              (a sweep or a competing writer may have taken it)
    link      link(tmp, <key>.kvc): atomic, never overwrites.  On EEXIST the
              existing file is fully validated: adopted if valid (our copy
              is dropped), replaced with rename(2) if not
    dir fsync the new directory entry is durable
    release   unlink tmp and reservation, then the caller announces the row

A reader only ever opens ``<key>.kvc``, which appears atomically and
only after its bytes were fsynced, so no crash leaves a torn or
half-visible row; what a crash can leave is a stray tmp file or
reservation, which :func:`sweep_dir` removes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import psutil

from actors.cache import kvc
from actors.private_files import PRIVATE_FILE_MODE

ROW_SUFFIX = ".kvc"
TMP_SUFFIX = ".tmp"
RESERVE_SUFFIX = ".reserve"
CHUNK = 8 << 20

STEPS: tuple[str, ...] = (
    "reserve",
    "tmp_open",
    "tmp_partial",
    "tmp_written",
    "tmp_fsync",
    "check",
    "link",
    "dir_fsync",
    "release",
)

Hook = Callable[[str], None]


class PublishOutcome(str, Enum):
    PUBLISHED = "published"
    ADOPTED = "adopted"  # a valid file with this key was already there
    REPLACED = "replaced"  # an invalid file with this key was replaced
    BUSY = "busy"  # another live writer holds the reservation
    LOST_RESERVATION = "lost_reservation"
    FAILED = "failed"

    @property
    def row_available(self) -> bool:
        return self in (PublishOutcome.PUBLISHED, PublishOutcome.ADOPTED, PublishOutcome.REPLACED)


@dataclass(frozen=True)
class PublishResult:
    outcome: PublishOutcome
    path: str
    size: int = 0
    detail: str = ""


def row_name(key: bytes) -> str:
    return key.hex() + ROW_SUFFIX


def row_path(directory: str, key: bytes) -> str:
    return os.path.join(directory, row_name(key))


def key_from_name(name: str) -> bytes | None:
    if not name.endswith(ROW_SUFFIX):
        return None
    stem = name[: -len(ROW_SUFFIX)]
    if len(stem) != 64:
        return None
    try:
        return bytes.fromhex(stem)
    except ValueError:
        return None


def _reserve_path(directory: str, key: bytes) -> str:
    return os.path.join(directory, key.hex() + RESERVE_SUFFIX)


def _process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


@dataclass(frozen=True)
class Reservation:
    path: str
    token: str


def _owner_alive(info: dict[str, object]) -> bool:
    if info.get("host") != socket.gethostname():
        return True  # cannot tell for another host: rely on the TTL
    pid = info.get("pid")
    if not isinstance(pid, int):
        return False
    start = _process_start(pid)
    if start is None:
        return False
    recorded = info.get("start")
    return not isinstance(recorded, (int, float)) or abs(start - recorded) < 1.0


def reservation_is_stale(path: str, ttl_s: float, now: float | None = None) -> bool:
    """A reservation is stale when its owner is gone or it outlived its TTL."""
    now = time.time() if now is None else now
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            raw = f.read(4096)
    except FileNotFoundError:
        return False
    if now - st.st_mtime > ttl_s:
        return True
    try:
        info = json.loads(raw)
    except ValueError:
        return False  # being written right now; the TTL decides later
    return not isinstance(info, dict) or not _owner_alive(info)


def _read_token(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            info = json.loads(f.read(4096))
    except (OSError, ValueError):
        return None
    return info.get("token") if isinstance(info, dict) else None


def reserve(directory: str, key: bytes, ttl_s: float) -> Reservation | None:
    """Take the key's reservation, taking over a stale one; None if a live writer holds it."""
    path = _reserve_path(directory, key)
    token = uuid.uuid4().hex
    me = os.getpid()
    body = json.dumps({"pid": me, "start": _process_start(me), "host": socket.gethostname(), "token": token}).encode()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        except FileExistsError:
            if not reservation_is_stale(path, ttl_s):
                return None
            # Two writers may both see it stale and both unlink; the later
            # one removes the earlier one's fresh file.  The "check" step
            # before link catches that: only the token on disk wins.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        try:
            os.write(fd, body)
        finally:
            os.close(fd)
        return Reservation(path, token)
    return None


def refresh(res: Reservation) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.utime(res.path)


def holds(res: Reservation) -> bool:
    return _read_token(res.path) == res.token


def release(res: Reservation) -> None:
    if holds(res):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(res.path)


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(src_fd: int, dst_fd: int, size: int, res: Reservation, hook: Hook | None, chunk: int) -> None:
    done = 0
    last_refresh = time.monotonic()
    while done < size:
        n = min(chunk, size - done)
        try:
            copied = os.copy_file_range(src_fd, dst_fd, n, done, done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            data = os.pread(src_fd, n, done)
            copied = os.pwrite(dst_fd, data, done)
        if copied <= 0:
            raise OSError(errno.EIO, "short copy while publishing")
        done += copied
        if time.monotonic() - last_refresh > 1.0:
            refresh(res)
            last_refresh = time.monotonic()
        if hook is not None and done < size:
            hook("tmp_partial")


def _validate_existing(path: str, key: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            kvc.read_row(f, expected_key=key)
    except (OSError, kvc.KvcError):
        return False
    return True


def write_parts(fd: int, parts: Sequence[bytes | bytearray | memoryview], chunk: int = 0,
                progress: Callable[[], None] | None = None) -> None:
    """Write ``parts`` in order at the current offset of ``fd`` (``writev``, no joined copy).

    With ``chunk`` the writes are cut to at most that many bytes and
    ``progress()`` runs between them (a long write refreshes its reservation,
    tests stop a writer half way).
    """
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        if chunk:
            batch: list[memoryview] = []
            room = chunk
            for v in views:
                if room <= 0:
                    break
                batch.append(v[:room])
                room -= min(room, v.nbytes)
        else:
            batch = views
        written = os.writev(fd, batch)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        while views and written >= views[0].nbytes:
            written -= views[0].nbytes
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
        if views and progress is not None:
            progress()


def publish_file(
    src: str,
    directory: str,
    key: bytes,
    *,
    ttl_s: float = 30.0,
    fsync: bool = True,
    move: bool = True,
    force_copy: bool = False,
    hook: Hook | None = None,
    chunk: int = CHUNK,
) -> PublishResult:
    """Publish the complete row file ``src`` as ``<directory>/<key>.kvc``.

    ``move`` consumes ``src`` (a staging file); demotion passes
    ``move=False`` and deletes the source itself once the row is
    re-registered.  ``hook(step)`` runs after each step; tests use it to
    kill the writer at a chosen point.
    """
    final = row_path(directory, key)
    try:
        with open(src, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            info = kvc.read_info(f, size)
    except (OSError, kvc.KvcError) as exc:
        return PublishResult(PublishOutcome.FAILED, final, 0, f"source: {exc}")
    if info.key != key:
        return PublishResult(PublishOutcome.FAILED, final, 0, "source holds another key")

    def fill(tmp: str, res: Reservation) -> None:
        if not force_copy and os.stat(src).st_dev == os.stat(directory).st_dev:
            try:
                os.link(src, tmp)  # exclusive create, like O_EXCL
                if hook:
                    hook("tmp_open")
                return
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
        dst_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        try:
            if hook:
                hook("tmp_open")
            src_fd = os.open(src, os.O_RDONLY)
            try:
                _copy(src_fd, dst_fd, size, res, hook, chunk)
            finally:
                os.close(src_fd)
        finally:
            os.close(dst_fd)

    return _publish(directory, key, size, fill, ttl_s=ttl_s, fsync=fsync, hook=hook,
                    released=(lambda: _unlink_quiet(src)) if move else None)


def publish_parts(
    parts: Sequence[bytes | bytearray | memoryview],
    directory: str,
    key: bytes,
    *,
    ttl_s: float = 30.0,
    fsync: bool = True,
    hook: Hook | None = None,
    chunk: int = CHUNK,
) -> PublishResult:
    """Publish a row held in memory (``kvc.encode_prefix`` output, then the payload) as
    ``<directory>/<key>.kvc``, with the same steps as :func:`publish_file`.

    Why: the write-behind thread of a model process already holds the packed
    bytes of a ram row; writing them straight into the tier's tmp file saves
    the staging copy and the hand-off to a writer process.  The caller vouches
    that ``parts`` encode ``key`` (the reader's full parse checks it anyway).
    """
    size = sum(len(p) for p in parts)

    def fill(tmp: str, res: Reservation) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        try:
            if hook:
                hook("tmp_open")
            last = [time.monotonic()]

            def progress() -> None:
                if time.monotonic() - last[0] > 1.0:
                    refresh(res)
                    last[0] = time.monotonic()
                if hook:
                    hook("tmp_partial")

            write_parts(fd, parts, chunk, progress)
        finally:
            os.close(fd)

    return _publish(directory, key, size, fill, ttl_s=ttl_s, fsync=fsync, hook=hook)


def _publish(
    directory: str,
    key: bytes,
    size: int,
    fill: Callable[[str, Reservation], None],
    *,
    ttl_s: float,
    fsync: bool,
    hook: Hook | None,
    released: Callable[[], None] | None = None,
) -> PublishResult:
    """The protocol's steps around ``fill(tmp, reservation)``, which creates
    ``tmp`` exclusively with the row's complete bytes; ``released()`` runs
    once the row is out and the reservation gone (a staging file goes then)."""
    final = row_path(directory, key)
    res = reserve(directory, key, ttl_s)
    if res is None:
        return PublishResult(PublishOutcome.BUSY, final, size, "reservation held by a live writer")
    if hook:
        hook("reserve")
    tmp = os.path.join(directory, f"{key.hex()}.{res.token}{TMP_SUFFIX}")
    try:
        fill(tmp, res)
        # A row's metadata holds the prompt's tokens: 0600 whatever the umask, and also when
        # fill hard-linked a staging file that its writer made with a looser mode.
        os.chmod(tmp, PRIVATE_FILE_MODE)
        if hook:
            hook("tmp_written")
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if hook:
            hook("tmp_fsync")
        if not holds(res):
            _unlink_quiet(tmp)
            return PublishResult(PublishOutcome.LOST_RESERVATION, final, size, "reservation taken over")
        if hook:
            hook("check")
        outcome = PublishOutcome.PUBLISHED
        try:
            os.link(tmp, final)
        except FileExistsError:
            if _validate_existing(final, key):
                outcome = PublishOutcome.ADOPTED
            else:
                os.replace(tmp, final)
                outcome = PublishOutcome.REPLACED
        if hook:
            hook("link")
        _unlink_quiet(tmp)
        if fsync:
            fsync_dir(directory)
        if hook:
            hook("dir_fsync")
        release(res)
        if released is not None:
            released()
        if hook:
            hook("release")
        return PublishResult(outcome, final, os.stat(final).st_size)
    except OSError as exc:
        _unlink_quiet(tmp)
        release(res)
        return PublishResult(PublishOutcome.FAILED, final, size, f"{exc.__class__.__name__}: {exc}")


def _unlink_quiet(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass(frozen=True)
class SweepStats:
    tmp_removed: int = 0
    reservations_removed: int = 0
    foreign_removed: int = 0  # ``*.kvc`` files whose name is not a row key: no reader ever opens them


def sweep_dir(directory: str, reservation_ttl_s: float, tmp_ttl_s: float, now: float | None = None) -> SweepStats:
    """Remove protocol debris: stale reservations, tmp files nobody owns, and ``.kvc`` files without a key name.

    A tmp file is kept only while a fresh reservation carrying its token
    exists (a live writer in this or another process is mid-publish) and
    it is younger than ``tmp_ttl_s``.
    """
    now = time.time() if now is None else now
    tmp_removed = res_removed = 0
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return SweepStats()
    for name in names:
        if name.endswith(RESERVE_SUFFIX):
            path = os.path.join(directory, name)
            if reservation_is_stale(path, reservation_ttl_s, now):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    res_removed += 1
    foreign = 0
    for name in names:
        if name.endswith(ROW_SUFFIX) and key_from_name(name) is None:
            with contextlib.suppress(OSError):  # gone already, or a directory: leave it
                os.unlink(os.path.join(directory, name))
                foreign += 1
    for name in names:
        if not name.endswith(TMP_SUFFIX):
            continue
        path = os.path.join(directory, name)
        parts = name[: -len(TMP_SUFFIX)].split(".")
        keep = False
        if len(parts) == 2:
            res_path = os.path.join(directory, parts[0] + RESERVE_SUFFIX)
            try:
                young = now - os.stat(path).st_mtime < tmp_ttl_s
            except FileNotFoundError:
                continue
            keep = (
                young
                and _read_token(res_path) == parts[1]
                and not reservation_is_stale(res_path, reservation_ttl_s, now)
            )
        if not keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                tmp_removed += 1
    return SweepStats(tmp_removed, res_removed, foreign)


def sweep_staging(directory: str, ttl_s: float, now: float | None = None) -> int:
    """Remove staging files whose hand-off never completed (their writer or
    model process died); every live hand-off finishes well within the TTL."""
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if now - entry.stat().st_mtime > ttl_s:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed
