"""Putting a cached row back into a sequence: the one path every restore takes.

Both a request's admission and a speculative verify need the same steps —
best row for the tokens, its state loaded, unpacked into the sequence and cut
to the matched length — and differ only in what they do next.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.model.errors import LlamaError


def unpack_cached(backend: Any, cache: Any, seq: int, tokens: Sequence[int], fingerprint: bytes,
                  parent_key: bytes | None = None) -> tuple[Any, Any] | None:
    """Restore the best cached row for ``tokens`` into ``seq``; returns ``(hit, loaded)`` or None (a miss).

    On a failed unpack the sequence is emptied again and the LlamaError propagates.
    """
    hit = cache.lookup(fingerprint, backend.quant, backend.ctx_hash, tokens, parent_key)
    if hit is None:
        return None
    loaded = cache.load(hit)
    if loaded is None:
        return None
    try:
        backend.kv_unpack(seq, loaded.kv)
        if hit.needs_truncation:
            backend.seq_rm(seq, hit.matched, -1)
    except LlamaError:
        backend.seq_rm(seq)
        raise
    return hit, loaded
