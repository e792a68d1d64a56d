"""The write-behind writer: one thread in a model process that copies ram rows to a file tier.

Why a thread here and not the writer actors: the bytes of a ram row already
sit in this process, packed.  Handing them to a writer process would cost a
staging copy on tmpfs (or a pickled multi-megabyte message) before the
writer even starts; this thread writes them straight into the tier's tmp
file with the crash-safe publish protocol (:func:`actors.cache.publish.
publish_parts`) and then tells the meta in one small message (``RowWritten``).
Measured per 9 MB row (``bench/warmth_bench.py``, ``write_costs``): the
staging path costs the model's tick ~9 ms of CPU and a writer process ~15 ms
more; this thread costs the tick nothing and itself ~8.5 ms of CPU.

Rules it keeps:

* the owner (the model's worker thread) never waits for it: :meth:`offer`
  takes a short lock, applies :func:`~actors.cache.write_policy.admit` and
  returns; a full queue skips the write and counts it;
* a key is written at most once: queued keys are deduplicated here, the
  owner skips rows whose copy is written or known;
* demotions (rows already gone from ram) go before write-behinds;
* :meth:`close` flushes within a time budget (graceful shutdown), then stops.

The thread touches no client state; results come back through
:meth:`completed`, which the owner drains on its own thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from actors.cache import kvc
from actors.cache import messages as m
from actors.cache.counters import Counters
from actors.cache.kvc import RowMeta, SaveReason
from actors.cache.publish import PublishOutcome, publish_parts
from actors.cache.write_policy import Admission, Job, QueueLimits, Verdict, admit, next_job


@dataclass(frozen=True)
class WriteRequest:
    """One row to copy: its ram announcement, what the file header needs, and the bytes."""

    info: m.RowInfo
    meta: RowMeta
    kv: bytes
    logits: bytes | None
    demotion: bool = False

    @property
    def key(self) -> bytes:
        return self.info.key

    @property
    def size(self) -> int:
        return len(self.kv) + (len(self.logits) if self.logits else 0)


@dataclass(frozen=True)
class WriteOutcome:
    key: bytes
    written: bool  # the file copy exists (published, or a valid one adopted)
    demotion: bool
    detail: str = ""
    notice: m.RowWritten | None = None  # for the meta, when the thread could not send it itself


@dataclass(frozen=True)
class FlushReport:
    written: int  # rows written while flushing
    skipped: int  # rows left unwritten when the budget ran out


class WriteBehind:
    """Bounded queue plus one lazily started writer thread for one file tier."""

    def __init__(
        self,
        tier: str,
        directory: str,
        limits: QueueLimits,
        announce: Callable[[m.RowWritten], None] | None,
        counters: Counters,
        client_id: str,
        *,
        ttl_s: float = 30.0,
        fsync: bool = True,
        nice: int = 0,
        hook: Callable[[bytes], None] | None = None,
    ) -> None:
        self.tier = tier
        self.directory = directory
        self.limits = limits
        self.client_id = client_id
        self.hook = hook  # test hook: runs in the writer thread before each write
        self._announce = announce
        self._counters = counters
        self._ttl_s = ttl_s
        self._fsync = fsync
        self._nice = nice
        self._cv = threading.Condition()
        self._jobs: list[Job] = []
        self._requests: dict[bytes, WriteRequest] = {}
        self._busy: bytes | None = None
        self._busy_demotion = False  # the row being written left ram meanwhile
        self._done: deque[WriteOutcome] = deque()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._written = 0  # rows published by the thread (only it writes this)

    # -- owner side -------------------------------------------------------------------

    def offer(self, req: WriteRequest, force: bool = False) -> Admission:
        """Queue a write unless the policy says otherwise; never blocks on I/O.

        ``force`` (the shutdown spill) ignores the queue limits: the spill is
        bounded by its time budget instead.
        """
        job = Job(req.key, req.size, req.demotion)
        with self._cv:
            if self._stopping:
                adm = Admission(Verdict.FULL)
            elif req.key == self._busy:
                # Being written now: a demotion of it needs nothing more than that write.
                promote = req.demotion and not self._busy_demotion
                self._busy_demotion = self._busy_demotion or req.demotion
                adm = Admission(Verdict.PROMOTED if promote else Verdict.DUPLICATE)
            else:
                limits = QueueLimits(1 << 62, 1 << 62) if force else self.limits
                adm = admit(self._jobs, job, limits)
                if adm.verdict is Verdict.QUEUED:
                    for key in adm.displaced:
                        self._jobs = [j for j in self._jobs if j.key != key]
                        self._requests.pop(key, None)
                    self._jobs.append(job)
                    self._requests[req.key] = req
                    self._ensure_thread()
                    self._cv.notify_all()
                elif adm.verdict is Verdict.PROMOTED:
                    self._jobs = [job if j.key == req.key else j for j in self._jobs]
                    self._requests[req.key] = req
        counts = {_VERDICT_COUNTER[adm.verdict]: 1}
        if adm.displaced:  # pushed out for a demotion: skipped like a write that found the queue full
            counts["write_behind_skipped"] = counts.get("write_behind_skipped", 0) + len(adm.displaced)
        self._counters.add_many(counts)
        return adm

    def completed(self) -> list[WriteOutcome]:
        """Outcomes since the last call (the owner applies them to its rows)."""
        out: list[WriteOutcome] = []
        while self._done:
            out.append(self._done.popleft())
        return out

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is queued or being written (tests, the shutdown flush)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._jobs or self._busy is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, budget_s: float = 0.0) -> FlushReport:
        """Write what is queued for at most ``budget_s``, then stop; the rest is skipped.

        A write in progress when the budget runs out is left to finish on its
        own (the thread is a daemon; the publish protocol makes an abandoned
        write harmless debris that the next sweep removes).
        """
        written_before = self._written
        if budget_s > 0:
            self.wait_idle(budget_s)
        with self._cv:
            self._stopping = True
            skipped = len(self._jobs)
            self._jobs.clear()
            self._requests.clear()
            self._cv.notify_all()
        thread = self._thread
        if thread is not None and budget_s > 0:
            thread.join(0.5)
        return FlushReport(self._written - written_before, skipped)

    # -- writer thread ----------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cache-write-behind", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        if self._nice:
            # Linux: nice is per thread, so only this writer yields to the model's threads.
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
        while True:
            with self._cv:
                while not self._jobs and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                i = next_job(self._jobs)
                assert i is not None
                job = self._jobs.pop(i)
                req = self._requests.pop(job.key)
                self._busy, self._busy_demotion = job.key, job.demotion
            try:
                if self.hook is not None:
                    self.hook(job.key)
                outcome = self._write(req)
            except Exception as exc:  # never lose the thread
                self._counters.inc("write_behind_failed")
                outcome = WriteOutcome(req.key, False, req.demotion, repr(exc))
            with self._cv:
                if self._busy_demotion and not req.demotion and outcome.written:
                    self._counters.inc("demotions")
                self._busy = None
                self._written += outcome.written
                self._done.append(outcome)
                self._cv.notify_all()

    def _write(self, req: WriteRequest) -> WriteOutcome:
        t0 = time.perf_counter_ns()
        logits = req.logits or b""
        crc = kvc.payload_crc(req.kv, logits or None)
        prefix = kvc.encode_prefix(SaveReason(req.info.reason), req.meta, len(req.kv), len(logits), crc,
                                   req.info.created_ns)
        res = publish_parts((prefix, req.kv, logits), self.directory, req.key, ttl_s=self._ttl_s, fsync=self._fsync)
        elapsed = time.perf_counter_ns() - t0
        if not res.outcome.row_available:
            # BUSY: another process is publishing this very key; it announces the row.
            name = "write_behind_deduped" if res.outcome is PublishOutcome.BUSY else "write_behind_failed"
            self._counters.inc(name)
            return WriteOutcome(req.key, False, req.demotion, res.detail)
        info = replace(req.info, tier=self.tier, location=res.path, size=res.size, owner=None)
        notice = m.RowWritten(info, self.client_id, req.demotion)
        if self._announce is not None:
            # Before reporting idle, so a flush that returned has told the meta too.
            self._announce(notice)
            notice = None
        counts = {"write_behind_written": 1, "write_behind_bytes": res.size, "write_behind_ns_total": elapsed}
        if req.demotion:
            counts["demotions"] = 1
        self._counters.add_many(counts)
        return WriteOutcome(req.key, True, req.demotion, notice=notice)



_VERDICT_COUNTER = {
    Verdict.QUEUED: "write_behind_queued",
    Verdict.PROMOTED: "write_behind_deduped",
    Verdict.DUPLICATE: "write_behind_deduped",
    Verdict.FULL: "write_behind_skipped",
}


def wait_while_exists(path: str) -> Callable[[bytes], None]:
    """The ``write_behind_gate`` hook: the writer waits while ``path`` exists, so a test can hold
    the writer of another process (a model's) without relying on timing."""

    def wait(_key: bytes) -> None:
        while os.path.exists(path):
            time.sleep(0.01)

    return wait
