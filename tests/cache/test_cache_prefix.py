from __future__ import annotations

import hashlib

from cachetest_util import PROPS
from hypothesis import given
from hypothesis import strategies as st

from actors.cache.key import encode_tokens
from actors.cache.prefix import (
    PrefixChain,
    PrefixIndex,
    chain_blob,
    chain_hashes,
    common_prefix_tokens,
    reference_prefix_hash,
    split_blob,
)

SEED = hashlib.sha256(b"ns").digest()
small_tokens = st.lists(st.integers(0, 7), max_size=120)  # tiny vocab: lots of shared prefixes
block_sizes = st.sampled_from([1, 2, 4, 8, 32])


def brute_common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@PROPS
@given(small_tokens, block_sizes)
def test_chain_agrees_with_hashing_each_prefix_directly(toks: list[int], b: int) -> None:
    tb = encode_tokens(toks)
    chain = chain_hashes(SEED, tb, b)
    assert len(chain) == len(toks) // b
    for i, h in enumerate(chain):
        assert h == reference_prefix_hash(SEED, encode_tokens(toks[: (i + 1) * b]), b)


@PROPS
@given(small_tokens, small_tokens, block_sizes, st.integers(0, 20))
def test_lazy_and_reused_chains_match_full_chain(a: list[int], b: list[int], bs: int, probe: int) -> None:
    full = chain_hashes(SEED, encode_tokens(b), bs)
    first = PrefixChain(SEED, encode_tokens(a), bs)
    first.all()
    second = PrefixChain(SEED, encode_tokens(b), bs, reuse=first)
    if full:
        assert second.get(min(probe, len(full) - 1)) == full[min(probe, len(full) - 1)]
    assert second.all() == full
    assert b"".join(full) == chain_blob(SEED, encode_tokens(b), bs)
    assert split_blob(chain_blob(SEED, encode_tokens(b), bs)) == full


@PROPS
@given(small_tokens, small_tokens)
def test_common_prefix_matches_brute_force(a: list[int], b: list[int]) -> None:
    assert common_prefix_tokens(encode_tokens(a), encode_tokens(b)) == brute_common(a, b)


@PROPS
@given(st.lists(small_tokens, min_size=1, max_size=8), small_tokens, st.sampled_from([1, 2, 4, 8]), st.data())
def test_index_finds_the_longest_row_sharing_a_block(
    rows: list[list[int]], prompt: list[int], bs: int, data: st.DataObject
) -> None:
    # Make some rows share a prefix with the prompt.
    rows = [data.draw(st.sampled_from([r, prompt[: len(r)] + r[len(prompt) :]])) for r in rows]
    index = PrefixIndex(max_candidates=64)
    stored: dict[bytes, bytes] = {}
    for i, r in enumerate(rows):
        key = bytes([i]) * 32
        tb = encode_tokens(r)
        stored[key] = tb
        index.add(key, chain_blob(SEED, tb, bs))
    chain = PrefixChain(SEED, encode_tokens(prompt), bs)
    match, probes = index.longest(chain, stored.get)

    expected = 0
    for r in rows:
        m = brute_common(r, prompt)
        if m >= bs:  # shares at least one full block
            expected = max(expected, m)
    if expected == 0:
        assert match is None
    else:
        assert match is not None
        assert match.matched == expected  # token-exact, not rounded to blocks
        assert stored[match.key][: 4 * expected] == encode_tokens(prompt[:expected])
    n_blocks = len(prompt) // bs
    assert probes <= 2 * max(n_blocks, 1).bit_length() + 2  # logarithmic, never a scan


@PROPS
@given(st.lists(small_tokens, min_size=1, max_size=6), st.sampled_from([1, 2, 4]), st.data())
def test_removed_rows_are_not_found(rows: list[list[int]], bs: int, data: st.DataObject) -> None:
    index = PrefixIndex(max_candidates=64)
    stored = {}
    for i, r in enumerate(rows):
        key = bytes([i]) * 32
        stored[key] = encode_tokens(r)
        index.add(key, chain_blob(SEED, stored[key], bs))
    gone = data.draw(st.sets(st.sampled_from(sorted(stored))))
    for key in gone:
        index.remove(key, chain_blob(SEED, stored[key], bs))
    left = {k: v for k, v in stored.items() if k not in gone}
    for tb in stored.values():
        match, _ = index.longest(PrefixChain(SEED, tb, bs), left.get)
        if match is not None:
            assert match.key in left
    if not left:
        assert len(index) == 0


def test_short_rows_and_prompts_match_only_whole_blocks() -> None:
    index = PrefixIndex()
    row = encode_tokens(list(range(40)))
    index.add(b"k" * 32, chain_blob(SEED, row, 32))
    # 31 shared tokens: no full block in common.
    miss, _ = index.longest(PrefixChain(SEED, encode_tokens(list(range(31)) + [999] * 10), 32), {b"k" * 32: row}.get)
    assert miss is None
    # A longer prompt: the row (40 tokens, not block aligned) is found in full.
    hit, _ = index.longest(PrefixChain(SEED, encode_tokens(list(range(100))), 32), {b"k" * 32: row}.get)
    assert hit is not None and hit.matched == 40


def test_hash_collision_never_yields_a_wrong_hit() -> None:
    """Force a holder whose stored tokens do not match the hashed blocks."""
    index = PrefixIndex()
    prompt = encode_tokens(list(range(64)))
    index.add(b"k" * 32, chain_blob(SEED, prompt, 32))
    lying = {b"k" * 32: encode_tokens([7] * 64)}
    match, _ = index.longest(PrefixChain(SEED, prompt, 32), lying.get)
    assert match is None


def test_other_namespaces_do_not_match() -> None:
    index = PrefixIndex()
    toks = encode_tokens(list(range(64)))
    index.add(b"k" * 32, chain_blob(SEED, toks, 32))
    other = hashlib.sha256(b"other model").digest()
    match, _ = index.longest(PrefixChain(other, toks, 32), {b"k" * 32: toks}.get)
    assert match is None
