"""The model engine on the deterministic stub backend: scheduling, cache use, sessions, cancel."""

from __future__ import annotations

from typing import Any

import pytest

from actors.cache.service import CacheService
from actors.model import messages as mm
from actors.model.engine import Engine
from tests.actors.engine_util import Outbox, complete, make_engine, opts, rid, run

PROMPT = "the quick brown fox jumps over the lazy dog; " * 2  # 91 tokens with BOS


def submit(eng: Engine, prompt: Any, cls: type = mm.Complete, **kw: Any) -> str:
    r = rid()
    eng.handle(cls("m", r, "caller", prompt=prompt, options=opts(**kw)))
    return r


def test_complete_is_deterministic_and_text_matches_tokens() -> None:
    out = Outbox()
    eng, be = make_engine(out)
    a = complete(eng, out, PROMPT, max_tokens=12)
    b = complete(eng, out, PROMPT, max_tokens=12)
    assert isinstance(a, mm.Completion)
    assert a.generated == b.generated and len(a.generated) == 12
    assert a.reply == be.detokenize(a.generated)
    assert a.finish_reason == "length" and a.cache_hit_kind == "cold"
    assert a.context_tokens[: len(be.tokenize(PROMPT))] == tuple(be.tokenize(PROMPT))
    assert a.committed_tokens == len(a.context_tokens)
    assert eng.free == [0, 1, 2, 3] and not eng.active
    assert sorted(out.done) == sorted({m.req_id for _, m in out.sent})


@pytest.mark.parametrize("max_tokens", [2, 3, 12])
def test_a_reply_of_n_tokens_takes_n_minus_one_decode_steps(max_tokens: int) -> None:
    """The first token comes from the prompt's logits and the last is sampled without being evaluated (nothing in
    this request reads its KV), so a reply of n tokens costs n - 1 steps after the prompt's, not n."""

    def run_once(n: int) -> tuple[int, mm.Completion]:
        out = Outbox()
        eng, _be = make_engine(out)
        r = complete(eng, out, PROMPT, max_tokens=n)
        assert isinstance(r, mm.Completion) and len(r.generated) == n and r.finish_reason == "length"
        return eng.counters["steps"], r

    prompt_steps, _ = run_once(1)  # the prompt's prefill; its first token needs no step
    steps, r = run_once(max_tokens)
    assert steps - prompt_steps == max_tokens - 1
    n_prompt = r.stats["prompt_tokens"]
    assert r.committed_tokens == n_prompt + max_tokens - 1  # the sequence ends before the last token
    assert r.context_tokens[n_prompt:] == r.generated[:-1]


def test_fifo_admission_beyond_slots() -> None:
    out = Outbox()
    eng, _be = make_engine(out, n_seq_max=2, n_batch=64)
    ids = [submit(eng, f"prompt number {i}", max_tokens=4) for i in range(5)]
    st = eng.status()
    assert st["queue_depth"] == 2 and st["pending_len"] == 3
    assert st["pending"] == ids[2:]
    admitted: list[str] = []
    while eng.has_work():
        for r in eng.active:
            if r not in admitted:
                admitted.append(r)
        eng.tick()
    assert admitted == ids
    for r in ids:
        assert out.final(r).finish_reason == "length"


def test_chunked_prefill_and_cold_save_boundary(service: CacheService) -> None:
    out = Outbox()
    cache = service.client()
    eng, be = make_engine(out, cache=cache, chunk=16, n_batch=64)
    prompt = be.tokenize(PROMPT)  # 91 tokens: cold save at align_down(91, 8) = 88
    r = submit(eng, prompt, max_tokens=3)
    run(eng)
    slices = [n for step in be.steps for (_s, kind, n) in step if kind == "prefill"]
    # alone, a prompt fills the batch (no stream waits on the step), and a slice stops exactly at the
    # cold-save boundary before the rest of the prompt
    assert slices[:3] == [64, 24, 3]
    assert out.final(r).cache_hit_kind == "cold"
    hit = cache.lookup(be.fingerprint, be.quant, be.ctx_hash, prompt[:88])
    assert hit is not None and hit.kind == "exact" and hit.has_logits


def test_prefill_is_chunked_while_a_stream_generates() -> None:
    out = Outbox()
    eng, be = make_engine(out, chunk=16, n_batch=64, n_seq_max=2)
    submit(eng, "a" * 5, max_tokens=40)
    while not any(k == "decode" for step in be.steps for (_s, k, _n) in step):
        eng.tick()
    submit(eng, PROMPT, max_tokens=2)
    be.steps.clear()
    for _ in range(4):
        eng.tick()
    mixed = [step for step in be.steps if any(k == "decode" for (_s, k, _n) in step)]
    slices = [n for step in mixed for (_s, kind, n) in step if kind == "prefill"]
    assert slices and max(slices) <= 16


