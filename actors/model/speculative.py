"""Speculative verification on a scratch sequence: restore or prefill the prefix, one forward pass.

Kept apart from the engine's request path: verify borrows a free sequence,
empties it again whatever happens, and never touches sessions.
"""

from __future__ import annotations

from typing import Any

from actors.model.errors import LlamaError
from actors.model.llama import Prefill
from actors.model.restore import unpack_cached
from actors.model.stream import accepted_prefix


def restore_prefix(backend: Any, cache: Any, seq: int, tokens: list[int]) -> int:
    """Load the longest cached prefix of ``tokens`` into ``seq``; returns its length (0: none)."""
    if cache is None or not tokens:
        return 0
    try:
        got = unpack_cached(backend, cache, seq, tokens, backend.fingerprint)
    except LlamaError:
        return 0  # emptied again: prefill from scratch
    return int(got[0].matched) if got else 0


def verify(backend: Any, cache: Any, seq: int, prefix: list[int], candidates: list[int],
           n_batch: int) -> dict[str, Any]:
    """How many candidates the model agrees with after ``prefix``, and its own next token."""
    try:
        backend.seq_rm(seq)
        head = prefix[:-1]
        done = restore_prefix(backend, cache, seq, head)
        while done < len(head):
            n = min(n_batch, len(head) - done)
            backend.step([Prefill(seq, head[done:done + n])])
            done += n
        argmax = backend.forward_argmax(seq, [prefix[-1], *candidates])
    finally:
        backend.seq_rm(seq)
    accepted = accepted_prefix(argmax, candidates)
    nxt = argmax[accepted]
    eog = bool(backend.is_eog(nxt))
    return {"accepted": accepted, "next": None if eog else nxt, "eog": eog}
