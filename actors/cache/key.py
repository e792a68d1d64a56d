"""Cache key derivation.

A row key must change whenever anything that makes a saved llama.cpp
sequence state unusable changes: the weights (fingerprint), the
quantisation, the context shape and KV layout, or a single token.  The
key is therefore a SHA-256 over a canonical byte string of exactly
those inputs, and the same canonical bytes are recomputed from a
file's metadata on a full parse so a renamed or mislabelled file is
caught.

Layout of the hashed material::

    fingerprint (32 bytes) | quant type (1 byte) | ctx-params hash (32 bytes) | tokens as u32 LE
"""

from __future__ import annotations

import array
import hashlib
import math
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgpack

FINGERPRINT_LEN = 32
CTX_HASH_LEN = 32
KEY_LEN = 32
NAMESPACE_LEN = 32
MAX_TOKEN = 0xFFFFFFFF

# llama.cpp `enum llama_ftype` values: every one fits a byte, and the
# model actor can read the number straight from the GGUF
# `general.file_type` field instead of keeping a name table in sync.
QUANT_TYPES: dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q8_0": 7,
    "q5_0": 8,
    "q5_1": 9,
    "q2_k": 10,
    "q3_k_s": 11,
    "q3_k_m": 12,
    "q3_k_l": 13,
    "q4_k_s": 14,
    "q4_k_m": 15,
    "q5_k_s": 16,
    "q5_k_m": 17,
    "q6_k": 18,
    "iq2_xxs": 19,
    "iq2_xs": 20,
    "q2_k_s": 21,
    "iq3_xs": 22,
    "iq3_xxs": 23,
    "iq1_s": 24,
    "iq4_nl": 25,
    "iq3_s": 26,
    "iq3_m": 27,
    "iq2_s": 28,
    "iq2_m": 29,
    "iq4_xs": 30,
    "iq1_m": 31,
    "bf16": 32,
    "tq1_0": 36,
    "tq2_0": 37,
    "mxfp4_moe": 38,
}

# Context parameters that change the byte layout of a saved sequence
# state.  llama.cpp refuses (or worse, misreads) a blob saved with a
# different K/V element type or V transposition (flash attention), so a
# ctx-params hash that omitted them could let two incompatible rows
# share a key.  The model actor must pass resolved values (e.g. the
# flash-attention decision llama.cpp actually made, not "auto").
LAYOUT_PARAMS: tuple[str, ...] = ("type_k", "type_v", "flash_attn")

_CTX_DOMAIN = b"llama-actors/ctx-params/v1\x00"
_LORA_DOMAIN = b"llama-actors/lora/v1\x00"
_NS_DOMAIN = b"llama-actors/namespace/v1\x00"

_NATIVE_U32 = array.array("I").itemsize == 4
_BIG_ENDIAN = sys.byteorder == "big"


