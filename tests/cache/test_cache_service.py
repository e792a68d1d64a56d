"""Tiers, quotas, pins, restart and counters through the standalone service."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cachetest_util import CTX, FP, QUANT, listing, meta_for, rand_tokens

from actors.cache import kvc
from actors.cache.client import CacheClient, CacheError
from actors.cache.config import CacheConfig
from actors.cache.publish import row_name
from actors.cache.service import CacheService

KB = 1024


def save(client: CacheClient, tokens: list[int], size: int, tier: str, reason: str = "finish", logits: bool = False):
    kv = os.urandom(size)
    res = client.save(reason, meta_for(tokens), kv, b"\1" * 64 if logits else None, tier=tier)
    return res, kv


def file_size(tokens: list[int], kv_len: int) -> int:
    return len(kvc.encode("finish", meta_for(tokens), b"\0" * kv_len))


def lookup(client: CacheClient, tokens: list[int], parent: bytes | None = None):
    return client.lookup(FP, QUANT, CTX, tokens, parent_key=parent)


def test_smoke_flow_counts_one_save_one_miss_one_exact_hit(service: Callable[..., CacheService]) -> None:
    svc = service(ram=None, ram_file=None)
    c = svc.client()
    tokens = [1, 2, 3]
    assert lookup(c, tokens) is None
    res = c.save("cold", meta_for(tokens), b"hi", tier="disk")
    assert res.accepted
    hit = lookup(c, tokens)
    assert hit is not None and hit.kind == "exact" and hit.matched == 3
    loaded = c.load(hit)
    assert loaded is not None and bytes(loaded.kv) == b"hi" and loaded.token_ids() == tokens
    counters = svc.get_counters()
    assert (counters["saves_cold"], counters["misses"], counters["hits_exact"]) == (1, 1, 1)
    assert counters["bytes_disk"] == sum(p.stat().st_size for p in Path(svc.config.tier("disk").path).iterdir())


@pytest.mark.parametrize("tier", ["ram", "ram_file", "disk"])
def test_every_tier_is_a_real_save_target(service: Callable[..., CacheService], tier: str) -> None:
    svc = service()
    c = svc.client()
    tokens = rand_tokens(100, seed=3)
    res, kv = save(c, tokens, 10 * KB, tier, logits=True)
    assert res.accepted and res.tier == tier
    hit = lookup(c, tokens)
    assert hit is not None and hit.tier == tier and hit.logits_usable
    loaded = c.load(hit)
    assert loaded is not None and bytes(loaded.kv) == kv and bytes(loaded.logits) == b"\1" * 64
    assert svc.get_counters()[f"bytes_{tier}"] > 0
    assert svc.get_counters()[f"rows_{tier}"] == 1


def test_lookup_kinds_exact_resume_and_prefix(service: Callable[..., CacheService]) -> None:
    svc = service()
    c = svc.client()
    turn1 = rand_tokens(150, seed=4)
    r1, _ = save(c, turn1, 4 * KB, "disk")
    turn2 = turn1 + rand_tokens(70, seed=5)

    resume = lookup(c, turn2, parent=r1.key)
    assert resume is not None and (resume.kind, resume.matched, resume.key) == ("resume", 150, r1.key)

    # Stateless client: no parent key, the longest-prefix walk finds the
    # same 150-token row although 150 is not a multiple of the block size.
    walk = lookup(c, turn2)
    assert walk is not None and (walk.kind, walk.matched) == ("prefix", 150)
    assert not walk.needs_truncation

    # A prompt that diverges inside the row: restore and drop the tail.
    edited = turn1[:77] + [31999] * 100
    part = lookup(c, edited)
    assert part is not None and (part.kind, part.matched, part.row_tokens) == ("prefix", 77, 150)
    assert part.needs_truncation and not part.logits_usable

    # Shorter than one block in common: a miss.
    assert lookup(c, turn1[:20] + [1] * 100) is None
    counters = svc.get_counters()
    assert (counters["hits_resume"], counters["hits_longest_prefix"], counters["misses"]) == (1, 2, 1)
    assert counters["lookup_probes"] > 0 and counters["lookup_ns_total"] > 0


def test_rows_of_other_models_never_match(service: Callable[..., CacheService]) -> None:
    svc = service()
    c = svc.client()
    tokens = rand_tokens(100, seed=6)
    save(c, tokens, KB, "disk")
    assert c.lookup(b"\x01" * 32, QUANT, CTX, tokens) is None
    assert c.lookup(FP, QUANT + 1, CTX, tokens) is None
    assert c.lookup(FP, QUANT, b"\x02" * 32, [*tokens, 5]) is None


@pytest.mark.parametrize("tier", ["ram", "ram_file", "disk"])
def test_quota_is_enforced_lru_first_and_bytes_stay_true(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService], tier: str
) -> None:
    one = file_size(rand_tokens(64), 20 * KB) if tier != "ram" else 20 * KB
    quota = 3 * one + one // 2  # room for three rows
    cfg = make_config(**{tier: quota}, default_tier=tier, demote_to_disk=False)
    svc = service(cfg)
    c = svc.client()
    keys = []
    for i in range(5):
        res, _ = save(c, rand_tokens(64, seed=10 + i), 20 * KB, tier)
        assert res.accepted
        keys.append(res.key)
        if i == 2:
            assert lookup(c, rand_tokens(64, seed=10)) is not None  # touch row 0: now most recent
    counters = svc.get_counters()
    assert counters[f"rows_{tier}"] == 3
    assert counters[f"bytes_{tier}"] <= quota
    assert counters["evictions"] == 2
    present = {k for k in keys if c.known(k)}
    assert present == {keys[0], keys[3], keys[4]}  # rows 1 and 2 were least recently used
    if tier != "ram":
        on_disk = sum(p.stat().st_size for p in Path(cfg.tier(tier).path).iterdir())
        assert counters[f"bytes_{tier}"] == on_disk
        assert sorted(listing(cfg.tier(tier).path)) == sorted(row_name(k) for k in present)
    else:
        assert c.ram is not None and c.ram.used == counters["bytes_ram"]


@pytest.mark.parametrize("tier", ["ram", "disk"])
def test_save_that_cannot_fit_is_dropped_and_counted(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService], tier: str
) -> None:
    svc = service(make_config(**{tier: 30 * KB}, default_tier=tier))
    c = svc.client()
    small, _ = save(c, rand_tokens(64, seed=1), 10 * KB, tier)
    big, _ = save(c, rand_tokens(64, seed=2), 40 * KB, tier)
    assert small.accepted
    assert not c.known(big.key)
    assert c.known(small.key)  # a hopeless save does not wipe the tier
    assert svc.get_counters()["saves_dropped"] == 1


@pytest.mark.parametrize("tier", ["ram", "ram_file", "disk"])
def test_pinned_rows_survive_eviction(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService], tier: str
) -> None:
    one = file_size(rand_tokens(64), 20 * KB) if tier != "ram" else 20 * KB
    svc = service(make_config(**{tier: 2 * one + one // 2}, default_tier=tier, demote_to_disk=False))
    c = svc.client()
    first, _ = save(c, rand_tokens(64, seed=20), 20 * KB, tier)
    c.pin(first.key)
    for i in range(4):
        save(c, rand_tokens(64, seed=21 + i), 20 * KB, tier)
    assert c.known(first.key)
    freed = svc.evict_bytes(10**9, [tier])
    assert first.key not in freed.keys and c.known(first.key)
    c.unpin(first.key)
    assert first.key in svc.evict_bytes(10**9, [tier]).keys
    assert not c.known(first.key)


def test_only_pinned_rows_left_means_the_save_is_dropped(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService]
) -> None:
    one = file_size(rand_tokens(64), 20 * KB)
    svc = service(make_config(disk=one + 10))
    c = svc.client()
    first, _ = save(c, rand_tokens(64, seed=30), 20 * KB, "disk")
    c.pin(first.key)
    second, _ = save(c, rand_tokens(64, seed=31), 20 * KB, "disk")
    assert c.known(first.key) and not c.known(second.key)
    assert svc.get_counters()["saves_dropped"] == 1


def test_ram_file_rows_are_demoted_to_disk(
    make_config: Callable[..., CacheConfig], service: Callable[..., CacheService]
) -> None:
    one = file_size(rand_tokens(64), 20 * KB)
    cfg = make_config(ram_file=2 * one + 100, default_tier="ram_file")
    svc = service(cfg)
    c = svc.client()
    results = [save(c, rand_tokens(64, seed=40 + i), 20 * KB, "ram_file") for i in range(4)]
    counters = svc.get_counters()
    assert counters["demotions"] == 2 and counters["evictions"] == 0
    assert (counters["rows_ram_file"], counters["rows_disk"]) == (2, 2)
    hit = lookup(c, rand_tokens(64, seed=40))
    assert hit is not None and hit.tier == "disk"
    loaded = c.load(hit)
    assert loaded is not None and bytes(loaded.kv) == results[0][1]
    assert counters["bytes_ram_file"] == sum(p.stat().st_size for p in Path(cfg.tier("ram_file").path).iterdir())
    assert counters["bytes_disk"] == sum(p.stat().st_size for p in Path(cfg.tier("disk").path).iterdir())


def test_restart_scan_keeps_valid_rows_with_hits_and_removes_debris(
    make_config: Callable[..., CacheConfig], tmp_path: Path
) -> None:
    cfg = make_config(ram=None, ram_file=None)
    disk = Path(cfg.tier("disk").path)
    toks = [rand_tokens(64, seed=50 + i) for i in range(3)]
    with CacheService(cfg, writers=0) as svc:
        c = svc.client()
        keys = [save(c, t, 4 * KB, "disk")[0].key for t in toks]
        for _ in range(3):
            assert lookup(c, toks[0]) is not None  # row 0 becomes popular
        assert lookup(c, toks[1]) is not None
    # Debris a crash could leave, plus a corrupted row.
    (disk / f"{keys[0].hex()}.abc.tmp").write_bytes(b"half")
    (disk / f"{'ee' * 32}.kvc").write_bytes(b"LLAKVC\r\n garbage")
    bad = disk / row_name(keys[2])
    raw = bytearray(bad.read_bytes())
    raw[-1] ^= 0x40
    bad.write_bytes(bytes(raw))

    with CacheService(cfg.with_run_dir(str(tmp_path / "run2")), writers=0) as svc2:
        counters = svc2.get_counters()
        assert counters["tmp_removed"] == 1
        # The garbage file fails the light parse; the flipped payload bit
        # passes it and is caught by the CRC on first load.
        assert counters["corrupt_files"] == 1
        rows = {r["key"]: r for r in svc2.dump()}
        assert rows[keys[0].hex()]["hits"] == 3 and rows[keys[1].hex()]["hits"] == 1
        order = [r["key"] for r in sorted(rows.values(), key=lambda r: r["lru_rank"])]
        assert order.index(keys[0].hex()) > order.index(keys[1].hex())  # popular row is evicted last
        c2 = svc2.client()
        hit = lookup(c2, toks[2])
        assert hit is not None and c2.load(hit) is None  # bad payload never served
        after = svc2.get_counters()
        assert (after["load_failures"], after["corrupt_files"]) == (1, 2)
        assert lookup(c2, toks[2]) is None
        assert listing(disk) == sorted([row_name(keys[0]), row_name(keys[1])])
        assert after["rows_disk"] == 2


def test_full_writer_pool_drops_saves_without_blocking(make_config: Callable[..., CacheConfig], tmp_path: Path) -> None:
    cfg = make_config(writers=1, writer_queue=0)
    with CacheService(cfg, writers=1) as svc:
        # Stall the only writer with a job we control.
        import threading

        gate = threading.Event()
        writer = svc._threads[0]
        writer.submit_orig = writer.submit  # type: ignore[attr-defined]

        def slow_submit(job):
            def run() -> None:
                gate.wait(10)
                writer.submit_orig(job)  # type: ignore[attr-defined]

            threading.Thread(target=run, daemon=True).start()

        writer.submit = slow_submit  # type: ignore[method-assign]
        c = svc.client()
        first, _ = save(c, rand_tokens(64, seed=60), KB, "disk")
        second, _ = save(c, rand_tokens(64, seed=61), KB, "disk")
        assert first.accepted and not second.accepted and second.detail == "writer pool full"
        assert svc.get_counters()["saves_dropped"] == 1
        assert listing(cfg.staging_dir) == [n for n in listing(cfg.staging_dir) if n.startswith(first.key.hex())]
        gate.set()
        assert svc.wait_idle(10)
        assert c.known(first.key) and not c.known(second.key)


def test_duplicate_saves_are_dropped(service: Callable[..., CacheService]) -> None:
    svc = service()
    c = svc.client()
    tokens = rand_tokens(64, seed=70)
    assert save(c, tokens, KB, "disk")[0].accepted
    dup, _ = save(c, tokens, KB, "ram")
    assert not dup.accepted and dup.detail == "duplicate"
    assert svc.get_counters()["duplicate_dropped"] == 1


def test_evict_and_shutdown_saves_never_target_ram(service: Callable[..., CacheService]) -> None:
    svc = service()
    c = svc.client()
    res, _ = save(c, rand_tokens(64, seed=80), KB, "ram", reason="shutdown")
    assert res.tier == "ram_file" and svc.get_counters()["saves_shutdown"] == 1


def test_gc_forgets_vanished_files_and_sweeps(service: Callable[..., CacheService]) -> None:
    svc = service()
    c = svc.client()
    res, _ = save(c, rand_tokens(64, seed=90), KB, "disk")
    os.unlink(os.path.join(svc.config.tier("disk").path, row_name(res.key)))
    stats = svc.gc()
    assert stats["vanished"] == 1 and not c.known(res.key)
    assert svc.get_counters()["bytes_disk"] == 0


def test_gc_removes_and_counts_a_kvc_file_without_a_key_name(service: Callable[..., CacheService]) -> None:
    svc = service()
    c = svc.client()
    res, _ = save(c, rand_tokens(64, seed=91), KB, "disk")
    disk = svc.config.tier("disk").path
    garbage = os.path.join(disk, "garbage.kvc")
    with open(garbage, "wb") as f:
        f.write(b"not a row")
    before = svc.get_counters()["corrupt_files"]
    stats = svc.gc()
    assert stats["corrupt_files"] == 1 and not os.path.exists(garbage)
    assert svc.get_counters()["corrupt_files"] == before + 1
    assert c.known(res.key) and os.path.exists(os.path.join(disk, row_name(res.key)))  # real rows stay


def test_bad_requests_raise_with_a_reason(service: Callable[..., CacheService]) -> None:
    svc = service(ram_file=None)
    c = svc.client()
    with pytest.raises(CacheError, match="not configured"):
        c.save("cold", meta_for([1]), b"x", tier="ram_file")
    with pytest.raises(CacheError, match="float32"):
        c.save("cold", meta_for([1]), b"x", b"abc", tier="disk")
    with pytest.raises(ValueError, match="reason"):
        c.save("tepid", meta_for([1]), b"x")
    with pytest.raises(ValueError, match="unknown"):
        svc.evict_bytes(1, ["floppy"])


def test_threaded_writers_publish_everything(make_config: Callable[..., CacheConfig]) -> None:
    cfg = make_config(writers=2, writer_queue=8)
    with CacheService(cfg) as svc:
        c = svc.client()
        keys = [save(c, rand_tokens(64, seed=100 + i), 8 * KB, "disk")[0].key for i in range(8)]
        assert svc.wait_idle(20)
        assert all(c.known(k) for k in keys)
        assert svc.get_counters()["saves_finish"] == 8
        assert listing(cfg.staging_dir) == []
