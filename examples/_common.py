"""Shared plumbing for the numbered examples: a command line, a System with a private cache, and facts.

Every example prints its results as ``key: value`` lines (``fact``) so that a person can read them and
``tests/test_examples.py`` can check them.  ``running_system`` starts a loopback-only actor tree whose
cache lives in a temporary directory (a ram tier plus a disk tier), and after the tree is stopped it
prints ``leftover processes: 0`` once it has checked that no process of the tree is still running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from actors.api import System
from actors.cache.config import CacheConfig
from actors.cache.policy import SavePolicy
from actors.cache.pressure import Reading
from actors.supervisor.runtime import alive

MODEL = "smol"  # the bundled SmolLM2-135M-Instruct; pass a GGUF path to load_model for another model


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The examples' command line: ``--port`` picks the admin port (default: a free one)."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=None, help="admin port of the actor system (default: a free port)")
    return ap


def cache_config(tmp: Path, *, policy: SavePolicy | None = None, ram: int = 256 << 20,
                 disk: int | None = 1 << 30, default_tier: str = "ram", **options: Any) -> CacheConfig:
    """A cache for one example run: a ram tier (rows live in the model process) and a disk tier in ``tmp``.

    ``options``: other ``CacheConfig`` fields (e.g. ``write_behind=False``)."""
    return CacheConfig.create(tmp / "run", ram=ram, disk=(tmp / "disk", disk) if disk else None,
                              default_tier=default_tier, policy=policy or SavePolicy(), fsync=False, **options)


@contextlib.contextmanager
def running_system(port: int | None = None, *, policy: SavePolicy | None = None,
                   pressure: dict[str, Any] | None = None, thinking_key: bytes | str | None = None,
                   **cache_kw: Any) -> Iterator[System]:
    """``with System(...)`` on a private cache; prints ``leftover processes: N`` after the tree stopped.

    ``pressure`` and ``thinking_key`` go to ``System``; other keywords to ``cache_config``.
    """
    with tempfile.TemporaryDirectory(prefix="llama-actors-example-") as d:
        pids: list[int] = []
        with System(port, cache=cache_config(Path(d), policy=policy, **cache_kw), pressure=pressure,
                    thinking_key=thinking_key) as system:
            pids = system.pids()
            yield system
        left = alive(pids)
        fact("leftover processes", len(left))


def fact(key: str, value: object) -> None:
    """One ``key: value`` line; dicts and lists are printed as JSON."""
    shown = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list, tuple)) else value
    print(f"{key}: {shown}", flush=True)


def counters_delta(before: dict[str, int], after: dict[str, int], keys: Sequence[str] | None = None) -> dict[str, int]:
    """Counters that moved between two ``system.cache_counters()`` readings (latency totals left out)."""
    names = keys or [k for k in after if not k.endswith(("_ns_total", "_capacity")) and not k.startswith("writer_")]
    return {k: after.get(k, 0) - before.get(k, 0) for k in names if after.get(k, 0) != before.get(k, 0)}


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def file_pressure(path: str) -> Reading | None:
    """A memory-pressure source for example 19: ``{"used": n, "total": n}`` read from a JSON file.

    The pressure actor runs in another process, so the source must be importable there (the
    system's serve process gets the example's import path) and picklable (a module-level function
    in a ``partial``). A missing or unreadable file means "cannot measure", which never evicts
    anything. Each read appends one byte to ``<path>.reads``, so the example can tell "no pressure
    seen" from "not looked yet".
    """
    with open(f"{path}.reads", "ab") as f:
        f.write(b".")
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return Reading(int(data["used"]), int(data["total"]))
