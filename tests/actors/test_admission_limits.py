"""Admission limits (``max_pending``, ``on_full``) and ``expect_committed``: engine on the stub, then end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.api import ModelError
from actors.model import messages as mm
from actors.model.backend import StubBackend
from actors.model.engine import Engine, EngineHooks, EngineSettings
from actors.model.validate import AdmissionLimits, RequestError, check_committed, check_limits
from tests.actors.conftest import running_system
from tests.actors.engine_util import TEST_POLICY, Outbox, opts, rid, run

pytestmark = pytest.mark.timeout(300)


def engine(outbox: Outbox, limits: AdmissionLimits, **stub: object) -> Engine:
    return Engine(EngineSettings("m", policy=TEST_POLICY, limits=limits), StubBackend({"n_seq_max": 1, **stub}),
                  outbox.emit, hooks=EngineHooks(done=outbox.done.append))


def submit(eng: Engine, prompt: str = "hello", **kw: object) -> str:
    r = rid()
    eng.handle(mm.Complete("m", r, "caller", prompt=prompt, options=opts(max_tokens=4, **kw)))
    return r


def reason(outbox: Outbox, r: str) -> str | None:
    final = [m for m in outbox.for_req(r) if isinstance(m, mm.ErrorReply)]
    return final[0].reason if final else None


def test_max_pending_bounds_the_queue_and_the_rest_run() -> None:
    out = Outbox()
    eng = engine(out, AdmissionLimits(max_pending=2))
    ids = [submit(eng) for _ in range(5)]  # one runs, two wait, two are refused
    assert [reason(out, r) for r in ids] == [None, None, None, "seq_capacity", "seq_capacity"]
    assert len(eng.pending) == 2
    run(eng)
    assert all(isinstance(out.final(r), mm.Completion) for r in ids[:3])
    assert eng.counters["requests"] == 3 and eng.counters["errors"] == 2


def test_on_full_error_refuses_what_cannot_start_now() -> None:
    out = Outbox()
    eng = engine(out, AdmissionLimits(on_full="error"))
    first, second = submit(eng), submit(eng)
    assert reason(out, first) is None and reason(out, second) == "seq_capacity"
    assert not eng.pending
    run(eng)
    assert out.final(first).finish_reason == "length"
    third = submit(eng)  # the sequence is free again
    run(eng)
    assert out.final(third).finish_reason == "length"


def test_on_full_error_still_lets_a_pinned_session_continue() -> None:
    out = Outbox()
    eng = engine(out, AdmissionLimits(on_full="error"))
    t1 = submit(eng, session_id="s")
    run(eng)
    t2 = submit(eng, prompt="hello" + out.final(t1).reply + " more", session_id="s")
    run(eng)
    assert out.final(t2).cache_hit_kind == "sticky"


def test_expect_committed_matches_the_session_or_nothing_runs() -> None:
    out = Outbox()
    eng = engine(out, AdmissionLimits())
    t1 = submit(eng, session_id="s", expect_committed=0)
    run(eng)
    r1 = out.final(t1)
    held = list(r1.context_tokens)
    assert r1.committed_tokens == len(held) == len(eng.sessions["s"].tokens)
    before = eng.counters["tokens_generated"]
    bad = submit(eng, prompt="hello more", session_id="s", expect_committed=len(held) + 1)
    assert reason(out, bad) == "transcript_mismatch" and not eng.pending and not eng.active
    bad_list = submit(eng, prompt="hello more", session_id="s", expect_committed=(*held[:-1], held[-1] + 1))
    assert reason(out, bad_list) == "transcript_mismatch"
    assert eng.counters["tokens_generated"] == before  # nothing generated
    assert eng.sessions["s"].tokens == held  # the session is left as it was
    good = mm.Continue("m", rid(), "caller", suffix=[5, 6], options=opts(session_id="s", max_tokens=2,
                                                                          expect_committed=tuple(held)))
    eng.handle(good)
    run(eng)
    assert out.final(good.req_id).finish_reason == "length"
    stateless = submit(eng, expect_committed=3)  # nothing is held for a request without a session
    assert reason(out, stateless) == "transcript_mismatch"


@given(st.lists(st.integers(0, 50), max_size=8), st.lists(st.integers(0, 50), max_size=8))
def test_check_committed_accepts_exactly_the_held_tokens(expected: list[int], held: list[int]) -> None:
    for view in (tuple(expected), len(expected)):
        try:
            check_committed(view, held)
            ok = True
        except RequestError as e:
            assert e.reason == "transcript_mismatch"
            ok = False
        assert ok == (tuple(expected) == tuple(held) if isinstance(view, tuple) else len(expected) == len(held))


@pytest.mark.parametrize("max_pending,on_full", [(-1, "queue"), ("5", "queue"), (True, "queue"), (4, "drop")])
def test_bad_limits_are_bad_options(max_pending: object, on_full: object) -> None:
    with pytest.raises(RequestError) as e:
        check_limits(max_pending, on_full)
    assert e.value.reason == "bad_option"


def test_limits_end_to_end_on_the_stub(tmp_path: Path) -> None:
    with running_system(tmp_path) as system:
        with pytest.raises(ModelError) as e:
            system.load_model("x", backend="stub", on_full="drop")
        assert e.value.reason == "bad_option"
        system.load_model("s", backend="stub", stub={"n_seq_max": 1, "step_delay_s": 0.01}, on_full="error")
        stream = system.infer("s", "a long one", max_tokens=200)
        chunks = iter(stream)  # kept: a dropped iterator closes (cancels) its stream
        next(chunks)  # it holds the only sequence now
        with pytest.raises(ModelError) as e:
            system.complete("s", "another", max_tokens=2)
        assert e.value.reason == "seq_capacity"
        stream.cancel()
        stream.close()
        r1 = system.complete("s", "turn one", max_tokens=3, session_id="a")
        with pytest.raises(ModelError) as e:
            system.complete("s", "turn one more", max_tokens=3, session_id="a",
                            expect_committed=r1.committed_tokens + 2)
        assert e.value.reason == "transcript_mismatch"
        r2 = system.complete("s", [*r1.context_tokens, 7], max_tokens=3, session_id="a",
                             expect_committed=list(r1.context_tokens))
        assert r2.cache_hit_kind == "sticky"


def test_expect_committed_on_the_real_model(tmp_path: Path) -> None:
    with running_system(tmp_path, default_tier="ram") as system:
        system.load_model("smol", context={"n_ctx": 512, "n_batch": 64, "n_seq_max": 1, "n_threads": 1})
        r1 = system.complete("smol", "The capital of France is", max_tokens=4, session_id="chat")
        more = list(r1.context_tokens) + system.tokenize("smol", " And of Spain?", add_special=False)
        with pytest.raises(ModelError) as e:
            system.complete("smol", more, max_tokens=4, session_id="chat", expect_committed=list(r1.context_tokens)[1:])
        assert e.value.reason == "transcript_mismatch"
        r2 = system.complete("smol", more, max_tokens=4, session_id="chat", expect_committed=r1.committed_tokens)
        assert r2.cache_hit_kind == "sticky" and len(r2.generated) == 4
