"""Sequences of one context: which are free, which a sticky session keeps between turns.

A model context has ``n_seq_max`` sequences.  A request takes a free one at
admission and gives it back at its end, unless it runs under a
``session_id``: then the sequence stays pinned to the session with its KV,
so the next turn of that session prefills only its new tokens.  This table
is the one place that knows which sequence belongs to whom.

Letting a session go (``drop``) may save its state first (reasons
``evict`` and ``shutdown``), unpins its cache row and clears its KV.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from actors.model.backend import Backend
from actors.model.cache_use import CacheUse
from actors.model.validate import RequestError


@dataclass
class Session:
    seq: int
    tokens: list[int]
    logits: bool  # the sequence holds the logits of its last token (the next turn samples at once)
    key: bytes | None  # the pinned cache row of exactly these tokens, if one was saved
    last_used: float = field(default_factory=time.monotonic)


class SessionTable:
    def __init__(self, n_seq_max: int, backend: Backend, cache: CacheUse) -> None:
        self.backend = backend
        self.cache = cache
        self.free: list[int] = list(range(n_seq_max))
        self.sessions: dict[str, Session] = {}
        self.owner: dict[str, str] = {}  # session id -> the request in flight on it

    # ------------------------------------------------------------------ sequences

    def take(self) -> int:
        seq = self.free.pop(0)
        self.backend.seq_rm(seq)
        return seq

    def give_back(self, seq: int) -> None:
        self.backend.seq_rm(seq)
        self.free.append(seq)
        self.free.sort()

    # ------------------------------------------------------------------ sessions

    def busy(self, sid: str) -> bool:
        return sid in self.owner

    def idle_lru(self) -> str | None:
        """The least recently used session with no request in flight (the first to evict)."""
        idle = [(s.last_used, sid) for sid, s in self.sessions.items() if sid not in self.owner]
        return min(idle)[1] if idle else None

    def keep(self, sid: str, seq: int, tokens: list[int], logits: bool, key: bytes | None) -> None:
        """A request under ``sid`` ended well: its sequence stays with the session (its row pinned)."""
        old = self.sessions.get(sid)
        if old is not None and old.key and old.key != key:
            self.cache.unpin(old.key)
        if key and (old is None or old.key != key):
            self.cache.pin(key)
        self.sessions[sid] = Session(seq, tokens, logits, key)

    def forget(self, sid: str | None, seq: int) -> None:
        """A request ended badly: its sequence is freed, and the session too if it held that sequence."""
        if sid is not None and sid in self.sessions and self.sessions[sid].seq == seq:
            s = self.sessions.pop(sid)
            self.cache.unpin(s.key)
        self.give_back(seq)

    def drop(self, sid: str, save_reason: str | None) -> bytes | None:
        """Let a session go (saved first when ``save_reason`` is given); returns its row's key."""
        s = self.sessions.pop(sid, None)
        if s is None:
            return None
        key = self.cache.save_session(s.seq, s.tokens, save_reason) if save_reason else None
        self.cache.unpin(s.key)
        self.give_back(s.seq)
        return key or s.key

    def end(self, sid: str) -> bool:
        if sid in self.owner:
            raise RequestError("sticky_busy", f"session {sid!r} has a request in flight")
        if sid not in self.sessions:
            return False
        self.drop(sid, None)
        return True

    def evict(self, sid: str | None) -> dict[str, Any]:
        """Save and let go one idle session, or all of them (``sid`` None)."""
        ids = [sid] if sid is not None else [s for s in self.sessions if s not in self.owner]
        keys = []
        n = 0
        for s in ids:
            if s in self.owner:
                raise RequestError("sticky_busy", f"session {s!r} has a request in flight")
            if s in self.sessions:
                n += 1
                key = self.drop(s, "evict")
                if key:
                    keys.append(key)
        return {"evicted": n, "keys": keys}

    def describe(self) -> list[dict[str, Any]]:
        return [{"session_id": sid, "seq": s.seq, "tokens": len(s.tokens), "busy": sid in self.owner,
                 "finish_key": s.key.hex() if s.key else None} for sid, s in self.sessions.items()]


__all__ = ["Session", "SessionTable"]