class KeyInputError(ValueError):
    """Bad key input; the message names the offending field."""


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter as seen by the cache: its file digest and scale."""

    sha256: bytes
    scale: float


def quant_byte(quant: int | str) -> int:
    """Accept a llama_ftype number or a name, so callers can use either the
    GGUF field or a human-readable config value."""
    if isinstance(quant, bool):
        raise KeyInputError("quant: expected int or name, got bool")
    if isinstance(quant, int):
        if not 0 <= quant <= 255:
            raise KeyInputError(f"quant: {quant} does not fit in one byte")
        return quant
    if isinstance(quant, str):
        try:
            return QUANT_TYPES[quant.lower()]
        except KeyError:
            raise KeyInputError(f"quant: unknown quant type name {quant!r}") from None
    raise KeyInputError(f"quant: expected int or name, got {type(quant).__name__}")


def _check_digest(name: str, value: bytes, length: int) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise KeyInputError(f"{name}: expected {length} bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) != length:
        raise KeyInputError(f"{name}: expected {length} bytes, got {len(value)}")
    return value


def encode_tokens(tokens: Sequence[int] | bytes | bytearray | memoryview | array.array) -> bytes:
    """Canonical u32 little-endian token bytes.

    Bytes input is taken as already encoded (the codec stores tokens this
    way), which lets hot paths skip a list round trip.
    """
    if isinstance(tokens, (bytes, bytearray, memoryview)):
        raw = tokens if type(tokens) is bytes else bytes(tokens)  # no copy on the hot path
        if len(raw) % 4:
            raise KeyInputError(f"tokens: encoded length {len(raw)} is not a multiple of 4")
        return raw
    if isinstance(tokens, array.array) and tokens.typecode == "I" and _NATIVE_U32:
        arr = tokens
    else:
        try:
            arr = array.array("I" if _NATIVE_U32 else "L", tokens)
        except OverflowError:
            bad = next((t for t in tokens if not 0 <= int(t) <= MAX_TOKEN), None)
            raise KeyInputError(f"tokens: id {bad} outside 0..{MAX_TOKEN}") from None
        except TypeError as exc:
            raise KeyInputError(f"tokens: expected a sequence of ints ({exc})") from None
        if not _NATIVE_U32:  # pragma: no cover - exotic platforms
            if any(t > MAX_TOKEN for t in arr):
                raise KeyInputError("tokens: id does not fit u32")
            arr = array.array("I", (t & MAX_TOKEN for t in arr))
    if _BIG_ENDIAN:  # pragma: no cover - exercised only on big-endian hosts
        arr = array.array(arr.typecode, arr)
        arr.byteswap()
    return arr.tobytes()


def decode_tokens(raw: bytes | memoryview) -> list[int]:
    """Inverse of :func:`encode_tokens`."""
    if len(raw) % 4:
        raise KeyInputError(f"tokens: encoded length {len(raw)} is not a multiple of 4")
    arr = array.array("I")
    arr.frombytes(bytes(raw))
    if _BIG_ENDIAN:  # pragma: no cover
        arr.byteswap()
    return arr.tolist()


def key_material(fingerprint: bytes, quant: int | str, ctx_hash: bytes, token_bytes: bytes) -> bytes:
    """The exact bytes a key hashes; exposed so tests can state the layout."""
    fp = _check_digest("fingerprint", fingerprint, FINGERPRINT_LEN)
    ctx = _check_digest("ctx_hash", ctx_hash, CTX_HASH_LEN)
    return fp + bytes((quant_byte(quant),)) + ctx + token_bytes


def cache_key(
    fingerprint: bytes,
    quant: int | str,
    ctx_hash: bytes,
    tokens: Sequence[int] | bytes | array.array,
) -> bytes:
    """SHA-256 row key over fingerprint | quant | ctx hash | tokens (u32 LE)."""
    fp = _check_digest("fingerprint", fingerprint, FINGERPRINT_LEN)
    ctx = _check_digest("ctx_hash", ctx_hash, CTX_HASH_LEN)
    h = hashlib.sha256(fp)
    h.update(bytes((quant_byte(quant),)))
    h.update(ctx)
    h.update(encode_tokens(tokens))
    return h.digest()


def namespace(fingerprint: bytes, quant: int | str, ctx_hash: bytes) -> bytes:
    """Seed of the prefix chain: rows of different models or context shapes
    must never share a block hash, even for identical token prefixes."""
    fp = _check_digest("fingerprint", fingerprint, FINGERPRINT_LEN)
    ctx = _check_digest("ctx_hash", ctx_hash, CTX_HASH_LEN)
    return hashlib.sha256(_NS_DOMAIN + fp + bytes((quant_byte(quant),)) + ctx).digest()


def _canonical_scale(scale: float) -> bytes:
    value = float(scale)
    if not math.isfinite(value):
        raise KeyInputError(f"adapter scale: {scale!r} is not finite")
    if value == 0.0:
        value = 0.0  # fold -0.0 into 0.0 so equal scales hash equally
    return struct.pack(">d", value)


def effective_fingerprint(fingerprint: bytes, adapters: Iterable[Adapter | tuple[bytes, float]] = ()) -> bytes:
    """Fold attached LoRA adapters into the model fingerprint.

    LoRA deltas are summed, so the adapter *set* (with scales) determines
    the state, not the attach order: adapters are folded sorted by
    (sha256, scale).  With no adapters the base fingerprint is returned
    unchanged, so plain models keep their natural fingerprint.
    """
    fp = _check_digest("fingerprint", fingerprint, FINGERPRINT_LEN)
    items: list[tuple[bytes, bytes]] = []
    for a in adapters:
        sha, scale = (a.sha256, a.scale) if isinstance(a, Adapter) else a
        items.append((_check_digest("adapter sha256", sha, 32), _canonical_scale(scale)))
    if not items:
        return fp
    h = hashlib.sha256(_LORA_DOMAIN + fp)
    h.update(struct.pack("<I", len(items)))
    for sha, scale in sorted(items):
        h.update(sha)
        h.update(scale)
    return h.digest()


CtxValue = int | float | str | bool | None


def _canonical_value(name: str, value: object) -> object:
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise KeyInputError(f"ctx param {name}: {value!r} is not finite")
        return value
    raise KeyInputError(f"ctx param {name}: unsupported type {type(value).__name__}")


def ctx_params_hash(params: Mapping[str, CtxValue]) -> bytes:
    """Hash of the context parameters that shape a saved state.

    Canonical form: a domain tag, then msgpack of the (name, value) pairs
    sorted by name.  bool, int, float, str and None stay distinct types
    (``True`` and ``1`` hash differently) so the caller must pass the same
    types every time; that is cheaper than guessing coercions.  The
    layout-affecting names in :data:`LAYOUT_PARAMS` are mandatory.
    """
    missing = [p for p in LAYOUT_PARAMS if p not in params]
    if missing:
        raise KeyInputError(f"ctx params: missing layout-affecting parameter(s) {', '.join(missing)}")
    pairs = []
    for name in sorted(params):
        if not isinstance(name, str):
            raise KeyInputError(f"ctx params: parameter names must be str, got {name!r}")
        pairs.append([name, _canonical_value(name, params[name])])
    return hashlib.sha256(_CTX_DOMAIN + msgpack.packb(pairs, use_bin_type=True)).digest()
