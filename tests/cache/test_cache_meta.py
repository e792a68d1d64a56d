"""MetaCore and CacheClient wired by hand, the way the actors wire them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cachetest_util import CTX, FP, QUANT, listing, meta_for, rand_tokens

from actors.cache import messages as m
from actors.cache.client import CacheClient
from actors.cache.config import CacheConfig
from actors.cache.meta import MetaCore
from actors.cache.publish import row_path
from actors.cache.writer import execute


class Wire:
    """Delivers like thespian would, but synchronously and in order."""

    def __init__(self, config: CacheConfig, inline_limit: int = 2) -> None:
        self.queue: list[tuple[Any, Any, Any]] = []
        self.core = MetaCore(config, self, ["writer"], inline_snapshot_limit=inline_limit)
        self.core.start()
        self.clients: dict[str, CacheClient] = {}
        self.replies: list[Any] = []

    def send(self, dest: Any, msg: Any) -> None:
        self.queue.append((dest, msg, None))

    def client(self, name: str) -> CacheClient:
        c = CacheClient(self.core.config, lambda msg: self.queue.append(("meta", msg, name)), client_id=name)
        self.clients[name] = c
        self.pump()
        return c

    def pump(self) -> None:
        while self.queue:
            dest, msg, sender = self.queue.pop(0)
            if dest == "meta":
                self.core.handle(msg, sender)
            elif dest == "writer":
                self.queue.append(("meta", execute(msg), "writer"))
            elif dest in self.clients:
                self.clients[dest].handle(msg)
            else:
                self.replies.append(msg)


def test_big_snapshots_travel_as_files(tmp_path: Path) -> None:
    cfg = CacheConfig.create(tmp_path / "run", ram=None, disk=(tmp_path / "disk", 1 << 30))
    wire = Wire(cfg, inline_limit=2)
    writer = wire.client("writer-client")
    tokens = [rand_tokens(64, seed=i) for i in range(5)]
    for t in tokens:
        writer.save("finish", meta_for(t), b"x" * 100, tier="disk")
        wire.pump()
    late = wire.client("late")  # subscribes after the rows exist
    assert late.rows() == 5
    assert listing(cfg.snapshot_dir) == []  # consumed and removed
    hit = late.lookup(FP, QUANT, CTX, tokens[3])
    assert hit is not None and hit.kind == "exact"


def test_ram_row_pinned_during_eviction_is_kept_and_reannounced(tmp_path: Path) -> None:
    cfg = CacheConfig.create(tmp_path / "run", ram=1 << 20, disk=(tmp_path / "disk", 1 << 30), write_behind=False)
    wire = Wire(cfg)
    c = wire.client("model")
    res = c.save("finish", meta_for(rand_tokens(64, seed=1)), b"y" * 1000, tier="ram")
    wire.pump()
    assert wire.core.index.get(res.key) is not None
    wire.core.handle(m.EvictBytes(10**6, ("ram",)), "operator")  # meta picks the row...
    c.ram.pin(res.key)  # ...while the model pins it locally, before the drop arrives
    wire.pump()
    assert isinstance(wire.replies[-1], m.Evicted) and wire.replies[-1].keys == (res.key,)
    assert res.key in c.ram and c.known(res.key)
    row = wire.core.index.get(res.key)
    assert row is not None and row.status.value == "available"


def test_client_gone_releases_its_rows_and_pins(tmp_path: Path) -> None:
    # Without write-behind: a finished background copy would (rightly) turn the
    # ram row into a disk row that outlives its owner, which is not this test.
    cfg = CacheConfig.create(tmp_path / "run", ram=1 << 20, disk=(tmp_path / "disk", 1 << 30), write_behind=False)
    wire = Wire(cfg)
    c = wire.client("model")
    ram = c.save("finish", meta_for(rand_tokens(64, seed=2)), b"r" * 10, tier="ram")
    disk = c.save("finish", meta_for(rand_tokens(64, seed=3)), b"d" * 10, tier="disk")
    wire.pump()
    c.pin(disk.key)
    wire.pump()
    assert wire.core.index.get(disk.key).pins == {"model"}
    c.close()
    wire.pump()
    assert wire.core.index.get(ram.key) is None  # its bytes died with it
    assert wire.core.index.get(disk.key).pins == set()
    assert os.path.exists(row_path(cfg.tier("disk").path, disk.key))


def test_own_ram_save_is_found_before_the_meta_echoes_it(tmp_path: Path) -> None:
    cfg = CacheConfig.create(tmp_path / "run", ram=1 << 20)
    wire = Wire(cfg)
    c = wire.client("model")
    tokens = rand_tokens(96, seed=7)
    res = c.save("finish", meta_for(tokens), b"kv" * 50, b"lg" * 10, tier="ram")
    assert res.accepted
    # no wire.pump(): the meta has not seen the save yet
    hit = c.lookup(FP, QUANT, CTX, tokens)
    assert hit is not None and hit.kind == "exact" and hit.key == res.key
    wire.pump()  # the echo afterwards changes nothing
    assert c.rows() == 1 and c.lookup(FP, QUANT, CTX, tokens).key == res.key  # type: ignore[union-attr]
