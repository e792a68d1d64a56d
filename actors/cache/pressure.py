"""Memory-pressure sources and the watermark rule.

A source reports ``(used, total)`` bytes or None when it cannot measure
(no GPU, no driver, permission denied): an unavailable source never
triggers eviction and never raises into the poller.  The monitor asks
for eviction only at or above the high watermark, and then for enough
bytes to get back to the low watermark, so it does not flap around a
single threshold.

The GPU source measures device memory; evicting cache rows frees host
memory (ram and tmpfs tiers), so it is only a useful trigger where the
two share a pool (unified-memory systems) or as an operator signal.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import psutil


@dataclass(frozen=True)
class Reading:
    used: int
    total: int

    @property
    def fraction(self) -> float:
        return self.used / self.total if self.total > 0 else 0.0


class PressureSource(Protocol):
    name: str
    last_error: str

    def read(self) -> Reading | None: ...


class NoopSource:
    name = "noop"
    last_error = ""

    def read(self) -> Reading | None:
        return None


class SystemMemorySource:
    """Host memory via psutil; "used" is total minus available, the figure
    the kernel would have to reclaim from."""

    name = "system"

    def __init__(self) -> None:
        self.last_error = ""

    def read(self) -> Reading | None:
        try:
            vm = psutil.virtual_memory()
        except Exception as exc:
            self.last_error = repr(exc)
            return None
        return Reading(int(vm.total - vm.available), int(vm.total))


class GpuMemorySource:
    """Device memory via NVML.  Initialised lazily so the object pickles
    into another actor process; any NVML failure makes it unavailable."""

    name = "nvml"

    def __init__(self, device_index: int = 0) -> None:
        self.device_index = device_index
        self.last_error = ""
        self._handle: Any = None

    def __getstate__(self) -> dict[str, object]:
        return {"device_index": self.device_index, "last_error": self.last_error, "_handle": None}

    def read(self) -> Reading | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pynvml's own deprecation notice
                import pynvml

            if self._handle is None:
                pynvml.nvmlInit()
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.device_index)
            info = pynvml.nvmlDeviceGetMemoryInfo(self._handle)
        except Exception as exc:  # NVMLError, ImportError, missing libnvidia-ml
            self._handle = None
            self.last_error = f"{type(exc).__name__}: {exc}"
            return None
        return Reading(int(info.used), int(info.total))


class CallableSource:
    """Wraps ``fn() -> (used, total) | Reading | None``; exceptions count as
    unavailable.  Must be picklable (module-level function or partial) to
    be sent to the pressure actor."""

    name = "callable"

    def __init__(self, fn: Callable[[], Reading | tuple[int, int] | None]) -> None:
        self.fn = fn
        self.last_error = ""

    def read(self) -> Reading | None:
        try:
            value = self.fn()
        except Exception as exc:
            self.last_error = repr(exc)
            return None
        if value is None or isinstance(value, Reading):
            return value
        used, total = value
        return Reading(int(used), int(total))


class WatermarkError(ValueError):
    pass


def bytes_to_free(reading: Reading, high: float, low: float) -> int:
    """0 below ``high``; otherwise what gets usage down to ``low``."""
    if reading.total <= 0 or reading.fraction < high:
        return 0
    return max(int(reading.used - low * reading.total), 0)


@dataclass
class PressureMonitor:
    source: PressureSource
    high: float = 0.85
    low: float = 0.75
    tiers: tuple[str, ...] = ("ram", "ram_file")
    last_fraction: float | None = None
    available: bool = False
    evictions_requested: int = 0
    bytes_requested: int = 0
    polls: int = 0  # readings taken: a caller can tell "no pressure seen" from "not looked yet"

    def __post_init__(self) -> None:
        if not 0.0 < self.low < self.high <= 1.0:
            raise WatermarkError(f"watermarks: need 0 < low < high <= 1, got low={self.low} high={self.high}")
        if not self.tiers:
            raise WatermarkError("tiers: at least one tier to evict from")

    def poll(self) -> int:
        """Read the source once; bytes the cache should free (0 = nothing)."""
        reading = self.source.read()
        self.polls += 1
        self.available = reading is not None
        if reading is None:
            self.last_fraction = None
            return 0
        self.last_fraction = reading.fraction
        need = bytes_to_free(reading, self.high, self.low)
        if need:
            self.evictions_requested += 1
            self.bytes_requested += need
        return need


class PressureThread:
    """Standalone poller: calls ``evict(n_bytes, tiers)`` from a daemon thread."""

    def __init__(
        self, monitor: PressureMonitor, evict: Callable[[int, tuple[str, ...]], object], interval_s: float = 5.0
    ) -> None:
        self.monitor = monitor
        self._evict = evict
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cache-pressure", daemon=True)

    def start(self) -> PressureThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            need = self.monitor.poll()
            if need:
                self._evict(need, self.monitor.tiers)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval_s + 1.0)