def test_budget_shared_decoders_first() -> None:
    out = Outbox()
    eng, be = make_engine(out, chunk=32, n_batch=40, n_seq_max=4)
    submit(eng, "a" * 5, max_tokens=30)
    run_ticks = 0
    while run_ticks < 3:
        eng.tick()
        run_ticks += 1
    submit(eng, "b" * 100, max_tokens=2)
    submit(eng, "c" * 100, max_tokens=2)
    run(eng)
    for step in be.steps:
        assert sum(n for _s, _k, n in step) <= 40
        seqs = [s for s, _k, _n in step]
        assert len(seqs) == len(set(seqs))


def test_sampler_isolation_across_sequences() -> None:
    solo = {}
    samplers = [{"temperature": 0.7, "seed": s} for s in (1, 2, 3)] + [{}]
    for i, sp in enumerate(samplers):
        out = Outbox()
        eng, _ = make_engine(out)
        solo[i] = complete(eng, out, PROMPT, max_tokens=10, sampler=sp).generated
    assert len(set(solo.values())) == 4  # samplers really differ
    out = Outbox()
    eng, _ = make_engine(out)
    ids = [submit(eng, PROMPT, max_tokens=10, sampler=sp) for sp in samplers]
    run(eng)
    for i, r in enumerate(ids):
        assert out.final(r).generated == solo[i]


def test_infer_streams_chunks_then_done_utf8_safe() -> None:
    out = Outbox()
    eng, be = make_engine(out, alphabet="é✓ab")
    r = submit(eng, "hello", cls=mm.Infer, max_tokens=40)
    run(eng)
    msgs = out.for_req(r)
    chunks = [m for m in msgs if isinstance(m, mm.TokenChunk)]
    assert isinstance(msgs[-1], mm.Done) and len(msgs) == len(chunks) + 1
    result = msgs[-1].result
    for c in chunks:
        c.text.encode("utf-8")
        assert "\ufffd" not in c.text
    assert "".join(c.text for c in chunks) == result.reply
    assert [t for c in chunks for t in c.token_ids] == list(result.generated)
    assert any(c.text == "" and c.token_ids for c in chunks)  # a held-back partial character
    assert result.reply.encode("utf-8") == b"".join(be.piece(t) for t in result.generated)


@pytest.mark.parametrize("phase", ["pending", "prefilling", "generating"])
@pytest.mark.parametrize("cls", [mm.Complete, mm.Infer])
def test_cancel_in_each_phase(phase: str, cls: type) -> None:
    out = Outbox()
    eng, _ = make_engine(out, n_seq_max=1, n_batch=16, chunk=8)
    blocker = submit(eng, "x" * 40, max_tokens=50) if phase == "pending" else None
    r = submit(eng, "y" * 60, cls=cls, max_tokens=50)
    if phase == "prefilling":
        eng.tick()
        assert eng.active[r].phase == "prefilling"
    elif phase == "generating":
        for _ in range(12):
            eng.tick()
        assert eng.active[r].phase == "generating" and eng.active[r].generated
    else:
        assert eng.status()["pending"] == [r]
    eng.handle(mm.Cancel("m", rid(), None, target=r))
    eng.handle(mm.Cancel("m", rid(), None, target=r))  # idempotent
    final = out.final(r)
    result = final.result if cls is mm.Infer else final
    assert isinstance(final, mm.Done if cls is mm.Infer else mm.Completion)
    assert result.finish_reason == "cancelled"
    if blocker:
        eng.handle(mm.Cancel("m", rid(), None, target=blocker))
    run(eng)
    assert eng.free == [0] and not eng.active and not eng.pending


def test_exact_hit_restores_logits_and_samples_without_decode(service: CacheService) -> None:
    out = Outbox()
    cache = service.client()
    eng, be = make_engine(out, cache=cache)
    cold_out = Outbox()
    cold_eng, _ = make_engine(cold_out)
    cold = complete(cold_eng, cold_out, PROMPT, max_tokens=8)
    r = submit(eng, PROMPT, cls=mm.PrefillOnly)
    run(eng)
    pre = out.final(r)
    assert pre.finish_reason == "prefill" and pre.finish_key is not None and pre.generated == ()
    n_steps = len(be.steps)
    warm = complete(eng, out, PROMPT, max_tokens=8)
    assert warm.cache_hit_kind == "exact"
    assert warm.generated == cold.generated
    assert warm.cache_delta.read == len(be.tokenize(PROMPT))
    first_step = be.steps[n_steps]
    assert first_step == [(first_step[0][0], "prefill", 1)]  # only the sampled first token is appended


