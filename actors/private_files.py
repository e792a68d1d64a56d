"""Directories and files only this user may open: 0700 and 0600, whatever the umask.

Why: a cache row's metadata holds the prompt's tokens (they detokenize to the
private prompt that produced the row), and the transport key is a credential.
Another local user must be able to read neither, so everything llama-actors
creates for a system (the per-user root under /dev/shm, the run directory, tier
directories it makes, rows, the key file) is created private here, explicitly,
instead of relying on the caller's umask.

A directory that already exists and was not made by us (a disk tier pointed at
the user's own folder) keeps its mode: the rows inside are 0600 anyway, and
changing the mode of someone's existing folder would surprise them. The one
exception is the per-user root, a shared place (/dev/shm is world-writable):
there a directory of the right name that another user made is refused, since
they could read or swap what we put in it.
"""

from __future__ import annotations

import os
import stat

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


class NotPrivate(PermissionError):
    """A place that must be private to this user is not (``reason`` is machine-readable)."""

    def __init__(self, reason: str, path: str, detail: str) -> None:
        super().__init__(f"{reason}: {path}: {detail}")
        self.reason = reason
        self.path = path


def make_private_dirs(path: str | os.PathLike[str]) -> str:
    """Create ``path`` and any missing parents, each new one mode 0700; return the path.

    Why not ``os.makedirs(path, mode=0o700)``: since Python 3.7 the mode is not applied
    to the parents it creates, and a umask such as 0o277 would strip the owner's own bits;
    each directory made here is chmod-ed to exactly 0700.
    """
    target = os.path.abspath(os.fspath(path))
    missing: list[str] = []
    probe = target
    while not os.path.isdir(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, PRIVATE_DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(d):
                raise
            continue  # made by a concurrent creator: theirs, same code, same mode
        os.chmod(d, PRIVATE_DIR_MODE)
    return target


def ensure_own_private_dir(path: str | os.PathLike[str]) -> str:
    """Make ``path`` a 0700 directory owned by this user (created if missing, tightened if ours).

    For shared places such as ``/dev/shm/llama-actors-<uid>``: a directory (or a link) of that
    name owned by someone else is refused with :class:`NotPrivate` (reason ``foreign_owner``).
    """
    target = make_private_dirs(path)
    st = os.lstat(target)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise NotPrivate("not_a_directory", target, "expected a real directory, found a link or a file")
    if st.st_uid != os.getuid():
        raise NotPrivate("foreign_owner", target, f"owned by uid {st.st_uid}, not by this user ({os.getuid()})")
    if stat.S_IMODE(st.st_mode) != PRIVATE_DIR_MODE:
        os.chmod(target, PRIVATE_DIR_MODE)
    return target


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically as a 0600 file (a temp file beside it, then a rename)."""
    target = os.fspath(path)
    tmp = f"{target}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, target)


def is_private_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a regular file of this user that no one else may read or write."""
    st = os.stat(path)
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077
