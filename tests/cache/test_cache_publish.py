"""Crash safety of the publish protocol, with real processes killed mid-way."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest
from cachetest_util import listing, meta_for, rand_tokens

from actors.cache import kvc, publish
from actors.cache.config import CacheConfig
from actors.cache.publish import STEPS, PublishOutcome, publish_file, publish_parts, row_name, row_path, sweep_dir
from actors.cache.service import CacheService
from actors.cache.tiers import DirTier

FORK = mp.get_context("fork")
LATE_STEPS = ("link", "dir_fsync", "release")  # the row is complete and visible from here on


def _stage(path: Path, tokens: list[int], size: int = 64 * 1024) -> tuple[bytes, bytes]:
    meta = meta_for(tokens)
    kv = os.urandom(size)
    path.write_bytes(kvc.encode("finish", meta, kv, b"\0" * 16))
    return meta.key, kv


def _publish_and_die(staged: str, directory: str, key: bytes, step: str, mode: str) -> None:
    def hook(s: str) -> None:
        if s == step:
            os.kill(os.getpid(), signal.SIGKILL)

    if mode == "parts":  # the write-behind path: the bytes are in memory, written into the tmp file
        data = Path(staged).read_bytes()
        publish_parts((data[:100], data[100:]), directory, key, hook=hook, chunk=4096)
    else:
        publish_file(staged, directory, key, hook=hook, force_copy=mode == "copy", chunk=4096)
    os._exit(3)  # the step was never reached


# A hard-linked tmp file (staging on the tier's filesystem) has no partial state.
KILL_POINTS = [(s, mode) for mode in ("link", "copy", "parts") for s in STEPS
               if not (mode == "link" and s == "tmp_partial")]


@pytest.mark.parametrize(("step", "mode"), KILL_POINTS)
def test_sigkill_at_each_step_leaves_no_torn_row(tmp_path: Path, step: str, mode: str) -> None:
    tier = tmp_path / "disk"
    tier.mkdir()
    staged = tmp_path / "staged.kvc"
    tokens = rand_tokens(100, seed=1)
    key, kv = _stage(staged, tokens)

    child = FORK.Process(target=_publish_and_die, args=(str(staged), str(tier), key, step, mode))
    child.start()
    child.join(20)
    assert child.exitcode == -signal.SIGKILL

    final = row_path(str(tier), key)
    visible = os.path.exists(final)
    assert visible == (step in LATE_STEPS)
    if visible:  # visible means complete: never torn
        row = kvc.decode(Path(final).read_bytes(), expected_key=key)
        assert bytes(row.kv) == kv

    # A restarted cache serves the row only if it is whole, and cleans up.
    cfg = CacheConfig.create(tmp_path / "run", ram=None, disk=(tier, 1 << 30))
    with CacheService(cfg, writers=0) as svc:
        assert listing(tier) == ([row_name(key)] if visible else [])
        client = svc.client()
        hit = client.lookup(meta_for(tokens).fingerprint, 1, meta_for(tokens).ctx_hash, tokens)
        assert (hit is not None) == visible
        if hit is not None:
            loaded = client.load(hit)
            assert loaded is not None and bytes(loaded.kv) == kv
        tmp_left = step in ("tmp_open", "tmp_partial", "tmp_written", "tmp_fsync", "check", "link")
        assert svc.get_counters()["tmp_removed"] == int(tmp_left)

    # Cleanup converged: a second scan finds nothing to remove.
    again = DirTier("disk", str(tier), 1 << 30).scan(32, 30.0, 120.0)
    assert (again.tmp_removed, again.reservations_removed, again.corrupt) == (0, 0, 0)

    # And the key can be published again.
    if not staged.exists():
        _stage(staged, tokens)
    res = publish_file(str(staged), str(tier), key)
    assert res.outcome is (PublishOutcome.ADOPTED if visible else PublishOutcome.PUBLISHED)
    assert listing(tier) == [row_name(key)]


def _race(staged: str, directory: str, key: bytes, barrier, results) -> None:
    barrier.wait(10)
    res = publish_file(staged, directory, key)
    results.put(res.outcome.value)


def test_two_writers_race_on_one_key(tmp_path: Path) -> None:
    tier = tmp_path / "disk"
    tier.mkdir()
    for round_ in range(4):
        tokens = rand_tokens(64, seed=100 + round_)
        a, b = tmp_path / f"a{round_}.kvc", tmp_path / f"b{round_}.kvc"
        key, kv = _stage(a, tokens)
        b.write_bytes(a.read_bytes())
        barrier, results = FORK.Barrier(2), FORK.Queue()
        procs = [FORK.Process(target=_race, args=(str(p), str(tier), key, barrier, results)) for p in (a, b)]
        for p in procs:
            p.start()
        outcomes = sorted(results.get(timeout=20) for _ in procs)
        for p in procs:
            p.join(10)
        assert outcomes.count("published") == 1, outcomes
        assert set(outcomes) <= {"published", "adopted", "busy", "lost_reservation"}
        assert bytes(kvc.decode(Path(row_path(str(tier), key)).read_bytes(), key).kv) == kv
    # No debris: only the four published rows.
    assert all(name.endswith(".kvc") for name in listing(tier))
    assert len(listing(tier)) == 4


def _hold_reservation(staged: str, directory: str, key: bytes, go, reserved) -> None:
    def hook(step: str) -> None:
        if step == "reserve":
            reserved.set()
            go.wait(20)

    res = publish_file(staged, directory, key, hook=hook)
    os._exit(0 if res.outcome is PublishOutcome.PUBLISHED else 1)


def test_live_reservation_makes_the_second_writer_back_off(tmp_path: Path) -> None:
    tier = tmp_path / "disk"
    tier.mkdir()
    a, b = tmp_path / "a.kvc", tmp_path / "b.kvc"
    key, _ = _stage(a, rand_tokens(64, seed=7))
    b.write_bytes(a.read_bytes())
    go, reserved = FORK.Event(), FORK.Event()
    holder = FORK.Process(target=_hold_reservation, args=(str(a), str(tier), key, go, reserved))
    holder.start()
    assert reserved.wait(10)
    assert publish_file(str(b), str(tier), key).outcome is PublishOutcome.BUSY
    go.set()
    holder.join(10)
    assert holder.exitcode == 0
    assert listing(tier) == [row_name(key)]


def test_dead_writers_reservation_is_taken_over(tmp_path: Path) -> None:
    tier = tmp_path / "disk"
    tier.mkdir()
    staged = tmp_path / "s.kvc"
    key, _ = _stage(staged, rand_tokens(64, seed=8))
    child = FORK.Process(target=_publish_and_die, args=(str(staged), str(tier), key, "reserve", "link"))
    child.start()
    child.join(10)
    assert any(n.endswith(".reserve") for n in listing(tier))
    # Same host, dead pid: stale immediately, no need to wait for the TTL.
    assert publish_file(str(staged), str(tier), key, ttl_s=3600).outcome is PublishOutcome.PUBLISHED
    assert listing(tier) == [row_name(key)]


def test_reservation_past_ttl_is_taken_over(tmp_path: Path) -> None:
    tier = tmp_path / "disk"
    tier.mkdir()
    staged = tmp_path / "s.kvc"
    key, _ = _stage(staged, rand_tokens(64, seed=9))
    res_path = tier / (key.hex() + ".reserve")
    res_path.write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere", "token": "t"}))
    assert publish_file(str(staged), str(tier), key, ttl_s=60).outcome is PublishOutcome.BUSY
    old = time.time() - 120
    os.utime(res_path, (old, old))
    assert publish_file(str(staged), str(tier), key, ttl_s=60).outcome is PublishOutcome.PUBLISHED


def test_lost_reservation_aborts_before_link(tmp_path: Path) -> None:
    tier = tmp_path / "disk"
    tier.mkdir()
    staged = tmp_path / "s.kvc"
    key, _ = _stage(staged, rand_tokens(64, seed=10))

    def steal(step: str) -> None:
        if step == "tmp_fsync":  # someone else's token now
            (tier / (key.hex() + ".reserve")).write_text(json.dumps({"token": "thief", "pid": 1, "host": "x"}))

    res = publish_file(str(staged), str(tier), key, hook=steal)
    assert res.outcome is PublishOutcome.LOST_RESERVATION
    assert not os.path.exists(row_path(str(tier), key))
    assert not any(n.endswith(".tmp") for n in listing(tier))


def test_existing_file_is_adopted_if_valid_and_replaced_if_not(tmp_path: Path) -> None:
    tier = tmp_path / "disk"
    tier.mkdir()
    staged = tmp_path / "s.kvc"
    key, _ = _stage(staged, rand_tokens(64, seed=11))
    final = Path(row_path(str(tier), key))
    final.write_bytes(staged.read_bytes())
    assert publish_file(str(staged), str(tier), key).outcome is PublishOutcome.ADOPTED
    _stage(staged, rand_tokens(64, seed=11))
    final.write_bytes(final.read_bytes()[:-10])  # torn by some other tool
    assert publish_file(str(staged), str(tier), key).outcome is PublishOutcome.REPLACED
    assert bytes(kvc.decode(final.read_bytes(), key).kv) != b""
    assert listing(tier) == [row_name(key)]


def test_sweep_keeps_live_writers_tmp_and_removes_orphans(tmp_path: Path) -> None:
    tier = tmp_path / "disk"
    tier.mkdir()
    live = publish.reserve(str(tier), b"\x01" * 32, ttl_s=60)
    assert live is not None
    live_tmp = tier / f"{'01' * 32}.{live.token}.tmp"
    live_tmp.write_bytes(b"partial")
    orphan_tmp = tier / f"{'02' * 32}.deadbeef.tmp"
    orphan_tmp.write_bytes(b"partial")
    stale = tier / f"{'03' * 32}.reserve"
    stale.write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename, "token": "x"}))
    stats = sweep_dir(str(tier), reservation_ttl_s=60, tmp_ttl_s=60)
    assert (stats.tmp_removed, stats.reservations_removed) == (1, 1)
    assert live_tmp.exists() and not orphan_tmp.exists() and not stale.exists()
    # Past the tmp TTL even a live writer's tmp goes (it fails safely at link).
    old = time.time() - 3600
    os.utime(live_tmp, (old, old))
    assert sweep_dir(str(tier), 60, 60).tmp_removed == 1
