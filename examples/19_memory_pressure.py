"""19. Memory-pressure eviction: a poller frees cache rows from the ram tiers when memory runs short.

``System(pressure={...})`` adds a pressure actor to the cache's supervisor. Every ``interval_s`` it
reads a source (``used``, ``total`` bytes); at or above the ``high`` watermark it asks the cache to
free enough bytes to get back to ``low``, least recently used rows first, from ``tiers`` only (the disk
tier keeps its own quota). Shipped sources: ``SystemMemorySource`` (host memory via psutil, the usual
choice), ``GpuMemorySource`` (NVML) and ``CallableSource(fn)`` for your own measurement.

To make the pressure deterministic this example uses a callable source that reads a JSON file
(``_common.file_pressure``), and flips the file between 10% and 95% "used". The source runs in the
tree's processes, so it must be importable there (the system's serve process gets this script's
import path, its own folder included) and picklable (a module-level function wrapped in
``functools.partial``).

    .venv/bin/python examples/19_memory_pressure.py

Write-behind is off here so that pressure on ram is seen on its own: by default a ram row is also copied
to the next tier off the request path, and a row evicted under pressure stays warm there.
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _common
from _common import MODEL, fact, parser, running_system

from actors.api import System
from actors.cache.pressure import CallableSource

PROMPT = (
    "Weather report for the coast: a cold front arrives on Wednesday night with strong winds from the "
    "north west and heavy rain along the shore. Temperatures fall from eighteen to eleven degrees. Ferries "
    "may be cancelled on Thursday morning. The weekend will be dry and sunny again, with light winds and "
    "temperatures back up to twenty degrees.\nHeadline:"
)
TOTAL = 64 << 30  # the simulated machine: 64 GiB


def set_used(path: Path, fraction: float) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"used": int(fraction * TOTAL), "total": TOTAL}))
    tmp.replace(path)  # atomic: the poller never reads half a file


def wait_for(system: System, key: str, pred: Callable[[int], bool], timeout: float = 5.0) -> int:
    """Poll a cache counter (a file read, no message) until ``pred`` holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    value = system.cache_counters()[key]
    while not pred(value) and time.monotonic() < deadline:
        time.sleep(0.05)
        value = system.cache_counters()[key]
    return value


def polls(gauge: Path) -> int:
    """How many times the poller has read the gauge (``_common.file_pressure`` counts its reads)."""
    reads = Path(f"{gauge}.reads")
    return reads.stat().st_size if reads.exists() else 0


def main() -> None:
    args = parser(__doc__).parse_args()
    with tempfile.TemporaryDirectory(prefix="pressure-") as d:
        gauge = Path(d) / "memory.json"
        set_used(gauge, 0.10)
        pressure = {"source": CallableSource(functools.partial(_common.file_pressure, str(gauge))),
                    "high": 0.85, "low": 0.75, "interval_s": 0.2, "tiers": ("ram", "ram_file")}
        with running_system(args.port, pressure=pressure, write_behind=False) as system:
            system.load_model(MODEL)
            first = system.complete(MODEL, PROMPT, max_tokens=8)
            seen = polls(gauge)
            deadline = time.monotonic() + 30
            while polls(gauge) < seen + 3 and time.monotonic() < deadline:  # three more reads at 10% used
                time.sleep(0.05)
            warm = system.complete(MODEL, PROMPT, max_tokens=8)
            before = system.cache_counters()
            fact("first cache_hit_kind", first.cache_hit_kind)
            fact("repeat at 10% used cache_hit_kind", warm.cache_hit_kind)
            fact("rows_ram before pressure", before["rows_ram"])
            fact("evictions at 10% used", before["evictions"])
            fact("polls at 10% used", polls(gauge) - seen)

            set_used(gauge, 0.95)  # pressure: above the high watermark
            evictions = wait_for(system, "evictions", lambda v: v >= before["rows_ram"])
            set_used(gauge, 0.10)  # pressure gone
            fact("evictions at 95% used", evictions - before["evictions"])
            rows_ram = wait_for(system, "rows_ram", lambda v: v == 0, timeout=3.0)
            fact("rows_ram after pressure (idle model)", rows_ram)

            after = system.complete(MODEL, PROMPT, max_tokens=8)
            fact("repeat after pressure cache_hit_kind", after.cache_hit_kind)
            fact("identical replies", first.generated == warm.generated == after.generated)


if __name__ == "__main__":
    main()
