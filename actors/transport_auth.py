"""An authenticated thespian transport: every message carries an HMAC-SHA256 tag, checked before unpickling.

Why: thespian's TCP transport (4.0.1) unpickles whatever bytes reach an actor's
port, the admin's included, so any local user who can connect to 127.0.0.1 could
run code as the server's user. Every process of a system (the serve process,
the admin and every actor forked from it, each attached client) now signs what
it sends with the system's key and drops, before ``pickle.loads`` sees a byte,
anything whose tag does not verify.

Where the hook sits: thespian serializes each outgoing message in one method,
``TCPTransport.serializer``, and hands the module global ``serializer.loads`` to
every receive buffer. :func:`install` replaces both. A frame's body becomes
``MAGIC | tag(32) | pickle`` with ``tag = HMAC-SHA256(key, MAGIC | pickle)``.
Thespian's two control replies (``ACK`` and ``ACK+DATAERR``) stay unsigned:
they are recognised by comparing the whole body with their fixed pickled bytes
(never unpickled), which keeps one client process able to talk to several
systems with different keys. A forged ACK can only make a sender believe a
delivery happened on a connection the forger accepted itself.

Keys: one random 32-byte key per system (per admin port), made by the serve
process in a 0600 file in the per-user 0700 root (``/dev/shm/llama-actors-<uid>``,
next to the run directories). A process of the same user that attaches by port
reads it there, so ``python -m actors status`` from another shell needs no extra
step. For several hosts, give every process the same key through
``LLAMA_ACTORS_TRANSPORT_KEY`` (text, at least 16 characters) or
``LLAMA_ACTORS_TRANSPORT_KEY_FILE`` (a 0600 file of this user). Keys are
:class:`actors.secret.Secret` values: never logged.

Dropped frames are counted: per process (:func:`rejections`) and, in the processes
of a serving system, in a per-port counter file read by :func:`rejected_count`
(shown by ``python -m actors status``); the first few drops and then every
thousandth are also written to stderr (the serve log).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import pickle
import secrets
import sys
import threading
from dataclasses import dataclass
from typing import Any

from actors.private_files import PRIVATE_FILE_MODE, ensure_own_private_dir, is_private_file, write_private_file
from actors.secret import Secret

KEY_ENV = "LLAMA_ACTORS_TRANSPORT_KEY"
KEY_FILE_ENV = "LLAMA_ACTORS_TRANSPORT_KEY_FILE"
MAGIC = b"LAT1"
TAG_LEN = 32
KEY_BYTES = 32
MIN_KEY_LEN = 16
_COUNTER_CAP = 1 << 20  # the counter file stops growing here (one byte per drop): a flood cannot fill tmpfs
_LOG_FIRST = 5


class TransportKeyError(RuntimeError):
    """The transport key is missing, unreadable, too weak, or differs from the system's (``reason`` says which)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Unauthenticated(ValueError):
    """A received frame failed authentication; thespian drops it (and its connection) unread."""


@dataclass
class Rejections:
    """What this process dropped: how many frames, and why the last one was dropped."""

    count: int = 0
    last_reason: str = ""


# --------------------------------------------------------------------------- where keys live


def _root() -> str:
    from actors.cache.config import default_shm_root

    return ensure_own_private_dir(default_shm_root())


def key_path(port: int) -> str:
    """The key file of the system whose admin listens on ``port`` (in the per-user 0700 root)."""
    return os.path.join(_root(), f"transport-{int(port)}.key")


def counter_path(port: int) -> str:
    """The file that counts frames dropped by that system's processes (one byte each)."""
    return os.path.join(_root(), f"transport-{int(port)}.rejected")


def _check_strength(raw: bytes, source: str) -> Secret:
    if len(raw) < MIN_KEY_LEN:
        raise TransportKeyError("weak_key", f"the transport key from {source} has {len(raw)} bytes; "
                                            f"at least {MIN_KEY_LEN} are needed")
    return Secret(raw)


def configured_key() -> tuple[Secret, str] | None:
    """The key given by the environment (for several hosts) and where it came from, or None."""
    text = os.environ.get(KEY_ENV, "").strip()  # as a key file is read: surrounding whitespace is not key
    if text:
        return _check_strength(text.encode("utf-8"), f"${KEY_ENV}"), f"${KEY_ENV}"
    path = os.environ.get(KEY_FILE_ENV)
    if path:
        return _read_key_file(path, f"${KEY_FILE_ENV} ({path})"), path
    return None


