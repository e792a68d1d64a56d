"""00. The cache on its own, no model: save, miss, load, exact hit, and the counters that prove it.

The cache subsystem does not need llama.cpp: a row is a blob plus its metadata (model fingerprint,
quantization, context-layout hash, tokens). This runs the smoke test of ``cache_smoke.py`` twice:
once in plain Python (``CacheService``) and once through the thespian cache actors (meta actor,
writers, a client host), each on a disk tier in a temporary directory. Both must count one cold save,
one miss and one exact hit. Use it to check an installation or a new cache tier before any model loads.

    .venv/bin/python examples/00_cache_smoke.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import fact, parser
from cache_smoke import run_actors, run_plain

from actors.cache import CacheConfig

KEYS = ("saves_cold", "misses", "hits_exact")


def main() -> None:
    args = parser(__doc__).parse_args()
    for mode in ("plain", "actors"):
        with tempfile.TemporaryDirectory(prefix="cache-smoke-") as d:
            tmp = Path(d)
            config = CacheConfig.create(tmp / "run", ram=None, disk=(tmp / "kvc", 1 << 30), default_tier="disk")
            counters = run_plain(config) if mode == "plain" else run_actors(config, tmp, args.port)
        fact(f"{mode} counters", {k: counters[k] for k in KEYS})
        fact(f"{mode} ok", all(counters[k] == 1 for k in KEYS))


if __name__ == "__main__":
    main()
