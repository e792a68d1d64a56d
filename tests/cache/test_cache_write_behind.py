"""Write-behind, demotion of evicted ram rows and the shutdown spill, through the standalone service.

Real files and the real writer thread; a test hook (an event the writer waits on) stands in for a
slow disk, so nothing here depends on timing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cachetest_util import CTX, FP, QUANT, listing, meta_for, rand_tokens

from actors.cache.client import CacheClient
from actors.cache.config import CacheConfig, ConfigError
from actors.cache.publish import row_name
from actors.cache.service import CacheService

KB = 1024
ROW = 20 * KB


def save(c: CacheClient, seed: int, size: int = ROW) -> tuple[bytes, bytes, list[int]]:
    tokens = rand_tokens(64, seed=seed)
    kv = os.urandom(size)
    res = c.save("finish", meta_for(tokens), kv, b"\1" * 64, tier="ram")
    assert res.accepted
    return res.key, kv, tokens


def lookup(c: CacheClient, tokens: list[int]):
    return c.lookup(FP, QUANT, CTX, tokens)


def disk_rows(cfg: CacheConfig) -> list[str]:
    return [n for n in listing(cfg.tier("disk").path) if n.endswith(".kvc")]


def ram_and_disk(make_config: Callable[..., CacheConfig], service: Callable[..., CacheService],
                 **kw: object) -> tuple[CacheConfig, CacheService, CacheClient]:
    """A ram tier in front of a disk tier (no ram_file), saves to ram, and one client."""
    cfg = make_config(ram_file=None, default_tier="ram", **kw)
    svc = service(cfg)
    return cfg, svc, svc.client()


class Gate:
    """Test hook: the writer thread waits here before each write until ``open``."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.waiting = threading.Event()

    def __call__(self, key: bytes) -> None:
        self.waiting.set()
        self.opened.wait(30)


def test_a_ram_save_is_written_behind_and_listed_while_ram_keeps_serving(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService]
) -> None:
    cfg, svc, c = ram_and_disk(make_config, service, write_behind=True)
    key, kv, tokens = save(c, 1)
    assert c.flush_writes()
    assert disk_rows(cfg) == [row_name(key)]
    hit = lookup(c, tokens)
    assert (hit.kind, hit.tier) == ("exact", "ram")  # the owner keeps its ram copy
    counters = svc.get_counters()
    assert (counters["write_behind_queued"], counters["write_behind_written"]) == (1, 1)
    assert (counters["rows_ram"], counters["rows_disk"]) == (1, 1)
    [row] = svc.dump()
    assert (row["tier"], row["ram_copy"]) == ("disk", c.client_id)  # cache ls: on disk, and in c's ram
    # Another process sees the file copy.
    other = svc.client()
    hit = lookup(other, tokens)
    assert (hit.kind, hit.tier) == ("exact", "disk")
    assert bytes(other.load(hit).kv) == kv


def test_evicted_ram_rows_are_demoted_to_disk_not_dropped(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService]
) -> None:
    cfg, svc, c = ram_and_disk(make_config, service, ram=2 * ROW + 500)  # write-behind off: demotion alone
    rows = [save(c, 10 + i) for i in range(4)]
    assert c.flush_writes()
    counters = svc.get_counters()
    assert (counters["demotions"], counters["evictions"]) == (2, 0)
    assert sorted(disk_rows(cfg)) == sorted(row_name(k) for k, _, _ in rows[:2])
    for key, kv, tokens in rows:
        hit = lookup(c, tokens)
        assert hit is not None and hit.kind == "exact" and hit.key == key
        assert hit.tier == ("disk" if key in (rows[0][0], rows[1][0]) else "ram")
        assert bytes(c.load(hit).kv) == kv


def test_without_a_file_tier_or_with_demotion_off_evictions_drop(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService]
) -> None:
    cfg, svc, c = ram_and_disk(make_config, service, ram=2 * ROW + 500, demote_to_disk=False)
    first = save(c, 20)
    for i in range(3):
        save(c, 21 + i)
    assert c.flush_writes()
    assert lookup(c, first[2]) is None
    counters = svc.get_counters()
    assert (counters["demotions"], counters["evictions"]) == (0, 2)
    assert disk_rows(cfg) == []


def test_a_row_written_behind_is_released_on_eviction_without_a_second_write(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService]
) -> None:
    cfg, svc, c = ram_and_disk(make_config, service, ram=2 * ROW + 500, write_behind=True)
    rows = []
    for i in range(5):
        rows.append(save(c, 30 + i))
        assert c.flush_writes()  # each copy is listed before the next save evicts
    counters = svc.get_counters()
    assert counters["write_behind_written"] == 5  # one write per row, evictions wrote nothing more
    assert (counters["demotions"], counters["evictions"]) == (3, 0)
    assert len(disk_rows(cfg)) == 5
    for key, kv, tokens in rows:
        hit = lookup(c, tokens)
        assert hit is not None and hit.key == key and bytes(c.load(hit).kv) == kv
    assert counters["rows_ram"] == 2 and counters["rows_disk"] == 5


def test_a_save_returns_while_the_writer_is_stuck_and_a_full_queue_skips(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService]
) -> None:
    cfg, svc, c = ram_and_disk(make_config, service, write_behind=True, write_behind_queue=2)
    gate = Gate()
    assert c.behind is not None
    c.behind.hook = gate
    first = save(c, 40)  # returns although the writer cannot write
    assert gate.waiting.wait(10)
    rest = [save(c, 41 + i) for i in range(3)]  # one being written, two queued, the last skipped
    counters = svc.get_counters()
    assert (counters["write_behind_queued"], counters["write_behind_skipped"], counters["write_behind_written"]) == (
        3, 1, 0)
    for _, _, tokens in [first, *rest]:
        assert lookup(c, tokens).tier == "ram"  # served from ram meanwhile
    gate.opened.set()
    assert c.flush_writes()
    counters = svc.get_counters()
    assert counters["write_behind_written"] == 3
    assert sorted(disk_rows(cfg)) == sorted(row_name(k) for k, _, _ in [first, *rest[:2]])
    # A key written is never queued again: saving the same row is a duplicate.
    assert c.save("finish", meta_for(first[2]), first[1], tier="ram").detail == "duplicate"


