"""One actor tree and one HTTP server for the whole tests/http package.

Models: ``smol`` (the bundled SmolLM2, one thread, with thinking and
tool-call markers and embeddings), ``stub`` (slow steps, queue limit 2:
backpressure and disconnects) and ``crashy`` (a stub that may be crashed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actors.api import System
from actors.cache.config import CacheConfig
from actors.cache.policy import SavePolicy
from actors.config import HttpSettings
from actors.http.server import HttpServer
from actors.supervisor.runtime import alive

THINKING_KEY = b"http-test-thinking-key"
MARKERS = {"thinking_markers": {"start": "<think>", "end": "</think>"},
           "tool_call_markers": {"start": "<tool_call>", "end": "</tool_call>"}}
# Save rows from 32 tokens on, so short test prompts are cached.
POLICY = SavePolicy(min_tokens=32, cold_min_tokens=32, cold_max_tokens=4096, continued_interval=0,
                    boundary_trim_tokens=0, boundary_align_tokens=8)


@dataclass
class Served:
    system: System
    server: HttpServer

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp: Path = tmp_path_factory.mktemp("http")
    cache = CacheConfig.create(tmp / "run", ram=256 << 20, default_tier="ram", policy=POLICY, fsync=False)
    system = System(cache=cache, thinking_key=THINKING_KEY)
    pids = set(system.pids())
    server = None
    try:
        system.load_model("smol", context={"n_ctx": 2048, "n_seq_max": 2, "n_threads": 1}, embeddings=True,
                          **MARKERS)
        system.load_model("stub", backend="stub", stub={"n_seq_max": 2, "step_delay_s": 0.02})
        system.load_model("crashy", backend="stub", stub={"n_seq_max": 1, "step_delay_s": 0.02},
                          allow_debug_crash=True)
        pids |= set(system.pids())
        server = HttpServer(system, HttpSettings(port=0, queue_limits={"stub": 2})).start()
        yield Served(system, server)
    finally:
        if server is not None:
            server.stop()
        pids |= set(system.pids())
        system.close()
        left = alive(pids)
        assert not left, f"processes left behind: {left}"
