"""Warmth bigger than ram, and across a restart, on the real bundled model (SmolLM2-135M).

(a) a ram quota far below the working set plus a disk tier: prompts evicted from ram are still
    exact hits, from disk, with the same replies;
(b) a graceful close, then a new system on the same disk directory: the earlier prompts are exact
    hits (the shutdown spill wrote them, with write-behind off to prove it);
(c) requests complete while the write-behind writer is held (a gate file, not timing).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.api import System
from actors.cache import read_counters
from actors.cache.config import CacheConfig
from actors.cache.policy import SavePolicy
from actors.supervisor.runtime import alive

# Rows are the exact prompt (no trim, no alignment), so a repeated prompt is an exact hit.
POLICY = SavePolicy(min_tokens=8, cold_min_tokens=8, continued_interval=0, boundary_trim_tokens=0,
                    boundary_align_tokens=1)
CONTEXT = {"n_ctx": 512, "n_batch": 256, "n_seq_max": 1}
TOPICS = ("paint", "garden hoses", "plumbing", "lumber", "fuses", "floor sanders")
PROMPTS = [f"{name} desk. You help customers of a hardware store with {topic}. Store hours are 8am to 6pm "
           f"Monday to Saturday. Returns are accepted within 30 days with a receipt.\nCustomer: tell me about "
           f"{topic}.\nAssistant:" for name, topic in zip(("Alder", "Birch", "Cedar", "Elm", "Fir", "Hazel"), TOPICS,
                                                          strict=True)]
MAX_TOKENS = 8

pytestmark = pytest.mark.timeout(300)


def config(tmp: Path, run: str, ram: int, **kw: Any) -> CacheConfig:
    return CacheConfig.create(tmp / run, ram=ram, disk=(tmp / "disk", 1 << 30), default_tier="ram", fsync=False,
                              policy=POLICY, **kw)


@contextlib.contextmanager
def model_system(cfg: CacheConfig) -> Iterator[System]:
    system = System(cache=cfg)
    pids = set(system.pids())
    try:
        system.load_model("smol", context=CONTEXT)
        pids |= set(system.pids())
        yield system
    finally:
        system.close()  # graceful: the model unloads with its shutdown spill
        assert not alive(pids)


def wait_for(pred: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def all_listed(s: System, prompts: list[list[int]]) -> bool:
    return all(s.list_cached_prefixes("smol", p)["length"] == len(p) for p in prompts)


def test_prompts_that_overflow_ram_are_exact_hits_from_disk(tmp_path: Path) -> None:
    with model_system(config(tmp_path, "run", ram=3 << 20)) as s:  # about two rows of ~1.4 MB
        prompts = [s.tokenize("smol", p) for p in PROMPTS]
        first = [s.complete("smol", p, max_tokens=MAX_TOKENS) for p in prompts]
        assert all(r.cache_hit_kind == "cold" for r in first)
        assert wait_for(lambda: all_listed(s, prompts))  # every copy written and listed
        tiers = [s.list_cached_prefixes("smol", p)["tier"] for p in prompts]
        assert tiers[:3] == ["disk"] * 3  # long gone from ram
        again = [s.complete("smol", p, max_tokens=MAX_TOKENS) for p in prompts]
        assert [r.cache_hit_kind for r in again] == ["exact"] * len(prompts)
        assert [r.generated for r in again] == [r.generated for r in first]
        c = s.cache_counters()
        assert c["evictions"] == 0 and c["demotions"] >= 6
        assert c["hits_exact"] >= len(prompts) and c["write_behind_skipped"] == 0


def test_a_graceful_restart_finds_the_earlier_prompts(tmp_path: Path) -> None:
    first_cfg = config(tmp_path, "run1", ram=64 << 20, write_behind=False)  # only the shutdown spill writes
    with model_system(first_cfg) as s:
        prompts = [s.tokenize("smol", p) for p in PROMPTS[:3]]
        first = [s.complete("smol", p, max_tokens=MAX_TOKENS) for p in prompts]
        assert not list((tmp_path / "disk").glob("*.kvc"))
    assert read_counters(first_cfg.counters_dir)["spilled"] >= len(prompts)

    with model_system(config(tmp_path, "run2", ram=64 << 20)) as s:
        for p, r in zip(prompts, first, strict=True):
            assert s.list_cached_prefixes("smol", p)["tier"] == "disk"
            again = s.complete("smol", p, max_tokens=MAX_TOKENS)
            assert again.cache_hit_kind == "exact" and again.cache_delta.read == len(p)
            assert again.generated == r.generated


def test_requests_complete_while_the_writer_is_held(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()  # the writer thread waits while this file exists
    with model_system(config(tmp_path, "run", ram=64 << 20, write_behind_gate=str(gate))) as s:
        prompts = [s.tokenize("smol", p) for p in PROMPTS[:3]]
        first = [s.complete("smol", p, max_tokens=MAX_TOKENS) for p in prompts]
        c = s.cache_counters()
        assert c["write_behind_queued"] >= len(prompts) and c["write_behind_written"] == 0
        warm = s.complete("smol", prompts[0], max_tokens=MAX_TOKENS)  # served from ram meanwhile
        assert warm.cache_hit_kind == "exact" and warm.generated == first[0].generated
        gate.unlink()
        assert wait_for(lambda: (lambda c: c["write_behind_written"] == c["write_behind_queued"])(s.cache_counters()))
        assert len(list((tmp_path / "disk").glob("*.kvc"))) == s.cache_counters()["write_behind_written"]
