"""What a ``CacheClient`` lookup, load or save hands back: the hit kinds, ``Hit``, ``Loaded``, ``SaveResult``.

Its own module because these are the client's answers, not its machinery: the
model's side reads them (``actors.model.cache_use``), while ``actors.cache.client``
keeps the mirror, the ram tier and the copies to the file tiers.
``actors.cache.client`` re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.cache.key import decode_tokens

EXACT = "exact"
RESUME = "resume"
PREFIX = "prefix"


@dataclass(frozen=True)
class Hit:
    """A usable cached state for (a prefix of) the prompt.

    After restoring the row, positions ``[matched, row_tokens)`` must be
    dropped (``llama_memory_seq_rm(mem, seq, matched, -1)``); KV at
    positions below ``matched`` does not depend on later tokens, so the
    result is token-exact.  ``logits_usable`` is true only when the row
    carries logits for exactly position ``matched - 1``; otherwise, if
    ``matched == len(prompt)``, drop one more position and re-decode the
    last prompt token to get logits.
    """

    kind: str
    key: bytes
    matched: int
    row_tokens: int
    tier: str
    location: str
    size: int
    has_logits: bool

    @property
    def logits_usable(self) -> bool:
        return self.has_logits and self.matched == self.row_tokens

    @property
    def needs_truncation(self) -> bool:
        return self.matched < self.row_tokens


@dataclass(frozen=True)
class Loaded:
    """Restored row: ``kv``/``logits`` are read-only views (pass them to
    ``ffi.from_buffer``; call ``bytes()`` only if a copy is really needed)."""

    hit: Hit
    kv: memoryview
    logits: memoryview | None
    tokens: bytes

    def token_ids(self) -> list[int]:
        return decode_tokens(self.tokens)


@dataclass(frozen=True)
class SaveResult:
    key: bytes
    accepted: bool
    tier: str
    detail: str = ""