def test_a_demotion_pushes_out_a_queued_write_behind(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService]
) -> None:
    _cfg, svc, c = ram_and_disk(make_config, service, ram=2 * ROW + 500, write_behind=True, write_behind_queue=2)
    gate = Gate()
    assert c.behind is not None
    c.behind.hook = gate
    a = save(c, 50)  # taken by the writer, which waits
    assert gate.waiting.wait(10)
    b = save(c, 51)  # queued
    d = save(c, 52)  # queued; the queue is full; evicts a (being written: released)
    e = save(c, 53)  # evicts b (queued write-behind: promoted to a demotion), e is skipped or pushes out d
    gate.opened.set()
    assert c.flush_writes()
    for _key, kv, tokens in (a, b):  # both left ram and still hit, from disk
        hit = lookup(c, tokens)
        assert hit is not None and hit.tier == "disk" and bytes(c.load(hit).kv) == kv
    for _, _, tokens in (d, e):
        assert lookup(c, tokens).tier == "ram"
    counters = svc.get_counters()
    assert counters["evictions"] == 0 and counters["demotions"] == 2


def test_graceful_close_spills_ram_rows_and_a_restart_finds_them(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService]
) -> None:
    cfg, svc, c = ram_and_disk(make_config, service)  # nothing written during the run
    rows = [save(c, 60 + i) for i in range(3)]
    assert disk_rows(cfg) == []
    c.close(spill=True)
    assert sorted(disk_rows(cfg)) == sorted(row_name(k) for k, _, _ in rows)
    assert svc.get_counters()["spilled"] == 3
    svc.close()

    again = service(cfg)  # same directories: the startup scan lists the spilled rows
    c2 = again.client()
    for key, kv, tokens in rows:
        hit = lookup(c2, tokens)
        assert hit is not None and (hit.kind, hit.key, hit.tier) == ("exact", key, "disk")
        loaded = c2.load(hit)
        assert bytes(loaded.kv) == kv and bytes(loaded.logits) == b"\1" * 64


def test_a_spill_stops_at_its_budget_and_counts_what_it_left(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService]
) -> None:
    _cfg, svc, c = ram_and_disk(make_config, service, spill_budget_s=0.2)
    for i in range(3):
        save(c, 70 + i)
    gate = Gate()  # never opened: the disk "hangs"
    assert c.behind is not None
    c.behind.hook = gate
    c.close(spill=True)  # returns after the budget, not when the disk recovers
    counters = svc.get_counters()
    assert (counters["spilled"], counters["spill_skipped"]) == (0, 2)  # one was being written
    gate.opened.set()


def test_losing_the_file_copy_lists_the_ram_row_again(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService]
) -> None:
    cfg, svc, c = ram_and_disk(make_config, service, write_behind=True)
    key, kv, tokens = save(c, 80)
    assert c.flush_writes()
    assert svc.evict_bytes(1, ["disk"]).keys == (key,)  # the disk copy goes
    assert disk_rows(cfg) == []
    hit = lookup(c, tokens)
    assert hit is not None and hit.tier == "ram" and bytes(c.load(hit).kv) == kv
    counters = svc.get_counters()
    assert (counters["rows_ram"], counters["rows_disk"]) == (1, 0)
    # Pressure on ram now drops it for good, since no copy is left.
    assert svc.evict_bytes(1, ["ram"]).keys == (key,)
    assert lookup(c, tokens) is None


def test_ram_pressure_frees_written_rows_first_and_they_stay_on_disk(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService]
) -> None:
    _cfg, svc, c = ram_and_disk(make_config, service, write_behind=True)
    key, kv, tokens = save(c, 90)
    assert c.flush_writes()
    freed = svc.evict_bytes(1, ["ram"])
    assert freed.keys == (key,) and freed.freed >= ROW
    hit = lookup(c, tokens)
    assert hit is not None and hit.tier == "disk" and bytes(c.load(hit).kv) == kv
    counters = svc.get_counters()
    assert (counters["rows_ram"], counters["bytes_ram"], counters["rows_disk"]) == (0, 0, 1)
    assert (counters["demotions"], counters["evictions"]) == (1, 0)
    assert c.ram is not None and len(c.ram) == 0


def test_a_copy_that_cannot_fit_its_tier_is_removed_and_the_ram_row_stays(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService]
) -> None:
    cfg, svc, c = ram_and_disk(make_config, service, disk=ROW // 2, write_behind=True)
    _key, _, tokens = save(c, 95)
    assert c.flush_writes()
    assert disk_rows(cfg) == []
    assert lookup(c, tokens).tier == "ram"
    counters = svc.get_counters()
    assert (counters["saves_dropped"], counters["rows_disk"], counters["bytes_disk"]) == (1, 0, 0)


@pytest.mark.parametrize(("field", "value"), [
    ("write_behind_queue", 0), ("write_behind_bytes", -1), ("write_behind_nice", 20), ("write_behind_nice", True),
    ("spill_budget_s", -0.5), ("spill_budget_s", "5"),
])
def test_bad_write_behind_settings_name_their_field(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(ConfigError) as e:
        CacheConfig.create(tmp_path / "run", disk=(tmp_path / "disk", 1 << 20), **{field: value})
    assert e.value.key == field
