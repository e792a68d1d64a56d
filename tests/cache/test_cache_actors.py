"""The cache as thespian actors: meta, writers, pressure and client hosts."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest
from cachetest_util import CTX, FP, QUANT, meta_for, rand_tokens, reading_from_file

from actors.cache import messages as m
from actors.cache.actors import CacheClientHost
from actors.cache.admin import CacheAdmin, CacheAdminError
from actors.cache.config import CacheConfig
from actors.cache.meta import MetaCore
from actors.cache.pressure import CallableSource
from actors.system import SystemHandle, start_system
from tests.waiting import wait_until


@pytest.fixture
def system() -> Iterator[SystemHandle]:
    handle = start_system()
    try:
        yield handle
    finally:
        handle.shutdown()


def call(system: SystemHandle, host: Any, op: str, **args: Any) -> Any:
    reply = system.ask(host, m.HostCall(op, args), timeout=20)
    assert isinstance(reply, m.HostReply) and not reply.error, reply
    return reply.value


def start_host(system: SystemHandle, admin: CacheAdmin) -> Any:
    host = system.create(CacheClientHost)
    reply = system.ask(host, m.ClientStart(admin.config, admin.meta))
    assert isinstance(reply, m.HostReply) and reply.value["pid"] != os.getpid()
    return host


def lookup(system: SystemHandle, host: Any, tokens: list[int]) -> Any:
    return call(system, host, "lookup", fingerprint=FP, quant=QUANT, ctx_hash=CTX, tokens=tokens)


@pytest.fixture
def cfg(tmp_path: Path) -> CacheConfig:
    return CacheConfig.create(
        tmp_path / "run",
        ram=1 << 20,
        ram_file=(tmp_path / "ram_file", 1 << 20),
        disk=(tmp_path / "disk", 1 << 24),
        default_tier="ram_file",
        sweep_interval_s=0.5,
        write_behind=False,  # ram rows stay private here; test_ram_row_written_behind_reaches_other_process
    )


def test_ram_row_written_behind_reaches_other_process(system: SystemHandle, cfg: CacheConfig,
                                                      tmp_path: Path) -> None:
    admin = CacheAdmin.start(system, replace(cfg, write_behind=True))
    a, b = start_host(system, admin), start_host(system, admin)
    tokens = rand_tokens(100, seed=5)
    kv = os.urandom(50_000)
    (tmp_path / "kv.bin").write_bytes(kv)
    call(system, a, "save", reason="finish", meta=meta_for(tokens), kv_path=str(tmp_path / "kv.bin"), tier="ram")
    assert call(system, a, "flush")  # written; a host actor sends the notice on its own thread
    assert wait_until(lambda: lookup(system, b, tokens) is not None)
    hit = lookup(system, b, tokens)
    assert (hit.kind, hit.tier) == ("exact", "ram_file")
    assert Path(call(system, b, "load", hit=hit, out_path=str(tmp_path / "out.bin"))["path"]).read_bytes() == kv
    own = lookup(system, a, tokens)
    assert own.tier == "ram"  # the writer keeps serving its ram copy
    counters = admin.get_counters()
    assert (counters["write_behind_queued"], counters["write_behind_written"]) == (1, 1)
    assert (counters["rows_ram"], counters["rows_ram_file"]) == (1, 1)


def test_save_lookup_load_across_processes(system: SystemHandle, cfg: CacheConfig, tmp_path: Path) -> None:
    admin = CacheAdmin.start(system, cfg)
    a, b = start_host(system, admin), start_host(system, admin)
    tokens = rand_tokens(200, seed=1)
    kv = os.urandom(300_000)
    (tmp_path / "kv.bin").write_bytes(kv)

    assert lookup(system, a, tokens) is None
    res = call(system, a, "save", reason="cold", meta=meta_for(tokens), kv_path=str(tmp_path / "kv.bin"))
    assert res.accepted and res.tier == "ram_file"
    admin.wait_idle()

    # The other process sees the file row through its pushed mirror.
    assert wait_until(lambda: lookup(system, b, tokens) is not None)
    hit = lookup(system, b, tokens)
    assert hit.kind == "exact" and hit.matched == 200
    out = call(system, b, "load", hit=hit, out_path=str(tmp_path / "out.bin"))
    assert Path(out["path"]).read_bytes() == kv

    # A prefix of a longer prompt, from the first process.
    longer = tokens + rand_tokens(50, seed=2)
    prefix = lookup(system, a, longer)
    assert prefix.kind == "prefix" and prefix.matched == 200

    # ram rows stay private to their process.
    ram_tokens = rand_tokens(100, seed=3)
    call(system, a, "save", reason="finish", meta=meta_for(ram_tokens), kv_path=str(tmp_path / "kv.bin"), tier="ram")
    assert wait_until(lambda: lookup(system, a, ram_tokens) is not None)
    assert lookup(system, b, ram_tokens) is None

    counters = admin.get_counters()
    assert counters["saves_cold"] == 1 and counters["saves_finish"] == 1
    assert counters["bytes_ram"] == 300_000
    assert counters["bytes_ram_file"] == sum(p.stat().st_size for p in Path(cfg.tier("ram_file").path).iterdir())
    dump = {r["key"]: r for r in admin.dump()}
    assert dump[res.key.hex()]["hits"] >= 1


def test_operator_eviction_reaches_ram_rows_in_model_processes(
    system: SystemHandle, cfg: CacheConfig, tmp_path: Path
) -> None:
    admin = CacheAdmin.start(system, cfg)
    host = start_host(system, admin)
    (tmp_path / "kv.bin").write_bytes(b"\0" * 50_000)
    keys = []
    for i in range(3):
        r = call(
            system,
            host,
            "save",
            reason="finish",
            meta=meta_for(rand_tokens(64, seed=10 + i)),
            kv_path=str(tmp_path / "kv.bin"),
            tier="ram",
        )
        keys.append(r.key)
    call(system, host, "pin", key=keys[0])
    # Pins and saves are one-way messages: wait until the meta has them.
    assert wait_until(lambda: admin.get_counters()["rows_ram"] == 3)
    assert wait_until(lambda: any(r["pins"] for r in admin.dump()))
    evicted = admin.evict_bytes(10**9, ["ram"])
    assert set(evicted.keys) == {keys[1], keys[2]}
    assert wait_until(lambda: call(system, host, "ram_keys") == [keys[0]])
    assert wait_until(lambda: admin.get_counters()["bytes_ram"] == 50_000)
    with pytest.raises(CacheAdminError, match="unknown"):
        admin.evict_bytes(1, ["tape"])


def test_pressure_actor_evicts_on_high_watermark(system: SystemHandle, cfg: CacheConfig, tmp_path: Path) -> None:
    admin = CacheAdmin.start(system, cfg)
    host = start_host(system, admin)
    (tmp_path / "kv.bin").write_bytes(b"\0" * 100_000)
    for i in range(3):
        call(
            system,
            host,
            "save",
            reason="finish",
            meta=meta_for(rand_tokens(64, seed=20 + i)),
            kv_path=str(tmp_path / "kv.bin"),
        )
    assert wait_until(lambda: admin.get_counters()["rows_ram_file"] == 3)  # saves are one-way
    gauge = tmp_path / "mem"
    gauge.write_text("10 100")
    source = CallableSource(functools.partial(reading_from_file, str(gauge)))
    poller = admin.start_pressure(source, high=0.9, low=0.5, interval_s=0.05, tiers=("ram_file",))
    assert wait_until(lambda: admin.pressure_status(poller).polls >= 3)  # it has looked, at 10% used
    assert admin.get_counters()["rows_ram_file"] == 3
    gauge.write_text("95 100")
    assert wait_until(lambda: admin.get_counters()["rows_ram_file"] == 0)
    admin.wait_idle()
    assert wait_until(lambda: admin.get_counters()["rows_disk"] == 3)  # demoted, still served
    report = admin.pressure_status(poller)
    assert report.available and report.evictions_requested >= 1


def test_shutdown_leaves_no_process_behind(tmp_path: Path) -> None:
    cfg = CacheConfig.create(tmp_path / "run", ram=1 << 20, disk=(tmp_path / "disk", 1 << 24))
    with start_system() as handle:
        admin = CacheAdmin.start(handle, cfg)
        start_host(handle, admin)
        sid = handle.session_id
        assert sid is not None and handle.admin_pid is not None
        members = [p.pid for p in psutil.process_iter() if _sid(p.pid) == sid and p.status() != "zombie"]
        assert len(members) >= 4  # admin, meta, writers, host
    assert not psutil.pid_exists(handle.admin_pid) or psutil.Process(handle.admin_pid).status() == "zombie"
    assert [p for p in members if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"] == []


def test_shutdown_runs_even_when_the_body_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), start_system() as handle:
        admin_pid = handle.admin_pid
        raise RuntimeError("boom")
    assert admin_pid is not None
    assert not psutil.pid_exists(admin_pid) or psutil.Process(admin_pid).status() == "zombie"


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


class _Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, Any]] = []

    def send(self, dest: Any, msg: Any) -> None:
        self.sent.append((dest, msg))


def test_dead_writer_is_replaced_and_its_job_failed(cfg: CacheConfig, tmp_path: Path) -> None:
    """MetaCore alone: what the meta actor does on ChildActorExited."""
    out = _Outbox()
    core = MetaCore(cfg, out, ["w1"])
    core.start()
    staged = tmp_path / "staged"
    staged.write_bytes(b"x")
    info = m.RowInfo(b"k" * 32, b"n" * 32, "disk", "", 10, 1000, False, 3, b"", 0)
    core.handle(m.SaveStaged(info, str(staged), "c"), "client")
    assert [type(msg) for _, msg in out.sent].count(m.WriteJob) == 1
    assert core.index.get(b"k" * 32) is not None
    core.replace_writer("w1", "w2")
    assert core.index.get(b"k" * 32) is None and not staged.exists()
    assert core.in_flight == 0
    core.handle(m.SaveStaged(info, str(staged), "c"), "client")
    assert out.sent[-1][0] == "w2"
