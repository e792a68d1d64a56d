"""The cache in plain Python: meta logic and writer pool in this process.

For unit tests, the smoke example and tools that want the cache without
an actor system.  It runs exactly the code the actors run
(:class:`~actors.cache.meta.MetaCore`, :func:`~actors.cache.writer.execute`)
with threads instead of processes; ``writers=0`` runs each write job
synchronously inside ``save`` for fully deterministic tests.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from actors.cache import messages as m
from actors.cache.client import CacheClient
from actors.cache.config import CacheConfig
from actors.cache.counters import read_counters
from actors.cache.meta import MetaCore
from actors.cache.writer import ThreadWriter, execute


class _InlineWriter:
    """Placeholder writer handle: jobs are run after the current message."""

    def __repr__(self) -> str:
        return "InlineWriter"


class _Reply:
    def __init__(self) -> None:
        self.msg: Any = None

    def put(self, msg: Any) -> None:
        self.msg = msg


class CacheService:
    def __init__(self, config: CacheConfig, writers: int | None = None, remove_run_dir: bool = False) -> None:
        self.config = config.validate()
        n = config.writers if writers is None else writers
        self._lock = threading.RLock()
        self._idle_cv = threading.Condition(self._lock)
        self._inline = n == 0
        self._pending: deque[tuple[m.WriteJob, Any]] = deque()
        self._draining = False
        self._threads: list[ThreadWriter] = []
        if self._inline:
            handles: list[Any] = [_InlineWriter()]
        else:
            self._threads = [ThreadWriter(f"cache-writer-{i}", self._writer_done) for i in range(n)]
            handles = list(self._threads)
        self.core = MetaCore(config, self, handles, inline_snapshot_limit=1 << 62)
        self.start_stats = self.core.start()
        self._clients: list[CacheClient] = []
        self._remove_run_dir = remove_run_dir
        self._closed = False

    # -- Outbox ----------------------------------------------------------------------

    def send(self, dest: Any, msg: Any) -> None:
        if isinstance(dest, CacheClient):
            dest.deliver(msg)
        elif isinstance(dest, ThreadWriter):
            dest.submit(msg)
        elif isinstance(dest, _InlineWriter):
            self._pending.append((msg, dest))
        elif isinstance(dest, _Reply):
            dest.put(msg)

    def submit(self, msg: Any, sender: Any = None) -> None:
        with self._lock:
            self.core.handle(msg, sender)
            self._run_inline()
            self._idle_cv.notify_all()

    def _run_inline(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            while self._pending:
                job, writer = self._pending.popleft()
                try:
                    done = execute(job)
                except Exception as exc:
                    done = m.WriteDone(job.job_id, job.key, "failed", "", 0, repr(exc))
                self.core.handle(done, writer)
        finally:
            self._draining = False

    def _writer_done(self, done: m.WriteDone, writer: ThreadWriter) -> None:
        self.submit(done, writer)

    def _ask(self, msg: Any) -> Any:
        reply = _Reply()
        self.submit(msg, reply)
        return reply.msg

    # -- API -----------------------------------------------------------------------

    def client(self, client_id: str | None = None) -> CacheClient:
        holder: list[CacheClient] = []

        def send(msg: Any) -> None:
            self.submit(msg, holder[0] if holder else None)

        # Subscribe is sent from the constructor, before ``holder`` is set;
        # route that first message explicitly.
        pending: list[Any] = []

        def boot_send(msg: Any) -> None:
            if holder:
                send(msg)
            else:
                pending.append(msg)

        c = CacheClient(self.config, boot_send, client_id)
        holder.append(c)
        for msg in pending:
            send(msg)
        self._clients.append(c)
        return c

    def wait_idle(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._idle_cv:
            while self.core.in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle_cv.wait(left)
        return True

    def evict_bytes(self, n_bytes: int, tiers: Sequence[str]) -> m.Evicted:
        reply = self._ask(m.EvictBytes(n_bytes, tuple(tiers)))
        if isinstance(reply, m.ErrorReply):
            raise ValueError(str(reply))
        return reply

    def gc(self) -> dict[str, int]:
        return self._ask(m.Gc()).stats

    def dump(self) -> list[dict[str, object]]:
        return list(self._ask(m.Dump()).rows)

    def sweep(self) -> dict[str, int]:
        with self._lock:
            return self.core.sweep()

    def get_counters(self) -> dict[str, int]:
        return read_counters(self.config.counters_dir)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.wait_idle(10.0)
        for c in self._clients:
            c.close()
        for t in self._threads:
            t.stop()
        self.core.close()
        if self._remove_run_dir:
            shutil.rmtree(self.config.run_dir, ignore_errors=True)

    def __enter__(self) -> CacheService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
