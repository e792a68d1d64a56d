"""Execution of write jobs, shared by the writer actors and the standalone pool.

A job may carry demotions (ram_file rows copied to disk) and one new
row.  Demotions run first so the ram_file directory never holds more
than its quota while the new row is written.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable

from actors.cache import messages as m
from actors.cache.publish import Hook, PublishOutcome, publish_file


def execute(job: m.WriteJob, hook: Hook | None = None) -> m.WriteDone:
    t0 = time.perf_counter_ns()
    demoted = []
    for d in job.demotions:
        res = publish_file(d.src_path, d.directory, d.key, ttl_s=job.ttl_s, fsync=job.fsync, move=False)
        # The meta already released the source's ram_file bytes when it
        # planned the demotion, so the source goes whatever the outcome.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(d.src_path)
        demoted.append(m.DemotionDone(d.key, res.outcome.value, res.path, res.size))
    if job.key is None or job.staged_path is None:
        return m.WriteDone(
            job.job_id, None, PublishOutcome.PUBLISHED.value, "", 0, "", time.perf_counter_ns() - t0, tuple(demoted)
        )
    res = publish_file(job.staged_path, job.directory, job.key, ttl_s=job.ttl_s, fsync=job.fsync, hook=hook)
    if not res.outcome.row_available or os.path.exists(job.staged_path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(job.staged_path)
    return m.WriteDone(
        job.job_id,
        job.key,
        res.outcome.value,
        res.path,
        res.size,
        res.detail,
        time.perf_counter_ns() - t0,
        tuple(demoted),
    )


class ThreadWriter:
    """One writer thread for the standalone service; takes one job at a time."""

    def __init__(self, name: str, done: Callable[[m.WriteDone, ThreadWriter], None]) -> None:
        self.name = name
        self._done = done
        self._jobs: queue.Queue[m.WriteJob | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: m.WriteJob) -> None:
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                done = execute(job)
            except Exception as exc:  # never lose the pool slot
                done = m.WriteDone(job.job_id, job.key, PublishOutcome.FAILED.value, "", 0, repr(exc))
            self._done(done, self)

    def stop(self, timeout: float = 5.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)

    def __repr__(self) -> str:
        return f"ThreadWriter({self.name})"
