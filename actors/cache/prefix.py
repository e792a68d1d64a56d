"""Longest-prefix index over chained block hashes.

A prompt is cut into fixed blocks of ``block_size`` tokens and each full
block gets a chained hash ``h_i = SHA256(h_{i-1} | tokens of block i)``
seeded with the row namespace (fingerprint, quant, ctx hash).  Because
``h_i`` commits to the whole prefix, a row that has ``h_i`` also has every
``h_j`` with ``j < i``: the predicate "block i is indexed" is monotone in
``i`` and the deepest shared block is found with a galloping binary
search, O(log(prompt/B)) dictionary probes, never a scan over rows.

Past the deepest shared block the match is extended token by token
against a candidate row's stored tokens, so a hit can end anywhere, not
only on a block boundary.  That final comparison starts at token 0, so a
hash collision can only turn a hit into a miss, never into a wrong hit.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

DIGEST_LEN = 32
DEFAULT_BLOCK_SIZE = 32


def block_count(n_tokens: int, block_size: int) -> int:
    """Number of full blocks in ``n_tokens``; a trailing partial block is not hashed."""
    return n_tokens // block_size


def chain_hashes(
    seed: bytes,
    token_bytes: bytes,
    block_size: int,
    start: int = 0,
    prev: bytes | None = None,
    stop: int | None = None,
) -> list[bytes]:
    """Chained hashes of full blocks ``start..stop``; ``prev`` is ``h_{start-1}``.

    Kept as a plain loop over ``hashlib`` because the per-block cost is
    dominated by call overhead, and this is the one place a 32k-token
    lookup spends most of its time.
    """
    if block_size <= 0:
        raise ValueError(f"block_size: must be positive, got {block_size}")
    if len(seed) != DIGEST_LEN:
        raise ValueError(f"seed: expected {DIGEST_LEN} bytes, got {len(seed)}")
    step = block_size * 4
    n_blocks = len(token_bytes) // step
    if stop is not None:
        n_blocks = min(n_blocks, stop)
    h = seed if prev is None else prev
    sha = hashlib.sha256
    out: list[bytes] = []
    append = out.append
    for off in range(start * step, n_blocks * step, step):
        h = sha(h + token_bytes[off : off + step]).digest()
        append(h)
    return out


def chain_blob(seed: bytes, token_bytes: bytes, block_size: int) -> bytes:
    """All block hashes concatenated: the compact form stored per row."""
    return b"".join(chain_hashes(seed, token_bytes, block_size))


def split_blob(blob: bytes) -> list[bytes]:
    if len(blob) % DIGEST_LEN:
        raise ValueError(f"block hash blob: length {len(blob)} is not a multiple of {DIGEST_LEN}")
    return [blob[i : i + DIGEST_LEN] for i in range(0, len(blob), DIGEST_LEN)]


class PrefixChain:
    """Lazily computed chain for one prompt.

    Lazy because the galloping search usually needs only the hashes up
    to about twice the matched depth; ``reuse`` lets a follow-up prompt
    that extends the previous one (the multi-turn case) skip re-hashing
    the blocks both share.
    """

    __slots__ = ("_hashes", "block_size", "n_blocks", "seed", "token_bytes")

    def __init__(self, seed: bytes, token_bytes: bytes, block_size: int, reuse: PrefixChain | None = None) -> None:
        self.seed = seed
        self.token_bytes = token_bytes
        self.block_size = block_size
        self.n_blocks = len(token_bytes) // (4 * block_size)
        self._hashes: list[bytes] = []
        if reuse is not None and reuse.seed == seed and reuse.block_size == block_size and reuse._hashes:
            shared = min(len(reuse._hashes), self.n_blocks)
            if shared:
                shared = common_prefix_tokens(token_bytes, reuse.token_bytes, shared * block_size)
                shared //= block_size
                self._hashes = reuse._hashes[:shared]

    @property
    def computed(self) -> int:
        return len(self._hashes)

    def get(self, i: int) -> bytes:
        if i >= len(self._hashes):
            if i >= self.n_blocks:
                raise IndexError(f"block {i} beyond {self.n_blocks} full blocks")
            start = len(self._hashes)
            prev = self._hashes[-1] if self._hashes else None
            self._hashes.extend(chain_hashes(self.seed, self.token_bytes, self.block_size, start, prev, stop=i + 1))
        return self._hashes[i]

    def all(self) -> list[bytes]:
        if self.n_blocks:
            self.get(self.n_blocks - 1)
        return list(self._hashes)


def common_prefix_tokens(a: bytes | memoryview, b: bytes | memoryview, limit: int | None = None) -> int:
    """Length in tokens of the common prefix of two u32 token byte strings.

    Bisection over ``bytes`` slice equality (memcmp) rather than a
    per-token loop; plain bytes, because memoryview equality compares
    element by element and is ~70x slower.
    """
    a = a if type(a) is bytes else bytes(a)
    b = b if type(b) is bytes else bytes(b)
    n = min(len(a), len(b)) // 4
    if limit is not None:
        n = min(n, limit)
    if a[: n * 4] == b[: n * 4]:
        return n
    lo, hi = 0, n  # invariant: prefix of lo tokens equal, of hi tokens not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo * 4 : mid * 4] == b[lo * 4 : mid * 4]:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class PrefixMatch:
    """Result of a prefix search: which row, how many prompt tokens it covers."""

    key: bytes
    matched: int
    blocks: int
    probes: int


class PrefixIndex:
    """block hash -> keys of rows containing that block.

    Only the deepest matched block's holders are ever enumerated, and at
    most ``max_candidates`` of them (most recently added first), so a
    lookup stays O(log blocks) probes plus a bounded amount of token
    comparison even when thousands of rows share a system prompt.
    """

    def __init__(self, max_candidates: int = 8) -> None:
        self._blocks: dict[bytes, bytes | list[bytes]] = {}
        self.max_candidates = max_candidates

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self._blocks

    def add(self, key: bytes, blocks: bytes | Iterable[bytes]) -> None:
        # Most blocks (every block past a shared system prompt) have a
        # single holder: store the key itself and only grow a list when a
        # second row shares the block.  Saves ~70 bytes per block.
        hashes = split_blob(blocks) if isinstance(blocks, bytes) else blocks
        table = self._blocks
        for h in hashes:
            holders = table.get(h)
            if holders is None:
                table[h] = key
            elif type(holders) is list:
                holders.append(key)
            else:
                table[h] = [holders, key]

    def remove(self, key: bytes, blocks: bytes | Iterable[bytes]) -> None:
        hashes = split_blob(blocks) if isinstance(blocks, bytes) else blocks
        table = self._blocks
        for h in hashes:
            holders = table.get(h)
            if holders is None:
                continue
            if type(holders) is list:
                with contextlib.suppress(ValueError):
                    holders.remove(key)
                if len(holders) == 1:
                    table[h] = holders[0]
                elif not holders:
                    del table[h]
            elif holders == key:
                del table[h]

    def holders(self, block_hash: bytes) -> list[bytes]:
        holders = self._blocks.get(block_hash)
        if holders is None:
            return []
        return list(holders) if type(holders) is list else [holders]

    def deepest(self, chain: PrefixChain) -> tuple[int, int]:
        """(number of leading blocks indexed, probes spent).

        Galloping (1, 2, 4, ... blocks) then bisection: probes and hashing
        both scale with the matched depth, not the prompt length.
        """
        n = chain.n_blocks
        blocks = self._blocks
        probes = 1
        if n == 0 or chain.get(0) not in blocks:
            return 0, probes if n else 0
        lo, hi, step = 0, n, 1
        while True:
            nxt = min(lo + step, n - 1)
            if nxt == lo:
                break
            probes += 1
            if chain.get(nxt) in blocks:
                lo = nxt
                step *= 2
            else:
                hi = nxt
                break
        while hi - lo > 1:
            mid = (lo + hi) // 2
            probes += 1
            if chain.get(mid) in blocks:
                lo = mid
            else:
                hi = mid
        return lo + 1, probes

    def longest(
        self,
        chain: PrefixChain,
        row_tokens: Callable[[bytes], bytes | None],
    ) -> tuple[PrefixMatch | None, int]:
        """(best row sharing at least one full block with the prompt, probes).

        ``row_tokens`` returns a row's stored token bytes, or None if the
        row is gone or not usable by this caller.
        """
        n_blocks, probes = self.deepest(chain)
        if n_blocks == 0:
            return None, probes
        floor = n_blocks * chain.block_size
        best: PrefixMatch | None = None
        holders = self.holders(chain.get(n_blocks - 1))
        tried = 0
        for key in reversed(holders):
            if tried >= self.max_candidates:
                break
            tokens = row_tokens(key)
            if tokens is None:
                continue
            tried += 1
            matched = common_prefix_tokens(chain.token_bytes, tokens)
            if matched < floor:
                continue  # block-hash collision: never trust the hash alone
            if best is None or matched > best.matched:
                best = PrefixMatch(key, matched, n_blocks, probes)
        return best, probes


def reference_prefix_hash(seed: bytes, token_bytes: bytes, block_size: int) -> bytes | None:
    """Hash of the last full block computed straight from the prefix.

    The independent definition the chained implementation is tested
    against; not used on any hot path.
    """
    step = block_size * 4
    n = len(token_bytes) // step
    if n == 0:
        return None
    h = seed
    for i in range(n):
        h = hashlib.sha256(h + bytes(token_bytes[i * step : (i + 1) * step])).digest()
    return h
