"""Bounded and abortable decodes: ``decode_budget_ms`` -> ``decode_timeout``, ``abort(model, req_id)``,
and the context reset in place (KV cleared, sessions dropped and reported, weights and cache kept)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from actors.api import ModelError, System
from actors.model import messages as mm
from actors.model.backend import StubBackend
from actors.model.engine import Engine, EngineHooks, EngineSettings
from tests.actors.conftest import running_system
from tests.actors.engine_util import TEST_POLICY, Outbox, opts, rid, run
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(300)


def stub_engine(out: Outbox, budget_ms: int, cache: object = None, **stub: object) -> tuple[Engine, StubBackend]:
    backend = StubBackend({"n_seq_max": 2, **stub})
    eng = Engine(EngineSettings("m", policy=TEST_POLICY, decode_budget_ms=budget_ms), backend, out.emit,
                 cache=cache, hooks=EngineHooks(done=out.done.append))
    return eng, backend


def test_engine_decode_timeout_resets_the_context_and_serves_on() -> None:
    out = Outbox()
    eng, backend = stub_engine(out, budget_ms=50)
    s1 = rid()
    eng.handle(mm.Complete("m", s1, "caller", prompt="pinned", options=opts(max_tokens=2, session_id="s")))
    run(eng)
    assert "s" in eng.sessions
    slow, other = rid(), rid()
    eng.handle(mm.Complete("m", slow, "caller", prompt="slow one", options=opts(max_tokens=8)))
    backend.hold_next_decode(5_000)
    eng.tick()  # the step holding `slow` runs past its 50 ms budget
    final = out.final(slow)
    assert isinstance(final, mm.ErrorReply) and final.reason == "decode_timeout"
    assert not eng.sessions and eng.free == [0, 1]  # sessions dropped, every sequence back
    assert all(not backend.kv_tokens(s) for s in (0, 1))
    status = eng.status()
    assert status["counters"]["context_resets"] == 1
    assert status["last_reset"]["sessions_dropped"] == ["s"] and status["last_reset"]["requests_failed"] == [slow]
    eng.handle(mm.Complete("m", other, "caller", prompt="slow one", options=opts(max_tokens=8)))
    run(eng)
    assert out.final(other).finish_reason == "length"  # the same backend answers, no reload


def test_engine_requests_outside_the_stopped_step_get_context_reset() -> None:
    out = Outbox()
    eng, backend = stub_engine(out, budget_ms=50, n_batch=8)
    a, b = rid(), rid()
    eng.handle(mm.Complete("m", a, "caller", prompt="first request", options=opts(max_tokens=8)))
    eng.tick()
    eng.handle(mm.Complete("m", b, "caller", prompt="x" * 40, options=opts(max_tokens=8)))
    backend.hold_next_decode(5_000)
    eng.tick()
    reasons = {r: out.final(r).reason for r in (a, b)}
    assert sorted(reasons.values()) in (["decode_timeout", "decode_timeout"], ["context_reset", "decode_timeout"])
    assert not eng.active and eng.free == [0, 1]


def test_engine_abort_of_a_request_between_steps_ends_it_like_a_cancel() -> None:
    out = Outbox()
    eng, _backend = stub_engine(out, budget_ms=0)
    r = rid()
    eng.handle(mm.Complete("m", r, "caller", prompt="abort me", options=opts(max_tokens=50)))
    eng.tick()
    eng.handle(mm.Abort("m", "", None, target=r))
    assert out.final(r).finish_reason == "cancelled" and eng.counters["context_resets"] == 0


@pytest.fixture(scope="module")
def stub_sys(tmp_path_factory: pytest.TempPathFactory) -> System:
    with running_system(tmp_path_factory.mktemp("bounded")) as system:
        system.load_model("s", backend="stub", stub={"n_seq_max": 2, "step_delay_s": 0.01}, decode_budget_ms=2_000,
                          allow_debug_crash=True)
        yield system


def test_abort_stops_a_decode_in_flight_end_to_end(stub_sys: System) -> None:
    s = stub_sys
    with pytest.raises(ModelError) as e:
        s.load_model("bad", backend="stub", decode_budget_ms=-1)
    assert e.value.reason == "bad_option"
    pid = s.observe("s").pid
    stream = s.infer("s", "a long stream", max_tokens=400)
    chunks = iter(stream)  # kept: a dropped iterator cancels its stream
    next(chunks)
    s.debug_hold_decode("s", 60_000)  # the next decode would hold for a minute (the budget is 2 s)
    wait_until(lambda: s.status("s")["phase"] == "generating", timeout=10)
    threading.Timer(0.2, s.abort, ("s", stream.req_id)).start()
    with pytest.raises(ModelError) as e:
        for _ in chunks:
            pass
    assert e.value.reason == "aborted"
    status = s.status("s")
    assert status["counters"]["context_resets"] >= 1 and status["last_reset"]["reason"] == e.value.reason
    assert s.observe("s").pid == pid  # the same process: nothing was reloaded
    assert s.complete("s", "after the abort", max_tokens=3).finish_reason == "length"


def test_decode_timeout_on_the_real_model_keeps_weights_and_cache(tmp_path: Path) -> None:
    with running_system(tmp_path, default_tier="ram") as system:
        info = system.load_model("smol", context={"n_ctx": 1024, "n_batch": 64, "n_seq_max": 2, "n_threads": 1},
                                 decode_budget_ms=10_000, allow_debug_crash=True)
        pid = info["pid"]
        prompt = "The capital of France is a city called"
        first = system.complete("smol", prompt, max_tokens=4)
        pinned = system.complete("smol", "A pinned session says", max_tokens=2, session_id="chat")
        assert pinned.committed_tokens > 0
        system.debug_hold_decode("smol", 120_000)  # held past its 10 s budget
        with pytest.raises(ModelError) as e:
            system.complete("smol", "This request meets a stuck decode", max_tokens=4, cache=False)
        assert e.value.reason == "decode_timeout"
        status = system.status("smol")
        assert status["last_reset"]["sessions_dropped"] == ["chat"] and not status["sessions"]
        assert status["pid"] == pid and status["restarts"] == 0  # the weights stayed loaded
        again = system.complete("smol", prompt, max_tokens=4)
        assert again.cache_hit_kind == "exact" and again.generated == first.generated  # the cache survived
        with pytest.raises(ModelError) as e:  # the session is gone (reported), not silently rebuilt
            system.complete("smol", "A pinned session says more", max_tokens=2, session_id="chat",
                            expect_committed=pinned.committed_tokens)
        assert e.value.reason == "transcript_mismatch"
