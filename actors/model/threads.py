"""How many of its cores a model's llama.cpp context should use right now, from its own step times (pure).

Why: llama.cpp's OpenMP workers spin at every graph barrier (libgomp's
default wait policy spins for about 3 ms before it sleeps).  That is the
fastest choice on quiet cores, and a collapse on shared ones: when another
process takes one of the cores, every barrier waits for a worker the kernel
has descheduled.  Measured on the bundled model, 2-core host, one process
holding a core at 100%: 2 threads decode 0.4-1.1 tok/s, 1 thread 8-91 tok/s
(it never waits at a barrier).  A passive wait policy avoids the collapse
but costs a third of the quiet rate (107 vs 171 tok/s), on every host, all
the time.  So the policy stays the fast one, and the thread count follows
the host: each model runs between 1 and its share of the node's cores
(``actors.supervisor.cores``) and moves by measurement.

The tuner is fed every decode step's duration (per row count, since a step
of four rows costs more than a step of one) and answers with a new thread
count or None:

* **collapse**: one step ``spike_factor`` times the best seen at this count
  (and row count) drops a thread at once (a collapsed step lasts up to a
  second: waiting for a window of them would cost seconds), and so does a
  window of steps whose median is ``slow_factor`` times that best;
* **probe down, once**, only where the host's own accounting is missing
  (``probe_down``; :mod:`actors.model.host_load` reads /proc/stat on
  Linux): a count below the current one that was never measured at this
  row count is tried for one window, one interval after the first step
  (so a short run pays nothing, and a host busy from the start is found
  out); on a quiet host the probe fails once and is never repeated,
  because later windows at full share are only ever compared with their
  own best.  Where the host says who holds its cores, that probe only
  costs a window at half speed on the first long reply and again at each
  new row count (measured: a cold chat turn's 48-token reply took 1.29 s
  instead of 1.03 s);
* **probe up**: below its share, every ``probe_every_s`` it tries one
  thread more for one window and keeps it only when that window is at
  least ``gain`` faster; a probe step that collapses ends the probe at
  once.  A failed probe doubles the interval (up to
  ``max_probe_every_s``), a kept one resets it.

The host's own accounting comes first (:mod:`actors.model.host_load`):
``limit(cap)`` with the cores the rest of the host leaves drops the count
before a step can collapse, and no probe goes above the cap.

A probe changes the decode thread count only (``settled`` stays what
prefill uses), so a prompt evaluated during a probe's window never runs
at the probed count.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class ThreadTuner:
    share: int  # the most threads this model may use (its share of the node's cores)
    current: int = 0  # threads in use now (0: the share)
    cap: int = 0  # the most the host leaves this model now (0: the share)
    window: int = 8
    slow_factor: float = 2.5
    spike_factor: float = 5.0
    gain: float = 0.95
    probe_every_s: float = 2.0
    max_probe_every_s: float = 30.0
    probe_down: bool = True  # try fewer threads once per row count (off where host_load sees the host)
    best: dict[tuple[int, int], float] = field(default_factory=dict)  # (threads, rows) -> best window median
    _steps: list[float] = field(default_factory=list)
    _rows: int = 0
    _probe_from: int = 0  # the count a probe started from (0: no probe running)
    _probe_ref: float = 0.0  # that count's last window median
    _last: dict[tuple[int, int], float] = field(default_factory=dict)  # (threads, rows) -> last window median
    _backoff: float = 0.0
    _next_probe: float = 0.0
    _capped_from: int = 0  # the count a host cap cut down from (0: none), restored when the cap lifts

    def __post_init__(self) -> None:
        if self.share < 1:
            raise ValueError(f"share must be >= 1, got {self.share}")
        self.current = min(self.current or self.share, self.share)
        self.cap = min(self.cap or self.share, self.share)
        self._backoff = self.probe_every_s

    def reshare(self, share: int, now: float) -> int:
        """The node gave this model a new share: run with all of it and measure again."""
        if share < 1:
            raise ValueError(f"share must be >= 1, got {share}")
        self.share = share
        self.current = share
        self.cap = share
        self.best.clear()
        self._last.clear()
        self._end_window()
        self._probe_from = 0
        self._capped_from = 0
        self._backoff = self.probe_every_s
        self._next_probe = now + self._backoff
        return self.current

    def _end_window(self) -> None:
        self._steps = []

    def _set(self, n: int) -> int:
        self.current = n
        self._end_window()
        return n

    def observe(self, now: float, seconds: float, rows: int) -> int | None:
        """One decode step of ``rows`` rows took ``seconds``; a new thread count, or None to keep this one."""
        if not self._next_probe:  # the first probe waits one interval: a short run on a quiet host pays none
            self._next_probe = now + self._backoff
        if rows != self._rows:
            self._rows = rows
            self._end_window()
        if self._probe_from and self._probe_ref and seconds > self.slow_factor * self._probe_ref:
            return self._probe_failed(now)  # one collapsed step is enough to end a probe
        best_here = self.best.get((self.current, rows))
        if (not self._probe_from and best_here is not None and self.current > 1
                and seconds > self.spike_factor * best_here):
            self._next_probe = now + self._backoff  # one collapsed step: a core was taken
            return self._set(self.current - 1)
        self._steps.append(seconds)
        if len(self._steps) < self.window:
            return None
        med = statistics.median(self._steps)
        key = (self.current, rows)
        self._last[key] = med
        best = self.best.get(key)
        self.best[key] = med if best is None else min(best, med)
        self._end_window()
        if self._probe_from:
            if med <= self.gain * self._probe_ref:  # the neighbour is faster: stay (prefill follows)
                self._probe_from = 0
                self._backoff = self.probe_every_s
                self._next_probe = now + self._backoff
                return self.current
            return self._probe_failed(now)
        if best is not None and self.current > 1 and med > self.slow_factor * best:
            self._next_probe = now + self._backoff  # contended: one thread fewer now, look again later
            return self._set(self.current - 1)
        if now >= self._next_probe:
            target = self._probe_target(rows)
            if target:
                self._probe_from, self._probe_ref = self.current, med
                return self._set(target)
        return None

    def limit(self, cap: int, now: float, clear: int | None = None) -> int | None:
        """The host leaves ``cap`` cores: a new count at once when above it, else None.

        ``clear`` (at most ``cap``): the cores the host leaves with a margin, the ones that are
        plainly free.  A count the cap took away comes back at once as far as ``clear`` allows,
        without a probe: the cut came from the host's accounting, not from a step time, and the
        count before it was the measured one (a turn at one thread until a probe found that out
        again cost a chat ~10% of its prefill).  A cap that rose only because our own threads
        squeezed the other process (a busy loop gets two thirds of a core beside two spinning
        threads) is not that: going back at once collapsed every other step, so it is left to the
        probes, which measure."""
        cap = max(1, min(cap, self.share))
        clear = cap if clear is None else max(1, min(clear, cap))
        rose, self.cap = cap > self.cap, cap
        if self.current > cap:
            self._capped_from = max(self._capped_from, self.current)
            self._probe_from = 0
            self._next_probe = now + self._backoff
            return self._set(cap)
        if rose and self._capped_from > self.current and not self._probe_from and clear > self.current:
            back = min(clear, self._capped_from)
            if back == self._capped_from:
                self._capped_from = 0
            return self._set(back)
        if rose and self.current < cap and not self._probe_from:
            self._next_probe = now  # cores came free: try one more at the end of this window
        return None

    def _probe_target(self, rows: int) -> int:
        """The count to try next (0: none): one more below the cap, else one fewer if never measured."""
        if self.current < min(self.share, self.cap):
            return self.current + 1
        lower = self.current - 1
        if self.current < self.share:
            return 0  # held down by the host: nothing to learn below
        if self.probe_down and lower >= 1 and (lower, rows) not in self.best:
            return lower
        return 0

    @property
    def settled(self) -> int:
        """The count outside a probe: what prefill steps use while a probe tries another for decode."""
        return self._probe_from or self.current

    def _probe_failed(self, now: float) -> int:
        back = self._probe_from
        self._probe_from = 0
        self._backoff = min(self.max_probe_every_s, self._backoff * 2)
        self._next_probe = now + self._backoff
        return self._set(back)


__all__ = ["ThreadTuner"]
