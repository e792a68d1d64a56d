from __future__ import annotations

import hashlib
import struct

import pytest
from cachetest_util import PROPS
from hypothesis import given
from hypothesis import strategies as st

from actors.cache.key import (
    LAYOUT_PARAMS,
    Adapter,
    KeyInputError,
    cache_key,
    ctx_params_hash,
    decode_tokens,
    effective_fingerprint,
    encode_tokens,
    key_material,
    namespace,
    quant_byte,
)

digests = st.binary(min_size=32, max_size=32)
token_lists = st.lists(st.integers(0, 2**32 - 1), max_size=64)
quants = st.integers(0, 255)


@PROPS
@given(digests, quants, digests, token_lists)
def test_key_is_sha256_of_documented_layout(fp: bytes, q: int, ctx: bytes, toks: list[int]) -> None:
    material = fp + bytes([q]) + ctx + b"".join(struct.pack("<I", t) for t in toks)
    assert key_material(fp, q, ctx, encode_tokens(toks)) == material
    assert cache_key(fp, q, ctx, toks) == hashlib.sha256(material).digest()


@PROPS
@given(digests, quants, digests, token_lists, st.data())
def test_key_changes_when_any_input_changes(
    fp: bytes, q: int, ctx: bytes, toks: list[int], data: st.DataObject
) -> None:
    base = cache_key(fp, q, ctx, toks)
    which = data.draw(st.sampled_from(["fp", "quant", "ctx", "token", "append", "drop"]))
    if which == "fp":
        fp2 = data.draw(digests.filter(lambda x: x != fp))
        assert cache_key(fp2, q, ctx, toks) != base
    elif which == "quant":
        q2 = data.draw(quants.filter(lambda x: x != q))
        assert cache_key(fp, q2, ctx, toks) != base
    elif which == "ctx":
        ctx2 = data.draw(digests.filter(lambda x: x != ctx))
        assert cache_key(fp, q, ctx2, toks) != base
    elif which == "token" and toks:
        i = data.draw(st.integers(0, len(toks) - 1))
        new = data.draw(st.integers(0, 2**32 - 1).filter(lambda t: t != toks[i]))
        assert cache_key(fp, q, ctx, [*toks[:i], new, *toks[i + 1 :]]) != base
    elif which == "append":
        assert cache_key(fp, q, ctx, [*toks, data.draw(st.integers(0, 2**32 - 1))]) != base
    elif which == "drop" and toks:
        assert cache_key(fp, q, ctx, toks[:-1]) != base


@PROPS
@given(token_lists)
def test_token_encoding_round_trips(toks: list[int]) -> None:
    raw = encode_tokens(toks)
    assert len(raw) == 4 * len(toks)
    assert decode_tokens(raw) == toks
    assert encode_tokens(raw) == raw  # pre-encoded bytes pass through


def test_bad_key_inputs_have_reasons() -> None:
    with pytest.raises(KeyInputError, match="fingerprint"):
        cache_key(b"short", 1, b"\0" * 32, [1])
    with pytest.raises(KeyInputError, match="ctx_hash"):
        cache_key(b"\0" * 32, 1, b"\0" * 31, [1])
    with pytest.raises(KeyInputError, match="outside"):
        cache_key(b"\0" * 32, 1, b"\0" * 32, [1, -5])
    with pytest.raises(KeyInputError, match="outside"):
        encode_tokens([2**32])
    with pytest.raises(KeyInputError, match="quant"):
        quant_byte(256)
    with pytest.raises(KeyInputError, match="unknown quant"):
        quant_byte("q9_z")
    with pytest.raises(KeyInputError, match="multiple of 4"):
        encode_tokens(b"\0\0\0")


def test_quant_names_and_numbers_agree() -> None:
    assert quant_byte("Q4_K_M") == quant_byte(15) == 15
    assert quant_byte("f16") == 1


adapters = st.lists(
    st.tuples(digests, st.floats(-4, 4, allow_nan=False).map(lambda f: round(f, 3))), min_size=1, max_size=4
)


@PROPS
@given(digests, adapters, st.randoms())
def test_effective_fingerprint_ignores_attach_order(fp: bytes, ads: list[tuple[bytes, float]], rnd) -> None:
    shuffled = list(ads)
    rnd.shuffle(shuffled)
    assert effective_fingerprint(fp, ads) == effective_fingerprint(fp, shuffled)
    assert effective_fingerprint(fp, [Adapter(s, c) for s, c in ads]) == effective_fingerprint(fp, ads)


@PROPS
@given(digests, adapters, st.data())
def test_effective_fingerprint_separates_adapter_sets(fp: bytes, ads: list[tuple[bytes, float]], data) -> None:
    base = effective_fingerprint(fp, ads)
    assert base != fp
    assert effective_fingerprint(fp, []) == fp  # plain models keep their fingerprint
    i = data.draw(st.integers(0, len(ads) - 1))
    sha, scale = ads[i]
    rescaled = [*ads[:i], (sha, scale + 0.5), *ads[i + 1 :]]
    assert effective_fingerprint(fp, rescaled) != base
    assert effective_fingerprint(fp, ads[:i] + ads[i + 1 :]) != base
    assert effective_fingerprint(fp, [*ads, (data.draw(digests), 1.0)]) != base


def test_adapter_scale_must_be_finite() -> None:
    with pytest.raises(KeyInputError, match="finite"):
        effective_fingerprint(b"\0" * 32, [(b"\1" * 32, float("nan"))])
    assert effective_fingerprint(b"\0" * 32, [(b"\1" * 32, -0.0)]) == effective_fingerprint(
        b"\0" * 32, [(b"\1" * 32, 0.0)]
    )


BASE_CTX = {"n_ctx": 4096, "n_batch": 512, "type_k": "f16", "type_v": "f16", "flash_attn": False}


def test_ctx_hash_requires_layout_params() -> None:
    for p in LAYOUT_PARAMS:
        params = {k: v for k, v in BASE_CTX.items() if k != p}
        with pytest.raises(KeyInputError, match=p):
            ctx_params_hash(params)


@pytest.mark.parametrize(
    "change",
    [
        {"type_k": "q8_0"},
        {"type_v": "q8_0"},
        {"flash_attn": True},  # V transposition differs
        {"n_ctx": 8192},
        {"rope_freq_base": 1e6},
        {"n_batch": 1},
    ],
)
def test_ctx_hash_separates_layouts(change: dict[str, object]) -> None:
    assert ctx_params_hash({**BASE_CTX, **change}) != ctx_params_hash(BASE_CTX)


def test_ctx_hash_is_canonical() -> None:
    reordered = dict(reversed(list(BASE_CTX.items())))
    assert ctx_params_hash(reordered) == ctx_params_hash(BASE_CTX)
    assert ctx_params_hash({**BASE_CTX, "x": True}) != ctx_params_hash({**BASE_CTX, "x": 1})
    with pytest.raises(KeyInputError, match="finite"):
        ctx_params_hash({**BASE_CTX, "rope": float("inf")})
    with pytest.raises(KeyInputError, match="unsupported"):
        ctx_params_hash({**BASE_CTX, "x": [1]})


def test_namespace_separates_models() -> None:
    a = namespace(b"\1" * 32, 1, b"\2" * 32)
    assert a != namespace(b"\3" * 32, 1, b"\2" * 32)
    assert a != namespace(b"\1" * 32, 2, b"\2" * 32)
    assert a != namespace(b"\1" * 32, 1, b"\4" * 32)