def test_partial_hit_same_output_as_cold(service: CacheService) -> None:
    out = Outbox()
    eng, be = make_engine(out, cache=service.client())
    base = be.tokenize(PROMPT)
    complete(eng, out, base, max_tokens=4)
    other = base[:64] + be.tokenize(" and then something else entirely", add_special=False)
    cold_out = Outbox()
    cold_eng, _ = make_engine(cold_out)
    cold = complete(cold_eng, cold_out, other, max_tokens=8)
    warm = complete(eng, out, other, max_tokens=8)
    assert warm.cache_hit_kind == "partial" and warm.cache_delta.read >= 32
    assert warm.generated == cold.generated


def test_parent_key_resume(service: CacheService) -> None:
    out = Outbox()
    eng, be = make_engine(out, cache=service.client())
    turn1 = complete(eng, out, PROMPT, max_tokens=6)
    assert turn1.finish_key is not None
    prompt2 = list(turn1.context_tokens) + be.tokenize(" next question?", add_special=False)
    turn2 = complete(eng, out, prompt2, max_tokens=6, parent_key=turn1.finish_key)
    assert turn2.cache_hit_kind == "partial"
    assert turn2.cache_delta.read == turn1.committed_tokens
    cold_out = Outbox()
    cold_eng, _ = make_engine(cold_out)
    assert complete(cold_eng, cold_out, prompt2, max_tokens=6).generated == turn2.generated


def test_prefill_only_chaining(service: CacheService) -> None:
    out = Outbox()
    eng, be = make_engine(out, cache=service.client())
    t1 = be.tokenize(PROMPT)
    t2 = t1 + be.tokenize(" more context here", add_special=False)
    r1 = submit(eng, t1, cls=mm.PrefillOnly)
    run(eng)
    k1 = out.final(r1)
    r2 = submit(eng, t2, cls=mm.PrefillOnly, parent_key=k1.finish_key)
    run(eng)
    k2 = out.final(r2)
    assert k1.cache_hit_kind == "cold" and k2.cache_hit_kind == "partial"
    assert k2.cache_delta.read == len(t1) and k2.cache_delta.created == len(t2) - len(t1)
    assert k2.finish_key is not None and k2.finish_key != k1.finish_key


def test_sticky_session_extends_in_place() -> None:
    out = Outbox()
    eng, be = make_engine(out)
    t1 = complete(eng, out, PROMPT, max_tokens=5, session_id="s1")
    assert t1.cache_hit_kind == "cold"
    assert eng.status()["sessions"][0]["session_id"] == "s1"
    n_steps = len(be.steps)
    prompt2 = list(t1.context_tokens) + be.tokenize(" again", add_special=False)
    t2 = complete(eng, out, prompt2, max_tokens=5, session_id="s1")
    assert t2.cache_hit_kind == "sticky" and t2.cache_delta.read == t1.committed_tokens
    prefilled = sum(n for step in be.steps[n_steps:] for (_s, k, n) in step if k == "prefill")
    assert prefilled <= len(prompt2) - t1.committed_tokens + 1
    cold_out = Outbox()
    cold_eng, _ = make_engine(cold_out)
    assert complete(cold_eng, cold_out, prompt2, max_tokens=5).generated == t2.generated
    # divergence frees the pinned sequence and runs cold
    t3 = complete(eng, out, "something completely different", max_tokens=3, session_id="s1")
    assert t3.cache_hit_kind == "cold"
    assert len(eng.sessions) == 1
    eng.handle(mm.EndSession("m", "e1", "caller", session_id="s1"))
    assert out.final("e1").value is True
    eng.handle(mm.EndSession("m", "e2", "caller", session_id="s1"))
    assert out.final("e2").value is False
    assert eng.free == [0, 1, 2, 3]


def test_continue_no_session_and_sticky_busy() -> None:
    out = Outbox()
    eng, be = make_engine(out)
    r = rid()
    eng.handle(mm.Continue("m", r, "caller", suffix=(5, 6), options=opts(session_id="nope")))
    assert out.final(r).reason == "no_session"
    t1 = complete(eng, out, PROMPT, max_tokens=4, session_id="s")
    busy = submit(eng, [*list(t1.context_tokens), 7, 8], max_tokens=30, session_id="s")
    r2 = submit(eng, [*list(t1.context_tokens), 9], max_tokens=3, session_id="s")
    assert out.final(r2).reason == "sticky_busy"
    r3 = rid()
    eng.handle(mm.Continue("m", r3, "caller", suffix=(9,), options=opts(session_id="s")))
    assert out.final(r3).reason == "sticky_busy"
    run(eng)
    t2 = out.final(busy)
    r4 = rid()
    suffix = be.tokenize(" tail", add_special=False)
    eng.handle(mm.Continue("m", r4, "caller", suffix=tuple(suffix), options=opts(session_id="s", max_tokens=4)))
    run(eng)
    t3 = out.final(r4)
    assert t3.cache_hit_kind == "continuation" and t3.cache_delta.read == t2.committed_tokens
    cold_out = Outbox()
    cold_eng, _ = make_engine(cold_out)
    assert complete(cold_eng, cold_out, list(t2.context_tokens) + suffix, max_tokens=4).generated == t3.generated


