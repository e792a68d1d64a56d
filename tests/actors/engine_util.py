"""Helpers to drive the model engine in-process (no actor system)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from actors.cache.policy import SavePolicy
from actors.model import messages as mm
from actors.model.backend import StubBackend
from actors.model.engine import Engine, EngineHooks, EngineSettings

# Small rows are worth saving in tests: no trim, 8-token alignment.
TEST_POLICY = SavePolicy(min_tokens=8, cold_min_tokens=8, cold_max_tokens=4096, continued_interval=0,
                         boundary_trim_tokens=0, boundary_align_tokens=8)
_ids = itertools.count()


@dataclass
class Outbox:
    """Records everything the engine emits, per destination."""

    sent: list[tuple[Any, Any]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)

    def emit(self, dest: Any, msg: Any) -> None:
        self.sent.append((dest, msg))

    def for_req(self, req_id: str) -> list[Any]:
        return [m for _, m in self.sent if getattr(m, "req_id", None) == req_id]

    def final(self, req_id: str) -> Any:
        msgs = [m for m in self.for_req(req_id) if not isinstance(m, (mm.TokenChunk, mm.ThinkingEnd, mm.ToolCallEnd))]
        assert len(msgs) == 1, msgs
        return msgs[0]


def make_engine(outbox: Outbox, cache: Any = None, policy: SavePolicy | None = TEST_POLICY,
                chunk: int | None = None, **stub: Any) -> tuple[Engine, StubBackend]:
    backend = StubBackend(stub)
    eng = Engine(EngineSettings("m", policy=policy, prefill_chunk=chunk), backend, outbox.emit, cache=cache,
                 hooks=EngineHooks(done=outbox.done.append))
    return eng, backend


def rid() -> str:
    return f"r{next(_ids)}"


def run(eng: Engine, limit: int = 10_000) -> int:
    n = 0
    while eng.has_work():
        eng.tick()
        n += 1
        assert n < limit, "engine does not converge"
    return n


def opts(**kw: Any) -> mm.GenOptions:
    return mm.GenOptions(**kw)


def complete(eng: Engine, outbox: Outbox, prompt: Any, **kw: Any) -> Any:
    r = rid()
    eng.handle(mm.Complete("m", r, "caller", prompt=prompt, options=opts(**kw)))
    run(eng)
    return outbox.final(r)


def drive(eng: Engine, steps: int) -> Iterator[None]:
    for _ in range(steps):
        if not eng.has_work():
            return
        eng.tick()
        yield
