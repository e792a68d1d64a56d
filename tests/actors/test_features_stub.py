"""Request features on the deterministic stub, where the real model cannot show them.

The stub's next token depends on the sequence content and the sampler's
parameters, so which sampler served each decode row is observable.
"""

from __future__ import annotations

from typing import Any

import pytest

from actors.model import messages as mm
from actors.model.backend import StubBackend
from actors.model.engine import Engine, EngineHooks, EngineSettings
from actors.model.llama import Decode
from actors.model.output import parse_markers
from actors.model.stream import SpanSplitter
from tests.actors.engine_util import Outbox, make_engine, opts, rid, run

MARKERS = parse_markers(None, {"start": "q", "end": "x", "payload_start": "[", "payload_end": "]"})
STUB = {"alphabet": "abcqx[] ", "n_seq_max": 2, "n_batch": 64}


class RecordingStub(StubBackend):
    """Remembers the temperature of the sampler behind every decode row."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.decode_temps: list[float] = []

    def step(self, rows: Any) -> Any:
        for r in rows:
            if isinstance(r, Decode):
                self.decode_temps.append(r.sampler.options.temperature)
        return super().step(rows)


def engine(out: Outbox, backend: StubBackend, **kw: Any) -> Engine:
    return Engine(EngineSettings("m", markers=MARKERS, **kw), backend, out.emit,
                  hooks=EngineHooks(done=out.done.append))


def test_tool_call_syntax_is_greedy_payload_uses_request_sampler() -> None:
    be = RecordingStub(STUB)
    out = Outbox()
    eng = engine(out, be)
    r = rid()
    eng.handle(mm.Complete("m", r, "c", prompt="abc", options=opts(max_tokens=120, sampler={"temperature": 0.9,
                                                                                               "seed": 7})))
    run(eng)
    res = out.final(r)
    pieces = [be.piece(t) for t in res.generated]
    # Replay the span state before each decoded token (token 0 was sampled without a decode).
    sp = SpanSplitter(MARKERS)
    expected = []
    for piece in pieces[:-1]:
        sp.feed(piece)
        expected.append(0.0 if sp.wants_greedy() else 0.9)
    assert be.decode_temps == expected[: len(be.decode_temps)]
    assert 0.0 in be.decode_temps and 0.9 in be.decode_temps  # both samplers were really used
    assert res.tool_calls  # the run did contain tool calls


def test_stream_events_keep_order_and_concatenate() -> None:
    be = StubBackend(STUB)
    out = Outbox()
    eng = engine(out, be)
    r = rid()
    eng.handle(mm.Infer("m", r, "c", prompt="abc", options=opts(max_tokens=120)))
    run(eng)
    msgs = out.for_req(r)
    done = msgs[-1]
    assert isinstance(done, mm.Done)
    calls, current = [], ""
    for m in msgs[:-1]:
        if isinstance(m, mm.TokenChunk) and m.kind == "tool_call":
            current += m.text
        elif isinstance(m, mm.ToolCallEnd):
            assert m.text == current  # the deltas of a call concatenate to its end event
            calls.append(m.text)
            current = ""
    assert tuple(calls) == done.result.tool_calls and calls
    text = "".join(m.text for m in msgs if isinstance(m, mm.TokenChunk) and m.kind == "text")
    assert text == done.result.reply
    assert sum(len(m.token_ids) for m in msgs if isinstance(m, mm.TokenChunk)) == len(done.result.generated)


def test_timeout_ends_request_with_partial_output() -> None:
    out = Outbox()
    eng, _ = make_engine(out, step_delay_s=0.01)
    r = rid()
    eng.handle(mm.Complete("m", r, "c", prompt="abc", options=opts(max_tokens=10_000, timeout_s=0.2)))
    run(eng)
    res = out.final(r)
    assert res.finish_reason == "timeout"
    # Each stub step sleeps at least 0.01 s, so a 0.2 s deadline leaves room for at most 20 steps, and
    # the deadline is checked before every step: a load-independent bound on how long it ran.
    assert 0 < len(res.generated) <= 0.2 / 0.01
    assert not eng.active and eng.free == [0, 1, 2, 3]  # nothing left running, sequence freed


def test_verify_busy_unless_idle_and_leaves_sessions_alone() -> None:
    out = Outbox()
    eng, be = make_engine(out)
    sess = rid()
    eng.handle(mm.Complete("m", sess, "c", prompt="hello", options=opts(max_tokens=4, session_id="s")))
    run(eng)
    pinned = be.kv_tokens(eng.sessions["s"].seq)
    draft = out.final(sess).generated
    # A draft of the same greedy stub verifies fully.
    d = rid()
    eng.handle(mm.Complete("m", d, "c", prompt="abc", options=opts(max_tokens=6)))
    run(eng)
    cands = list(out.final(d).generated)
    v = rid()
    eng.handle(mm.Verify("m", v, "c", prefix="abc", candidates=cands))
    assert out.final(v).value == {"accepted": 6, "next": out.final(v).value["next"], "eog": False}
    bad = [*cands[:2], (cands[2] % 200) + 4 if cands[2] != (cands[2] % 200) + 4 else 5, *cands[3:]]
    v2 = rid()
    eng.handle(mm.Verify("m", v2, "c", prefix="abc", candidates=bad))
    assert out.final(v2).value["accepted"] == 2 and out.final(v2).value["next"] == cands[2]
    assert be.kv_tokens(eng.sessions["s"].seq) == pinned and draft
    assert all(be.seq_len(s) == 0 for s in eng.free)
    busy = rid()
    eng.handle(mm.Infer("m", rid(), "c", prompt="abc", options=opts(max_tokens=50)))
    eng.handle(mm.Verify("m", busy, "c", prefix="abc", candidates=cands))
    assert out.final(busy).reason == "busy"
    run(eng)


@pytest.mark.parametrize(("kw", "reason"), [
    ({"stop_sequences": "END"}, "bad_option"),
    ({"stop_sequences": ("",)}, "bad_option"),
    ({"thinking": "maybe"}, "bad_option"),
    ({"thinking_budget_tokens": 1.5}, "bad_option"),
    ({"timeout_s": 0}, "bad_option"),
    ({"sampler": {"temperature": -1}}, "bad_option"),
    ({"sampler": {"tempurature": 1}}, "bad_option"),
])
def test_invalid_feature_options_are_refused_before_admission(kw: dict[str, Any], reason: str) -> None:
    out = Outbox()
    eng, _ = make_engine(out)
    r = rid()
    eng.handle(mm.Complete("m", r, "c", prompt="abc", options=opts(**kw)))
    err = out.final(r)
    assert isinstance(err, mm.ErrorReply) and err.reason == reason
    assert not eng.active and not eng.pending


def test_adapters_refused_clearly_by_a_backend_without_them() -> None:
    out = Outbox()
    eng, _ = make_engine(out)
    r = rid()
    eng.handle(mm.LoadAdapter("m", r, "c", path=__file__))
    err = out.final(r)
    assert err.reason == "not_supported"
    r = rid()
    eng.handle(mm.LoadAdapter("m", r, "c", path="/nonexistent/lora.gguf"))
    assert out.final(r).reason == "no_such_file"
    assert eng.adapters.entries == {}


def test_published_status_says_generating_before_the_first_token_leaves() -> None:
    """A caller that asks for status the moment its first token arrives must not read ``prefilling``.

    The door hands a token over in well under a millisecond, so the view a status
    reads (published by the engine) has to move before the token is emitted.
    """
    seen: list[str] = []
    eng: Engine | None = None

    def emit(dest: Any, msg: Any) -> None:
        if isinstance(msg, mm.TokenChunk) and not seen:
            assert eng is not None
            seen.append(eng.status()["phase"])

    eng = Engine(EngineSettings("m"), StubBackend({"n_seq_max": 1, "n_batch": 64}), emit, hooks=EngineHooks())
    eng.handle(mm.Infer("m", rid(), "c", prompt="one prompt of several tokens", options=opts(max_tokens=4)))
    run(eng)
    assert seen == ["generating"]