def test_session_pool_overrun_is_clear_error_and_plain_requests_evict() -> None:
    out = Outbox()
    eng, _ = make_engine(out, n_seq_max=2, n_batch=16)
    complete(eng, out, "first session", max_tokens=2, session_id="a")
    complete(eng, out, "second session", max_tokens=2, session_id="b")
    r = submit(eng, "third session", max_tokens=2, session_id="c")
    err = out.final(r)
    assert isinstance(err, mm.ErrorReply) and err.reason == "session_pool_full"
    plain = complete(eng, out, "no session", max_tokens=2)  # evicts the LRU idle session
    assert plain.finish_reason == "length"
    assert [s["session_id"] for s in eng.status()["sessions"]] == ["b"]


@pytest.mark.parametrize(
    ("kwargs", "prompt", "reason"),
    [
        ({"sampler": {"temprature": 1}}, "hi", "bad_option"),
        ({"max_tokens": -1}, "hi", "bad_option"),
        ({}, "", "bad_request"),
        ({}, [1, 2, 99999], "bad_token"),
        ({}, "x" * 5000, "context_overflow"),
    ],
)
def test_bad_input_is_clear_error(kwargs: dict, prompt: Any, reason: str) -> None:
    out = Outbox()
    eng, _ = make_engine(out, n_ctx=4096)
    r = submit(eng, prompt, **kwargs)
    err = out.final(r)
    assert isinstance(err, mm.ErrorReply) and err.reason == reason, err
    assert complete(eng, out, "still fine", max_tokens=2).finish_reason == "length"


def test_eog_stops_and_finish_save_has_no_logits(service: CacheService) -> None:
    out = Outbox()
    eng, _ = make_engine(out, cache=service.client(), eog_every=5)
    res = complete(eng, out, PROMPT, max_tokens=200)
    assert res.finish_reason == "stop" and len(res.generated) < 200


def test_continued_saves(tmp_path: Any) -> None:
    from actors.cache.policy import SavePolicy
    from tests.actors.conftest import cache_config

    policy = SavePolicy(min_tokens=8, cold_min_tokens=8, continued_interval=16, boundary_trim_tokens=0,
                        boundary_align_tokens=8)
    svc = CacheService(cache_config(tmp_path, policy=policy), writers=0)
    try:
        out = Outbox()
        eng, _ = make_engine(out, cache=svc.client(), policy=policy)
        res = complete(eng, out, "short prompt", max_tokens=40)
        assert res.finish_reason == "length"
        counters = svc.get_counters()
        assert counters.get("saves_continued", 0) >= 2
        assert res.cache_delta.created == res.committed_tokens
    finally:
        svc.close()


def test_evict_and_shutdown_save_sessions(service: CacheService) -> None:
    out = Outbox()
    cache = service.client()
    eng, be = make_engine(out, cache=cache)
    t1 = complete(eng, out, PROMPT, max_tokens=4, session_id="s")
    eng.handle(mm.Evict("m", "ev", "caller", session_id="s"))
    ev = out.final("ev").value
    assert ev["evicted"] == 1 and eng.free == [0, 1, 2, 3]
    complete(eng, out, PROMPT + " other", max_tokens=6, session_id="t")
    r = submit(eng, "in flight", max_tokens=500)
    eng.tick()
    saved = eng.shutdown()
    assert saved >= 1
    assert out.final(r).reason == "model_stopping"
    assert not eng.sessions and eng.free == [0, 1, 2, 3]
    assert cache.lookup(be.fingerprint, be.quant, be.ctx_hash, list(t1.context_tokens)).kind == "exact"


def test_pass_throughs() -> None:
    out = Outbox()
    eng, be = make_engine(out)
    eng.handle(mm.Tokenize("m", "t", "c", text="hé"))
    assert out.final("t").value == be.tokenize("hé")
    eng.handle(mm.Detokenize("m", "d", "c", tokens=be.tokenize("hé", add_special=False)))
    assert out.final("d").value == "hé"
    eng.handle(mm.ApplyChatTemplate("m", "a", "c", messages=({"role": "user", "content": "hi"},)))
    assert "hi" in out.final("a").value
    eng.handle(mm.Embed("m", "e", "c", input="hi"))
    assert len(out.final("e").value) == 16
    eng.handle(mm.Detokenize("m", "bad", "c", tokens="nope"))
    assert out.final("bad").reason == "bad_request"
    eng.handle(mm.DebugCrash("m", "x", "c"))
    assert out.final("x").reason == "debug_disabled"
