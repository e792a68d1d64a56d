from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from actors.cache.counters import COUNTERS, Counters, Gauges, read_counters, read_gauges

FORK = mp.get_context("fork")


def _bump(directory: str, n: int) -> None:
    c = Counters.for_dir(directory)
    for _ in range(n):
        c.inc("hits_exact")
    c.add_many({"lookup_ns_total": 1000, "lookup_count": 1})


def test_increments_from_many_processes_are_never_lost(tmp_path: Path) -> None:
    d = str(tmp_path / "counters")
    Counters.for_dir(d).inc("hits_exact", 5)  # this process too
    procs = [FORK.Process(target=_bump, args=(d, 2000)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
        assert p.exitcode == 0
    values = read_counters(d)
    assert values["hits_exact"] == 5 + 3 * 2000
    assert values["lookup_count"] == 3 and values["lookup_ns_total"] == 3000
    # Exited processes keep counting: counters are cumulative.
    assert len(list(Path(d).glob("*.ctr"))) == 4


def test_gauges_are_absolute_and_single_sourced(tmp_path: Path) -> None:
    d = str(tmp_path / "counters")
    g = Gauges(d)
    g.set_many({"bytes_disk": 100, "rows_disk": 2})
    g.set_many({"bytes_disk": 40})
    assert read_counters(d)["bytes_disk"] == 40
    assert read_gauges(d)["rows_disk"] == 2
    g.close()


def test_reading_an_empty_or_missing_directory(tmp_path: Path) -> None:
    values = read_counters(str(tmp_path / "nothing"))
    assert set(COUNTERS) <= set(values) and not any(values.values())


def test_timed_accumulates(tmp_path: Path) -> None:
    d = str(tmp_path / "c")
    c = Counters.for_dir(d)
    with c.timed("load"):
        pass
    v = read_counters(d)
    assert v["load_count"] == 1 and v["load_ns_total"] > 0