def _read_key_file(path: str, source: str) -> Secret:
    try:
        if not is_private_file(path):
            raise TransportKeyError("key_not_private", f"{source} must be a regular 0600 file of this user")
        with open(path, "rb") as f:
            raw = f.read().strip()
    except OSError as e:
        raise TransportKeyError("key_unreadable", f"{source}: {e.strerror or e}") from None
    return _check_strength(raw, source)


def server_key() -> Secret:
    """The key a new system uses: the configured one, else a fresh random key.

    A fresh key is hex text (``KEY_BYTES`` random bytes), not raw bytes: key files are read as
    text with surrounding whitespace stripped, and a raw key that began or ended with a
    whitespace byte (about one in twenty) came back shorter, so its clients signed with a key
    the admin did not have and every attach failed."""
    given = configured_key()
    return given[0] if given else Secret(secrets.token_hex(KEY_BYTES).encode("ascii"))


def publish_key(port: int, key: Secret) -> None:
    """Write the key of the system now serving ``port`` to :func:`key_path` (0600), so another shell
    of this user can attach. Only once the port is known to be this system's: two systems started
    on one port at the same moment must not leave the loser's key behind.

    A key that would not read back as itself (surrounding whitespace) is refused: ``key_not_text``."""
    raw = key.reveal()
    if raw != raw.strip():
        raise TransportKeyError("key_not_text", "a published transport key must not begin or end with whitespace")
    write_private_file(key_path(port), raw)


def client_key(port: int) -> Secret:
    """The key to attach to the system on ``port`` with: the configured one, else the system's key file.

    A configured key that differs from the key file of a system on this host is refused at once
    (reason ``key_mismatch``) rather than after thespian's attach retries time out.
    """
    given = configured_key()
    path = key_path(port)
    on_file = _read_key_file(path, path) if os.path.exists(path) else None
    if given is not None:
        key, source = given
        if on_file is not None and not hmac.compare_digest(on_file.reveal(), key.reveal()):
            raise TransportKeyError("key_mismatch", f"the transport key from {source} is not the key of the "
                                                    f"system on port {port} ({path})")
        return key
    if on_file is None:
        raise TransportKeyError("no_key", f"no transport key for port {port}: {path} is missing (is the system "
                                          f"on another host or user? then set ${KEY_ENV} or ${KEY_FILE_ENV})")
    return on_file


