"""How many cores other processes of this host are using: a sample of /proc/stat against our own CPU time.

Why: a decode step time only says a core was taken *after* a step at the
old thread count has collapsed (with OpenMP workers spinning at every
barrier, one such step lasts up to a second).  The host's own accounting
says it before the step: the busy time of every CPU since the last
sample, minus this process's CPU time over the same interval, is what the
rest of the host used.  Read at most every ``min_interval_s`` at the start
of a step (two small reads, no thread); after an idle spell the first
sample covers the whole spell, so a process that took a core while this
model waited is seen before its first step.

The decision is the pure :func:`cores_left`; the tuner
(:mod:`actors.model.threads`) caps its thread count with it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

_TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)
LONG_WINDOW_S = 1.0  # a sample over at least this long covers an idle spell of the model
RUNNING_READS = 6  # reads of procs_running after an idle spell; the fewest counts (see HostLoad._running_others)
RUNNING_GAP_S = 0.002  # between those reads: up to 10 ms, paid only after a spell in which others held a core,
# and only until a read finds nothing else runnable (another llama.cpp process's workers spin 5-7 ms after its
# last graph, measured; a window of 1.5 ms capped every request of an interleaved chat to one thread)
THREAD_LOAD = 0.85  # the load of others that costs a thread in cores_left (floor of load + 0.15)


def cores_left(cpus: int, others_busy: float) -> int:
    """Whole cores this process can count on when the rest of the host keeps ``others_busy`` cores busy.

    A thread is given up only for a process that keeps most of a core (``others_busy`` past 0.85 of
    one): the model's own clients (a streaming subscriber, the HTTP server, the openai client parsing
    SSE) use a third to two thirds of a core while tokens flow and cost the spinning threads little,
    whereas giving up a thread halves the decode (measured: streaming decode fell from 1.07x to
    0.65-0.82x llama-server's with the line at half a core).  A busy process is seen at a request's
    start, when it has had a whole core while the model waited.  At least 1.
    """
    if cpus < 1:
        raise ValueError(f"cpus must be >= 1, got {cpus}")
    return max(1, min(cpus, cpus - math.floor(max(0.0, others_busy) + 1.0 - THREAD_LOAD)))


CLEAR_MARGIN = 0.5  # cores: what ``cores_left`` must still leave with this much more load to call a core free


def cores_clear(cpus: int, others_busy: float) -> int:
    """The cores plainly free: :func:`cores_left` with a margin, so a process squeezed to two thirds of
    a core by our own threads still counts as holding it (the tuner restores a capped count only
    this far at once)."""
    return cores_left(cpus, others_busy + CLEAR_MARGIN)


def sustained(previous: float | None, current: float, window_s: float, long_s: float = LONG_WINDOW_S,
              running_now: int | None = None) -> float:
    """The load to act on.  A short sample counts only as far as the sample before it agrees, so a burst
    (the kernel writing back our own rows, a short-lived process) costs no thread while a process that
    keeps a core busy does within two samples.  A sample over a long window (an idle spell) stands alone,
    but only as far as other tasks are runnable now (``running_now``): a process that took a core while
    the model waited and still runs is seen before the first step, while one that has finished meanwhile
    (another model of the node done with its turn, the other engine of a side-by-side benchmark) costs
    nothing.  Counting the whole spell capped the first prompt after every such spell to one thread."""
    if window_s >= long_s:
        return current if running_now is None else min(current, float(max(0, running_now)))
    if previous is None:
        return 0.0
    return min(previous, current)


@dataclass
class HostLoad:
    """The effectful part: samples /proc/stat and this process's CPU time (Linux; elsewhere it reports 0)."""

    min_interval_s: float = 0.25
    _last: tuple[float, float, float] | None = None  # (monotonic, host busy s, own cpu s)
    _previous: float | None = None  # the last sample's load, for :func:`sustained`

    @staticmethod
    def _own_running() -> int:
        """Threads of this process runnable now: the reader, and an OpenMP worker still spinning after a graph."""
        n = 0
        try:
            tasks = os.listdir("/proc/self/task")
        except OSError:
            return 1
        for tid in tasks:
            try:
                with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                    stat = f.read()
            except OSError:  # the thread ended meanwhile
                continue
            fields = stat.rpartition(b")")[2].split()
            n += bool(fields) and fields[0] == b"R"
        return max(1, n)

    @classmethod
    def _running_once(cls) -> int | None:
        """Tasks of other processes runnable on the host right now (``procs_running`` of /proc/stat, less ours).

        Our own count matters: a llama.cpp worker spins for a while after each graph, so
        ``procs_running - 1`` counted one of our own threads as another process holding a core
        (seen at the first step of a request, before the change)."""
        try:
            with open("/proc/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"procs_running "):
                        return max(0, int(line.split()[1]) - cls._own_running())
        except (OSError, ValueError, IndexError):
            return None
        return None

    @classmethod
    def _running_others(cls) -> int | None:
        """Tasks that stay runnable across :data:`RUNNING_READS` reads :data:`RUNNING_GAP_S` apart (the fewest seen).

        One read can catch whoever is handing this request over (the HTTP server that has
        just written it, a client, a kernel worker), or another model's OpenMP workers still
        spinning after its own request; beside a load that ended during the spell, that one
        task would cap the whole first prompt to one thread.  A process that holds a core is
        runnable at every read."""
        fewest: int | None = None
        for i in range(RUNNING_READS):
            if i:
                time.sleep(RUNNING_GAP_S)
            n = cls._running_once()
            if n is None:
                return fewest
            fewest = n if fewest is None else min(fewest, n)
            if fewest == 0:
                break
        return fewest

    @staticmethod
    def _host_busy_s() -> float | None:
        try:
            with open("/proc/stat", "rb") as f:
                fields = f.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != b"cpu":
            return None
        ticks = [int(x) for x in fields[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait; steal counts as busy
        guest = sum(ticks[8:10]) if len(ticks) > 9 else 0  # guest time is already inside user/nice
        return (sum(ticks) - idle - guest) * _TICK_S

    @classmethod
    def available(cls) -> bool:
        """Whether this host's accounting can be read (Linux /proc/stat); without it others_busy is always None."""
        return cls._host_busy_s() is not None

    def others_busy(self, now: float | None = None) -> float | None:
        """Cores the rest of the host kept busy, sustained (:func:`sustained`); None when too soon or unknown."""
        now = time.monotonic() if now is None else now
        if self._last is not None and now - self._last[0] < self.min_interval_s:
            return None
        host = self._host_busy_s()
        if host is None:
            return None
        t = os.times()
        own = t.user + t.system
        last, self._last = self._last, (now, host, own)
        if last is None:
            return None
        wall = now - last[0]
        if wall <= 0:
            return None
        current = max(0.0, ((host - last[1]) - (own - last[2])) / wall)
        # who still runs matters only when the spell's load would cost a thread (cores_left)
        running = self._running_others() if wall >= LONG_WINDOW_S and current >= THREAD_LOAD else None
        level, self._previous = sustained(self._previous, current, wall, running_now=running), current
        return level


__all__ = ["HostLoad", "cores_clear", "cores_left", "sustained"]
