from __future__ import annotations

import io
import struct

import msgpack
import pytest
from cachetest_util import PROPS, meta_for
from hypothesis import given
from hypothesis import strategies as st

from actors.cache import kvc
from actors.cache.kvc import HEADER_LEN, HITS_OFFSET, KvcError, RowMeta, SaveReason

metas = st.builds(
    lambda fp, q, ctx, toks, n_ctx, model: RowMeta(
        fingerprint=fp, quant=q, ctx_hash=ctx, tokens=toks, context_size=n_ctx, model=model
    ),
    st.binary(min_size=32, max_size=32),
    st.integers(0, 255),
    st.binary(min_size=32, max_size=32),
    st.lists(st.integers(0, 2**32 - 1), max_size=50),
    st.integers(0, 2**32 - 1),
    st.text(max_size=20),
)
payloads = st.binary(max_size=300)
logits_st = st.one_of(st.none(), st.binary(min_size=4, max_size=64).map(lambda b: b[: len(b) // 4 * 4]))
reasons = st.sampled_from(list(SaveReason))


@PROPS
@given(metas, payloads, logits_st, reasons, st.integers(0, 2**32 - 1))
def test_round_trip(meta: RowMeta, kv: bytes, logits: bytes | None, reason: SaveReason, hits: int) -> None:
    blob = kvc.encode(reason, meta, kv, logits, created_ns=123, hits=hits)
    row = kvc.decode(blob, expected_key=meta.key)
    assert bytes(row.kv) == kv
    assert (bytes(row.logits) if row.logits is not None else b"") == (logits or b"")
    h = row.info.header
    assert (h.save_reason, h.hits, h.created_ns, h.token_count) == (reason, hits, 123, meta.n_tokens)
    assert row.info.meta == meta
    assert row.info.key == meta.key
    light = kvc.read_info(io.BytesIO(blob), len(blob))
    assert light.meta == meta and light.header == h


@PROPS
@given(metas, payloads, logits_st, st.data())
def test_any_single_flipped_bit_is_detected(meta: RowMeta, kv: bytes, logits: bytes | None, data) -> None:
    blob = bytearray(kvc.encode(SaveReason.FINISH, meta, kv, logits))
    bit = data.draw(st.integers(0, len(blob) * 8 - 1))
    blob[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(KvcError):
        kvc.decode(bytes(blob), expected_key=meta.key)


@PROPS
@given(metas, payloads, st.data())
def test_any_truncation_or_extension_is_detected(meta: RowMeta, kv: bytes, data) -> None:
    blob = kvc.encode(SaveReason.COLD, meta, kv)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(KvcError) as exc:
        kvc.decode(blob[:cut])
    assert exc.value.reason == KvcError.TRUNCATED
    if cut >= HEADER_LEN:  # light parse sees the short file through its length
        with pytest.raises(KvcError, match="truncated"):
            kvc.read_info(io.BytesIO(blob[:cut]), cut)
    extra = data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(KvcError) as exc:
        kvc.decode(blob + extra)
    assert exc.value.reason == KvcError.TRAILING


def test_rejections_name_their_reason() -> None:
    meta = meta_for([1, 2, 3])
    blob = kvc.encode("cold", meta, b"kv")
    cases = {
        KvcError.BAD_MAGIC: b"NOTAKVC!" + blob[8:],
        KvcError.BAD_VERSION: blob[:8] + struct.pack("<H", 99) + blob[10:],
        KvcError.BAD_CRC: blob[:-1] + bytes([blob[-1] ^ 0xFF]),
        KvcError.TRUNCATED: blob[:10],
        KvcError.TRAILING: blob + b"\0",
    }
    for reason, bad in cases.items():
        with pytest.raises(KvcError) as exc:
            kvc.decode(bad, meta.key)
        assert exc.value.reason == reason, reason
    with pytest.raises(KvcError) as exc:
        kvc.decode(blob, expected_key=meta_for([1, 2, 4]).key)
    assert exc.value.reason == KvcError.KEY_MISMATCH


def _with_metadata(blob: bytes, body: dict[str, object]) -> bytes:
    """Re-encode a file's metadata map, keeping the header consistent."""
    meta_len = struct.unpack_from("<I", blob, 28)[0]
    payload = blob[HEADER_LEN + meta_len :]
    raw = msgpack.packb(body, use_bin_type=True)
    header = bytearray(blob[:HEADER_LEN])
    struct.pack_into("<I", header, 28, len(raw))
    struct.pack_into("<I", header, 68, kvc._header_crc(bytes(header), raw))
    return bytes(header) + raw + payload


def test_unknown_metadata_fields_are_ignored_and_missing_ones_rejected() -> None:
    meta = meta_for([5, 6, 7])
    blob = kvc.encode("finish", meta, b"state", b"\0" * 8)
    body = msgpack.unpackb(blob[HEADER_LEN : HEADER_LEN + struct.unpack_from("<I", blob, 28)[0]], raw=False)
    future = _with_metadata(blob, {**body, "added_in_v9": {"x": [1, 2]}, "temperature": 0.7})
    row = kvc.decode(future, meta.key)
    assert bytes(row.kv) == b"state" and row.info.meta == meta
    missing = {k: v for k, v in body.items() if k != "tokens"}
    with pytest.raises(KvcError) as exc:
        kvc.decode(_with_metadata(blob, missing), meta.key)
    assert exc.value.reason == KvcError.BAD_METADATA


def test_adapter_fold_is_checked() -> None:
    from actors.cache.key import effective_fingerprint

    base = b"\x01" * 32
    ads = ((b"\x02" * 32, 0.5),)
    good = RowMeta(
        fingerprint=effective_fingerprint(base, ads),
        quant=1,
        ctx_hash=b"\0" * 32,
        tokens=[1],
        base_fingerprint=base,
        adapters=ads,
    )
    kvc.decode(kvc.encode("cold", good, b"x"), good.key)
    lying = RowMeta(fingerprint=base, quant=1, ctx_hash=b"\0" * 32, tokens=[1], base_fingerprint=base, adapters=ads)
    with pytest.raises(KvcError) as exc:
        kvc.decode(kvc.encode("cold", lying, b"x"))
    assert exc.value.reason == KvcError.KEY_MISMATCH


@PROPS
@given(st.integers(0, 2**32 - 1))
def test_hit_count_is_rewritten_in_place(hits: int) -> None:
    meta = meta_for([1, 2])
    blob = bytearray(kvc.encode("cold", meta, b"abc"))
    blob[HITS_OFFSET : HITS_OFFSET + 8] = kvc.hits_field(hits)
    assert kvc.decode(bytes(blob), meta.key).info.header.hits == hits


def test_bad_metadata_inputs() -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        RowMeta(fingerprint=b"x", quant=1, ctx_hash=b"\0" * 32, tokens=[1])
    with pytest.raises(ValueError, match="outside"):
        RowMeta(fingerprint=b"\0" * 32, quant=1, ctx_hash=b"\0" * 32, tokens=[-1])
    with pytest.raises(ValueError, match="float32"):
        kvc.encode("cold", meta_for([1]), b"kv", b"\0" * 3)
    with pytest.raises(ValueError, match="reason"):
        kvc.encode("lukewarm", meta_for([1]), b"kv")