def remove_files(port: int, key: Secret | None = None) -> None:
    """Remove the key and counter files of a system that has stopped.

    With ``key`` (a client's cleanup after a stop), only when the key file still holds that key: the
    port may already belong to a new system, whose files these now are."""
    path = key_path(port)
    if key is not None:
        try:
            with open(path, "rb") as f:
                if not hmac.compare_digest(f.read().strip(), key.reveal()):
                    return
        except OSError:
            return
    for p in (path, counter_path(port)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def installed_key(port: int) -> Secret | None:
    """The key this process signs messages for the system on ``port`` with (None: none installed)."""
    with _state.lock:
        return _state.keys.get(int(port))


def rejected_count(port: int) -> int:
    """Frames dropped so far by the processes of the system on ``port`` (this host)."""
    try:
        return os.stat(counter_path(port)).st_size
    except FileNotFoundError:
        return 0


# --------------------------------------------------------------------------- signing


_KEYED: dict[Secret, Any] = {}  # key -> HMAC already fed the key and MAGIC: a copy per message is cheaper


def _tag(key: Secret, body: bytes | memoryview) -> bytes:
    base = _KEYED.get(key)
    if base is None:
        base = _KEYED[key] = hmac.new(key.reveal(), MAGIC, hashlib.sha256)
    mac = base.copy()
    mac.update(body)
    return mac.digest()


def sign(key: Secret, body: bytes) -> bytes:
    """``MAGIC | tag | body``: what goes on the wire for a pickled message ``body``."""
    return b"".join((MAGIC, _tag(key, body), body))


def verify(keys: list[Secret], frame: bytes) -> memoryview | None:
    """The pickled body of ``frame`` (a view, not a copy) when its tag verifies under one of
    ``keys``; None otherwise."""
    head = len(MAGIC) + TAG_LEN
    if len(frame) < head or frame[:len(MAGIC)] != MAGIC:
        return None
    view = memoryview(frame)
    tag, body = bytes(view[len(MAGIC):head]), view[head:]
    for key in keys:
        if hmac.compare_digest(_tag(key, body), tag):
            return body
    return None


class _State:
    """This process's keys (admin port -> key), counters and where to count drops."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: dict[int, Secret] = {}
        self.rejections = Rejections()
        self.counter_file: str | None = None
        self.control: dict[bytes, Any] = {}


_state = _State()


def rejections() -> Rejections:
    """A copy of this process's drop counter."""
    with _state.lock:
        return Rejections(_state.rejections.count, _state.rejections.last_reason)


def _record_rejection(reason: str) -> None:
    with _state.lock:
        _state.rejections.count += 1
        _state.rejections.last_reason = reason
        n = _state.rejections.count
        path = _state.counter_file
    if path is not None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
            try:
                if os.fstat(fd).st_size < _COUNTER_CAP:
                    os.write(fd, b"x")
            finally:
                os.close(fd)
        except OSError:
            pass
    if n <= _LOG_FIRST or n % 1000 == 0:
        print(f"llama-actors transport: dropped an unauthenticated message ({reason}); "
              f"{n} dropped by process {os.getpid()} so far", file=sys.stderr, flush=True)


def _loads(frame: bytes) -> Any:
    if len(frame) < 64:  # thespian's fixed ACKs are this short; compared as bytes, never unpickled
        control = _state.control.get(bytes(frame))
        if control is not None:
            return control
    with _state.lock:
        keys = list(_state.keys.values())
    body = verify(keys, frame)
    if body is None:
        reason = "unsigned" if bytes(frame[:len(MAGIC)]) != MAGIC else "bad_tag"
        _record_rejection(reason)
        raise Unauthenticated(f"transport frame failed authentication ({reason})")
    return pickle.loads(body)


def _admin_port(transport: Any) -> int | None:
    try:
        return int(transport._adminAddr.addressDetails.connectArgs[0][1])
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _key_for(transport: Any) -> Secret:
    port = _admin_port(transport)
    with _state.lock:
        if port in _state.keys:
            return _state.keys[port]  # type: ignore[index]
        if len(_state.keys) == 1:
            return next(iter(_state.keys.values()))
    raise TransportKeyError("no_key", f"no transport key installed for the system on port {port}")


class _SignedPickle:
    """Stands in for the ``pickle`` module that thespian's TCPTransport calls ``serializer``."""

    @staticmethod
    def loads(frame: bytes) -> Any:
        return _loads(frame)

    @staticmethod
    def dumps(obj: Any) -> bytes:
        with _state.lock:
            keys = list(_state.keys.values())
        if len(keys) != 1:
            raise TransportKeyError("no_key", "serializer.dumps without one installed key")
        return sign(keys[0], pickle.dumps(obj))


def install(port: int, key: Secret, count_drops: bool = False) -> None:
    """Sign and check every thespian TCP message of this process (and of processes it forks later).

    Idempotent; call it before creating or attaching an ``ActorSystem`` for ``port``. Several
    systems may be installed in one client process, each with its own key. ``count_drops``: this
    process serves the system, so its drops also go to the system's counter file.
    """
    from thespian.system.transport import TCPTransport as tcp
    from thespian.system.transport import streamBuffer

    if not isinstance(key, Secret) or len(key.reveal()) < MIN_KEY_LEN:
        raise TransportKeyError("weak_key", "install() needs a Secret of at least 16 bytes")
    with _state.lock:
        _state.keys[int(port)] = key
        if count_drops:
            _state.counter_file = counter_path(port)
        if not _state.control:
            for packet in (streamBuffer.ackPacket, streamBuffer.ackDataErrPacket):
                for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
                    _state.control[pickle.dumps(packet, protocol=proto)] = packet
    if tcp.serializer is not _SignedPickle:
        tcp.serializer = _SignedPickle

        def serializer(self: Any, intent: Any) -> bytes:
            body = sign(_key_for(self), pickle.dumps((self.myAddress, intent.message)))
            return b"%d>" % len(body) + body

        tcp.TCPTransport.serializer = serializer  # type: ignore[method-assign]


def forget(port: int) -> None:
    """Drop the key of a system that has stopped, so received frames are not tried against it."""
    with _state.lock:
        key = _state.keys.pop(int(port), None)
        if key is not None and key not in _state.keys.values():
            _KEYED.pop(key, None)


def installed() -> bool:
    """Whether this process's thespian TCP transport signs and checks (for tests and status)."""
    from thespian.system.transport import TCPTransport as tcp

    return tcp.serializer is _SignedPickle
