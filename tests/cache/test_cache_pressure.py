from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from cachetest_util import meta_for, rand_tokens, reading_from_file

from actors.cache.pressure import (
    CallableSource,
    GpuMemorySource,
    PressureMonitor,
    PressureThread,
    Reading,
    SystemMemorySource,
    WatermarkError,
    bytes_to_free,
)
from actors.cache.service import CacheService
from tests.waiting import wait_until

GB = 1 << 30


def test_watermarks_with_a_callable_source() -> None:
    level = {"used": 50}
    mon = PressureMonitor(CallableSource(lambda: (level["used"], 100)), high=0.8, low=0.6)
    assert mon.poll() == 0 and mon.available and mon.last_fraction == 0.5
    level["used"] = 79
    assert mon.poll() == 0  # below high: nothing, even though above low
    level["used"] = 80
    assert mon.poll() == 20  # at high: back down to low
    level["used"] = 95
    assert mon.poll() == 35
    assert (mon.evictions_requested, mon.bytes_requested) == (2, 55)


def test_unavailable_sources_never_trigger() -> None:
    def broken() -> tuple[int, int]:
        raise RuntimeError("sensor gone")

    for source in (CallableSource(lambda: None), CallableSource(broken)):
        mon = PressureMonitor(source, 0.5, 0.4)
        assert mon.poll() == 0 and not mon.available and mon.last_fraction is None
    src = CallableSource(broken)
    src.read()
    assert "sensor gone" in src.last_error


@pytest.mark.parametrize(("high", "low"), [(0.5, 0.5), (0.4, 0.5), (1.5, 0.5), (0.5, 0.0)])
def test_bad_watermarks_are_rejected(high: float, low: float) -> None:
    with pytest.raises(WatermarkError, match="watermarks"):
        PressureMonitor(CallableSource(lambda: (1, 2)), high, low)


def test_system_memory_source_reads_psutil() -> None:
    reading = SystemMemorySource().read()
    assert reading is not None
    assert reading.total == psutil.virtual_memory().total
    assert 0 < reading.used < reading.total
    now = reading.fraction
    # Watermarks just under today's usage (an idle machine may use only a few percent).
    assert PressureMonitor(SystemMemorySource(), high=now * 0.5, low=now * 0.25).poll() > 0
    assert PressureMonitor(SystemMemorySource(), high=1.0, low=0.99).poll() == 0 or now >= 1.0


def test_gpu_source_degrades_without_a_driver() -> None:
    src = GpuMemorySource()
    reading = src.read()  # must not raise, with or without a GPU
    if reading is None:
        assert src.last_error
        assert PressureMonitor(src, 0.5, 0.4).poll() == 0
    else:
        assert 0 <= reading.used <= reading.total


def test_bytes_to_free() -> None:
    assert bytes_to_free(Reading(90, 100), 0.9, 0.5) == 40
    assert bytes_to_free(Reading(89, 100), 0.9, 0.5) == 0
    assert bytes_to_free(Reading(5, 0), 0.9, 0.5) == 0


def test_pressure_thread_evicts_from_the_service(make_config: Callable[..., object], tmp_path: Path) -> None:
    gauge = tmp_path / "mem"
    gauge.write_text(f"{GB // 2} {GB}")
    cfg = make_config(ram_file=8 << 20, default_tier="ram_file")
    with CacheService(cfg, writers=0) as svc:  # type: ignore[arg-type]
        c = svc.client()
        keys = [c.save("finish", meta_for(rand_tokens(64, seed=i)), b"\0" * 100_000).key for i in range(4)]
        assert svc.get_counters()["rows_ram_file"] == 4
        mon = PressureMonitor(CallableSource(functools.partial(reading_from_file, str(gauge))), 0.9, 0.8, ("ram_file",))
        thread = PressureThread(mon, lambda n, tiers: svc.evict_bytes(n, tiers), interval_s=0.02).start()
        try:
            assert wait_until(lambda: mon.polls >= 3)  # it has looked, at half the memory used
            assert svc.get_counters()["rows_ram_file"] == 4  # no pressure yet
            gauge.write_text(f"{GB - 150_000} {GB}")  # 150 KB short of total: above high
            wait_until(lambda: svc.get_counters()["rows_ram_file"] != 4, timeout=5)
        finally:
            thread.stop()
        counters = svc.get_counters()
        # Freeing ~200 MB empties ram_file; its rows were demoted, not lost.
        assert (counters["rows_ram_file"], counters["rows_disk"], counters["demotions"]) == (0, 4, 4)
        assert all(c.known(k) for k in keys)
