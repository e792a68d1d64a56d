"""The ``.kvc`` row file format.

Pure bytes in, bytes out, plus a light parse from a file object.  One
file holds one row: a fixed little-endian header, msgpack metadata and
the payload (llama.cpp sequence state, then optionally the float32
logits of the last position).

Byte layout (all integers little-endian)::

    off size field
      0    8 magic          b"LLAKVC\\r\\n"
      8    2 version        u16, currently 1
     10    1 reason         u8 SaveReason
     11    1 flags          u8, bit 0 = payload carries logits; others 0
     12    4 hits           u32, bumped in place on cache hits
     16    4 hits_check     u32 CRC32C of the 4 hit bytes
     20    4 token_count    u32
     24    4 context_size   u32
     28    4 meta_len       u32
     32    8 payload_len    u64 (kv_len + logits_len)
     40    8 kv_len         u64
     48    8 created_ns     u64 unix time of the save
     56    8 prefill_ns     u64 time spent computing the state (0 = unknown)
     64    4 payload_crc    u32 CRC32C of the payload
     68    4 header_crc     u32 CRC32C of bytes 0..12, 20..68 and the metadata
     72      metadata       msgpack map, meta_len bytes
             payload        payload_len bytes

The hit count lives outside ``header_crc`` so it can be rewritten in
place with one 8-byte ``pwrite`` without rewriting a 50 MB file; its own
check word keeps a flipped bit there detectable.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import BinaryIO

import crc32c
import msgpack

from actors.cache.key import (
    CTX_HASH_LEN,
    FINGERPRINT_LEN,
    KeyInputError,
    cache_key,
    decode_tokens,
    effective_fingerprint,
    encode_tokens,
    quant_byte,
)

MAGIC = b"LLAKVC\r\n"
VERSION = 1
PACKAGE_VERSION = "0.1.0"
HEADER = struct.Struct("<8sHBBIIIIIQQQQII")
HEADER_LEN = HEADER.size  # 72
HITS_OFFSET = 12
HITS_FIELD = struct.Struct("<II")
FLAG_LOGITS = 0x01
_KNOWN_FLAGS = FLAG_LOGITS
U32_MAX = 0xFFFFFFFF
HITS_CHECK_DETAIL = "hit counter check word"


class SaveReason(IntEnum):
    COLD = 1
    CONTINUED = 2
    FINISH = 3
    EVICT = 4
    SHUTDOWN = 5

    @classmethod
    def parse(cls, value: SaveReason | str | int) -> SaveReason:
        if isinstance(value, SaveReason):
            return value
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise ValueError(f"save reason: unknown {value!r}") from None
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"save reason: unknown {value!r}") from None


class KvcError(ValueError):
    """A row file that must not be served; ``reason`` is a stable code."""

    TRUNCATED = "truncated"
    TRAILING = "trailing_bytes"
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    BAD_CRC = "bad_crc"
    BAD_HEADER = "bad_header"
    BAD_METADATA = "bad_metadata"
    KEY_MISMATCH = "key_mismatch"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RowMeta:
    """What the model actor knows about a state it saves.

    ``fingerprint`` is the *effective* fingerprint (adapters already
    folded, see :func:`actors.cache.key.effective_fingerprint`);
    ``base_fingerprint``/``adapters`` are recorded so a full parse can
    check the fold.  ``tokens`` accepts a list of ids or u32 LE bytes and
    is stored as bytes.
    """

    fingerprint: bytes
    quant: int
    ctx_hash: bytes
    tokens: bytes
    context_size: int = 0
    model: str = ""
    base_fingerprint: bytes | None = None
    adapters: tuple[tuple[bytes, float], ...] = ()
    prefill_ns: int = 0
    host: str = field(default_factory=socket.gethostname)
    version: str = PACKAGE_VERSION
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "tokens", encode_tokens(self.tokens))
            object.__setattr__(self, "quant", quant_byte(self.quant))
        except KeyInputError as exc:
            raise ValueError(str(exc)) from None
        for name, value, n in (
            ("fingerprint", self.fingerprint, FINGERPRINT_LEN),
            ("ctx_hash", self.ctx_hash, CTX_HASH_LEN),
        ):
            if not isinstance(value, bytes) or len(value) != n:
                raise ValueError(f"{name}: expected {n} bytes")
        if self.base_fingerprint is not None and len(self.base_fingerprint) != FINGERPRINT_LEN:
            raise ValueError(f"base_fingerprint: expected {FINGERPRINT_LEN} bytes")
        if not 0 <= self.context_size <= U32_MAX:
            raise ValueError(f"context_size: {self.context_size} outside u32")
        if self.n_tokens > U32_MAX:
            raise ValueError("tokens: more than 2^32-1 tokens")
        object.__setattr__(self, "adapters", tuple((bytes(s), float(c)) for s, c in self.adapters))

    @property
    def n_tokens(self) -> int:
        return len(self.tokens) // 4

    @property
    def key(self) -> bytes:
        return cache_key(self.fingerprint, self.quant, self.ctx_hash, self.tokens)


@dataclass(frozen=True)
class KvcHeader:
    version: int
    reason: int
    flags: int
    hits: int
    token_count: int
    context_size: int
    meta_len: int
    payload_len: int
    kv_len: int
    created_ns: int
    prefill_ns: int
    payload_crc: int
    header_crc: int

    @property
    def save_reason(self) -> SaveReason:
        return SaveReason(self.reason)

    @property
    def logits_len(self) -> int:
        return self.payload_len - self.kv_len

    @property
    def file_len(self) -> int:
        return HEADER_LEN + self.meta_len + self.payload_len


@dataclass(frozen=True)
class KvcInfo:
    """Light-parse result: enough to register a row without touching the payload."""

    header: KvcHeader
    meta: RowMeta

    @functools.cached_property
    def key(self) -> bytes:
        # Lazy: hashing a 32k-token row costs ~70 us, and the lookup path
        # reads row tokens without needing the key.
        return self.meta.key


@dataclass(frozen=True)
class KvcRow:
    """Full-parse result; ``kv``/``logits`` are read-only views into the file bytes."""

    info: KvcInfo
    kv: memoryview
    logits: memoryview | None


def hits_field(hits: int) -> bytes:
    """The 8 bytes written at :data:`HITS_OFFSET` to persist a hit count."""
    hits = min(max(hits, 0), U32_MAX)
    raw = struct.pack("<I", hits)
    return raw + struct.pack("<I", crc32c.crc32c(raw))


def payload_crc(kv: bytes | memoryview, logits: bytes | memoryview | None = None) -> int:
    crc = crc32c.crc32c(kv)
    if logits:
        crc = crc32c.crc32c(logits, crc)
    return crc


def _encode_meta(meta: RowMeta) -> bytes:
    body: dict[str, object] = dict(meta.extra)
    body.update(
        {
            "fp": meta.fingerprint,
            "quant": meta.quant,
            "ctx": meta.ctx_hash,
            "tokens": meta.tokens,
            "model": meta.model,
            "base_fp": meta.base_fingerprint,
            "adapters": [[s, c] for s, c in meta.adapters],
            "host": meta.host,
            "version": meta.version,
        }
    )
    return msgpack.packb(body, use_bin_type=True)


def _header_crc(header_bytes: bytes | memoryview, meta_bytes: bytes | memoryview) -> int:
    crc = crc32c.crc32c(header_bytes[:HITS_OFFSET])
    crc = crc32c.crc32c(header_bytes[HITS_OFFSET + 8 : HEADER_LEN - 4], crc)
    return crc32c.crc32c(meta_bytes, crc)


def encode_prefix(
    reason: SaveReason | str | int,
    meta: RowMeta,
    kv_len: int,
    logits_len: int,
    crc_of_payload: int,
    created_ns: int | None = None,
    hits: int = 0,
) -> bytes:
    """Header plus metadata for a payload whose CRC the caller computed.

    Split from :func:`encode` so a 50 MB state can be written with
    ``writev`` straight from the caller's buffers instead of first being
    concatenated into one more copy.
    """
    if kv_len < 0 or logits_len < 0:
        raise ValueError("payload lengths must be non-negative")
    if logits_len % 4:
        raise ValueError(f"logits: {logits_len} bytes is not a whole number of float32")
    meta_bytes = _encode_meta(meta)
    if len(meta_bytes) > U32_MAX:
        raise ValueError("metadata larger than 4 GiB")
    created = time.time_ns() if created_ns is None else created_ns
    fields = [
        MAGIC,
        VERSION,
        int(SaveReason.parse(reason)),
        FLAG_LOGITS if logits_len else 0,
        0,
        0,
        meta.n_tokens,
        meta.context_size,
        len(meta_bytes),
        kv_len + logits_len,
        kv_len,
        created,
        max(meta.prefill_ns, 0),
        crc_of_payload,
        0,
    ]
    draft = HEADER.pack(*fields)
    fields[-1] = _header_crc(draft, meta_bytes)
    header = bytearray(HEADER.pack(*fields))
    header[HITS_OFFSET : HITS_OFFSET + 8] = hits_field(hits)
    return bytes(header) + meta_bytes


def encode(
    reason: SaveReason | str | int,
    meta: RowMeta,
    kv: bytes | memoryview,
    logits: bytes | memoryview | None = None,
    created_ns: int | None = None,
    hits: int = 0,
) -> bytes:
    """A complete row file as bytes."""
    logits = logits or b""
    prefix = encode_prefix(reason, meta, len(kv), len(logits), payload_crc(kv, logits), created_ns, hits)
    return b"".join((prefix, kv, logits))


def _parse_header(raw: bytes | memoryview) -> KvcHeader:
    if len(raw) < HEADER_LEN:
        raise KvcError(KvcError.TRUNCATED, f"{len(raw)} bytes, header needs {HEADER_LEN}")
    f = HEADER.unpack(bytes(raw[:HEADER_LEN]))
    if f[0] != MAGIC:
        raise KvcError(KvcError.BAD_MAGIC, repr(f[0]))
    if f[1] != VERSION:
        raise KvcError(KvcError.BAD_VERSION, f"version {f[1]}, expected {VERSION}")
    hits, check = f[4], f[5]
    if crc32c.crc32c(struct.pack("<I", hits)) != check:
        raise KvcError(KvcError.BAD_CRC, HITS_CHECK_DETAIL)
    header = KvcHeader(
        version=f[1],
        reason=f[2],
        flags=f[3],
        hits=hits,
        token_count=f[6],
        context_size=f[7],
        meta_len=f[8],
        payload_len=f[9],
        kv_len=f[10],
        created_ns=f[11],
        prefill_ns=f[12],
        payload_crc=f[13],
        header_crc=f[14],
    )
    return header


def _check_header_after_crc(h: KvcHeader) -> None:
    # Only reachable with a matching CRC, i.e. a writer bug or a
    # deliberately forged file rather than bit rot.
    if h.reason not in SaveReason._value2member_map_:
        raise KvcError(KvcError.BAD_HEADER, "unknown save reason")
    if h.flags & ~_KNOWN_FLAGS:
        raise KvcError(KvcError.BAD_HEADER, f"unknown flags {h.flags:#x}")
    if h.kv_len > h.payload_len:
        raise KvcError(KvcError.BAD_HEADER, "kv_len larger than payload")
    if bool(h.flags & FLAG_LOGITS) != (h.logits_len > 0) or h.logits_len % 4:
        raise KvcError(KvcError.BAD_HEADER, "logits flag/length disagree")


def _decode_meta(raw: bytes | memoryview, header: KvcHeader) -> RowMeta:
    try:
        body = msgpack.unpackb(bytes(raw), raw=False, strict_map_key=False)
    except Exception as exc:
        raise KvcError(KvcError.BAD_METADATA, f"msgpack: {exc}") from None
    if not isinstance(body, dict):
        raise KvcError(KvcError.BAD_METADATA, "not a map")
    known = {"fp", "quant", "ctx", "tokens", "model", "base_fp", "adapters", "host", "version"}
    try:
        meta = RowMeta(
            fingerprint=body["fp"],
            quant=body["quant"],
            ctx_hash=body["ctx"],
            tokens=body["tokens"],
            context_size=header.context_size,
            model=str(body.get("model", "")),
            base_fingerprint=body.get("base_fp"),
            adapters=tuple((a[0], a[1]) for a in body.get("adapters") or ()),
            prefill_ns=header.prefill_ns,
            host=str(body.get("host", "")),
            version=str(body.get("version", "")),
            # Unknown fields are ignored for compatibility, but kept so a
            # re-encode (e.g. demotion) does not silently drop them.
            extra={k: v for k, v in body.items() if k not in known and isinstance(k, str)},
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise KvcError(KvcError.BAD_METADATA, f"field: {exc}") from None
    if meta.n_tokens != header.token_count:
        raise KvcError(KvcError.BAD_METADATA, f"{meta.n_tokens} tokens, header says {header.token_count}")
    return meta


def _info(header: KvcHeader, header_raw: bytes | memoryview, meta_raw: bytes | memoryview) -> KvcInfo:
    if _header_crc(header_raw, meta_raw) != header.header_crc:
        raise KvcError(KvcError.BAD_CRC, "header/metadata")
    _check_header_after_crc(header)
    meta = _decode_meta(meta_raw, header)
    return KvcInfo(header=header, meta=meta)


def _check_length(header: KvcHeader, actual: int) -> None:
    if actual < header.file_len:
        raise KvcError(KvcError.TRUNCATED, f"{actual} bytes, header promises {header.file_len}")
    if actual > header.file_len:
        raise KvcError(KvcError.TRAILING, f"{actual - header.file_len} bytes past the payload")


def decode(data: bytes | memoryview, expected_key: bytes | None = None) -> KvcRow:
    """Full parse: header, metadata, both CRCs, and the key recomputed from metadata."""
    view = memoryview(data)
    header = _parse_header(view)
    _check_length(header, len(view))
    meta_end = HEADER_LEN + header.meta_len
    info = _info(header, view[:HEADER_LEN], view[HEADER_LEN:meta_end])
    kv = view[meta_end : meta_end + header.kv_len]
    logits = view[meta_end + header.kv_len : header.file_len] if header.logits_len else None
    if payload_crc(kv, logits) != header.payload_crc:
        raise KvcError(KvcError.BAD_CRC, "payload")
    verify_identity(info, expected_key)
    return KvcRow(info=info, kv=kv.toreadonly(), logits=logits.toreadonly() if logits is not None else None)


def verify_identity(info: KvcInfo, expected_key: bytes | None) -> None:
    meta = info.meta
    if meta.base_fingerprint is not None:
        try:
            folded = effective_fingerprint(meta.base_fingerprint, meta.adapters)
        except KeyInputError as exc:
            raise KvcError(KvcError.BAD_METADATA, str(exc)) from None
        if folded != meta.fingerprint:
            raise KvcError(KvcError.KEY_MISMATCH, "fingerprint is not base fingerprint + adapters")
    if expected_key is not None and info.key != expected_key:
        raise KvcError(KvcError.KEY_MISMATCH, f"file holds {info.key.hex()[:16]}…")


def read_info(f: BinaryIO, file_len: int | None = None) -> KvcInfo:
    """Light parse from a file object positioned at 0.

    Reads only header and metadata.  ``file_len`` (e.g. from fstat) lets
    truncation and trailing bytes be caught without reading the payload;
    payload bit rot is left to the full parse on load.
    """
    head = f.read(HEADER_LEN)
    header = _parse_header(head)
    if file_len is not None:
        _check_length(header, file_len)
    meta_raw = f.read(header.meta_len)
    if len(meta_raw) < header.meta_len:
        raise KvcError(KvcError.TRUNCATED, "metadata cut short")
    return _info(header, head, meta_raw)


def read_row(f: BinaryIO, expected_key: bytes | None = None) -> KvcRow:
    """Full parse of a whole file object (one read, views into it)."""
    try:
        size = os.fstat(f.fileno()).st_size
    except (AttributeError, OSError):
        size = None
    data = f.read() if size is None else f.read(size + 1)
    return decode(data, expected_key)


def tokens_of(meta: RowMeta) -> list[int]:
    """Token ids of a row; metadata keeps them as u32 LE bytes."""
    return decode_tokens(meta.tokens)
