"""The meta's writer pool: which writers are idle, the write jobs queued for one, the jobs in flight,
and who waits for the pool to be idle.

Its own module because it is bookkeeping of *who* writes and *when*, apart from
*what* is written: ``actors.cache.meta.MetaCore`` decides which rows, demotions
and quotas a job carries and what its outcome means for the index; this only
hands jobs to writers, queues them when every writer is busy, and fails the
jobs of a writer that died.  Writers are addresses (or objects) the outbox can
send a ``WriteJob`` to; one job runs per writer at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from actors.cache import messages as m
from actors.cache import publish


class Outbox(Protocol):
    def send(self, dest: Any, msg: Any) -> None: ...


@dataclass
class Job:
    """A write job, the writer running it (None while queued) and the reason of the save it carries."""

    job: m.WriteJob
    writer: Any
    reason: int


class WriterPool:
    def __init__(self, writers: Sequence[Any], queue_limit: int, outbox: Outbox) -> None:
        """``queue_limit``: jobs that may wait for a writer (``CacheConfig.writer_queue``)."""
        self.writers = list(writers)
        self.idle: deque[Any] = deque(self.writers)
        self.queue: deque[Job] = deque()
        self.jobs: dict[int, Job] = {}
        self._job_ids = itertools.count(1)
        self._waiters: list[tuple[Any, str]] = []
        self.queue_limit = queue_limit
        self.outbox = outbox

    @property
    def capacity(self) -> int:
        return len(self.writers) + self.queue_limit

    @property
    def in_flight(self) -> int:
        return len(self.jobs) + len(self.queue)

    def next_id(self) -> int:
        return next(self._job_ids)

    def submit(self, job: m.WriteJob, reason: int) -> None:
        if self.idle:
            writer = self.idle.popleft()
            self.jobs[job.job_id] = Job(job, writer, reason)
            self.outbox.send(writer, job)
        else:
            self.queue.append(Job(job, None, reason))

    def done(self, job_id: int, sender: Any) -> Job | None:
        """A job finished: its writer (or ``sender``, for a job not known) is idle again; the job, if known."""
        state = self.jobs.pop(job_id, None)
        writer = state.writer if state is not None else sender
        if writer is not None and writer in self.writers and writer not in self.idle:
            self.idle.append(writer)
        return state

    def drain(self) -> None:
        """Hand queued jobs to idle writers; once nothing is in flight, tell the waiters."""
        while self.queue and self.idle:
            nxt = self.queue.popleft()
            nxt.writer = self.idle.popleft()
            self.jobs[nxt.job.job_id] = nxt
            self.outbox.send(nxt.writer, nxt.job)
        if self.in_flight == 0:
            for dest, req_id in self._waiters:
                self.outbox.send(dest, m.Idle(req_id))
            self._waiters.clear()

    def wait_idle(self, dest: Any, req_id: str) -> None:
        """``Idle(req_id)`` goes to ``dest`` once nothing is in flight (at once, when nothing is)."""
        if self.in_flight == 0:
            self.outbox.send(dest, m.Idle(req_id))
        else:
            self._waiters.append((dest, req_id))

    def replace(self, dead: Any, replacement: Any) -> Iterator[m.WriteDone]:
        """A writer died: ``replacement`` takes its slot, and each of its jobs is failed.

        Iterate the result at once: one failed ``WriteDone`` per job of the dead writer, its staged
        files removed just before, for the caller to handle as the writer's answer (the row was never
        published, or is re-found by the next scan).  The replacement is not idle yet: the caller adds
        it once every failure is handled (``idle.append``, then ``drain``).
        """
        self.writers = [replacement if w == dead else w for w in self.writers]
        if dead in self.idle:
            self.idle.remove(dead)
        return self._failed(dead)

    def _failed(self, dead: Any) -> Iterator[m.WriteDone]:
        for job_id, state in list(self.jobs.items()):
            if state.writer == dead:
                for path in [state.job.staged_path, *(d.src_path for d in state.job.demotions)]:
                    if path:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)
                yield m.WriteDone(
                    job_id,
                    state.job.key,
                    publish.PublishOutcome.FAILED.value,
                    "",
                    0,
                    "writer died",
                    demoted=tuple(
                        m.DemotionDone(d.key, publish.PublishOutcome.FAILED.value, "", 0) for d in state.job.demotions
                    ),
                )
