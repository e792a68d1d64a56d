"""The model actor on the real bundled model (SmolLM2-135M): cache paths, sessions, concurrency, crashes."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.api import ModelError, System
from actors.cache import messages as cm
from actors.cache.policy import SavePolicy
from actors.model import messages as mm
from actors.supervisor import runtime
from tests.actors import toy_actors as toy
from tests.actors.conftest import running_system

# Rows are the exact prompt (no trim, no alignment), so a repeated prompt is an exact hit.
POLICY = SavePolicy(min_tokens=8, cold_min_tokens=8, continued_interval=0, boundary_trim_tokens=0,
                    boundary_align_tokens=1)
CONTEXT = {"n_ctx": 2048, "n_batch": 256, "n_seq_max": 4}
SYSTEM = ("You are a support assistant for a hardware store. Store hours are 8am to 6pm Monday to Saturday. "
          "We sell tools, paint, garden supplies and plumbing parts.")
PROMPTS = ["The capital of France is", "Water boils at a temperature of", "The largest planet in the solar system is",
           "A good way to learn programming is"]

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("real"), default_tier="ram", policy=POLICY) as system:
        system.load_model("smol", context=CONTEXT, embeddings=True)
        yield system


def cold(s: System, prompt: object, n: int = 12) -> tuple[int, ...]:
    return s.complete("smol", prompt, max_tokens=n, cache=False).generated


def test_cold_then_exact_warm_identical(real: System) -> None:
    prompt = SYSTEM + " Question: are you open on Sunday?"
    first = real.complete("smol", prompt, max_tokens=12)
    assert first.cache_hit_kind == "cold" and first.cache_delta.read == 0
    warm = real.complete("smol", prompt, max_tokens=12)
    assert warm.cache_hit_kind == "exact"
    assert warm.generated == first.generated and warm.reply == first.reply
    # Two tokens on an exact hit: the first from the restored logits, the second sampled after one step that
    # evaluates the first, and never evaluated itself (nothing in this request reads it).
    steps = real.status("smol")["counters"]["steps"]
    two = real.complete("smol", prompt, max_tokens=2)
    assert two.finish_reason == "length" and two.generated == first.generated[:2]
    assert real.status("smol")["counters"]["steps"] - steps == 1
    n_prompt = warm.stats["prompt_tokens"]
    assert warm.cache_delta.read == n_prompt
    assert warm.stats["ttft_ms"] < first.stats["ttft_ms"]
    assert real.observe("smol").last_cache_hit == {"kind": "exact", "prefix_len": n_prompt}


def test_block_prefix_is_partial_hit_with_cold_output(real: System) -> None:
    base = real.tokenize("smol", SYSTEM + " Question: do you deliver?")
    real.prefill_only("smol", base)
    other = base[:32] + real.tokenize("smol", " Tell me something about paint colours please.", add_special=False)
    warm = real.complete("smol", other, max_tokens=12)
    assert warm.cache_hit_kind == "partial" and warm.cache_delta.read >= 32
    assert warm.generated == cold(real, other)


def test_parent_key_resume(real: System) -> None:
    t1 = real.complete("smol", SYSTEM + " Question: what do you sell?", max_tokens=10)
    assert t1.finish_key is not None
    p2 = list(t1.context_tokens) + real.tokenize("smol", " And what are your hours?", add_special=False)
    t2 = real.complete("smol", p2, max_tokens=10, parent_key=t1.finish_key)
    assert t2.cache_hit_kind == "partial" and t2.cache_delta.read == t1.committed_tokens
    assert t2.generated == cold(real, p2, 10)


def test_prefill_only_chaining(real: System) -> None:
    turn1 = real.tokenize("smol", SYSTEM + " Customer: hello there.")
    turn2 = turn1 + real.tokenize("smol", " Customer: do you sell hammers?", add_special=False)
    k1 = real.prefill_only("smol", turn1)
    assert k1.finish_reason == "prefill" and k1.finish_key is not None and k1.committed_tokens == len(turn1)
    k2 = real.prefill_only("smol", turn2, parent_key=k1.finish_key)
    assert k2.cache_hit_kind == "partial"
    assert k2.cache_delta.read == len(turn1) and k2.cache_delta.created == len(turn2) - len(turn1)
    r = real.complete("smol", turn2, max_tokens=8)
    assert r.cache_hit_kind == "exact" and r.generated == cold(real, turn2, 8)


def test_sticky_session_turn_two_and_continue(real: System) -> None:
    t1 = real.complete("smol", SYSTEM + " Customer: hi!", max_tokens=8, session_id="conv-1")
    p2 = list(t1.context_tokens) + real.tokenize("smol", " Customer: bye!", add_special=False)
    t2 = real.complete("smol", p2, max_tokens=8, session_id="conv-1")
    assert t2.cache_hit_kind == "sticky" and t2.cache_delta.read == t1.committed_tokens
    assert t2.generated == cold(real, p2, 8)
    suffix = real.tokenize("smol", " Customer: one more thing.", add_special=False)
    t3 = real.continue_("smol", suffix, session_id="conv-1", max_tokens=8)
    assert t3.cache_hit_kind == "continuation" and t3.cache_delta.read == t2.committed_tokens
    assert t3.generated == cold(real, list(t2.context_tokens) + suffix, 8)
    assert real.end_session("smol", "conv-1") is True
    with pytest.raises(ModelError) as e:
        real.continue_("smol", suffix, session_id="conv-1")
    assert e.value.reason == "no_session"


def test_four_concurrent_equal_solo(real: System) -> None:
    solo = {p: cold(real, p, 16) for p in PROMPTS}
    out: dict[str, tuple[int, ...]] = {}
    seqs: set[int] = set()
    errors: list[BaseException] = []

    def work(p: str) -> None:
        try:
            r = real.complete("smol", p, max_tokens=16, cache=False)
            out[p] = r.generated
            seqs.add(r.stats["seq"])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(p,)) for p in PROMPTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert out == solo
    assert len(seqs) > 1  # they really shared the batch


def test_cancel_mid_stream(real: System) -> None:
    stream = real.infer("smol", "Once upon a time, in a land far away, there lived", max_tokens=400)
    got = []
    for chunk in stream:
        got.append(chunk)
        if len(got) == 3:
            break
    assert stream.result is not None and stream.result.finish_reason == "cancelled"
    assert len(stream.result.generated) < 400
    assert real.status("smol")["phase"] == "idle"


def test_tokens_stream_to_a_subscriber_actor(real: System) -> None:
    sub = real.asys.createActor(toy.Subscriber)
    got = runtime.ask(real.asys, sub, toy.Subscribe(uuid.uuid4().hex, real.tree.models, "smol", PROMPTS[0], 16), 60)
    assert got.error is None
    assert "".join(t for t, _i, _ts in got.chunks) == got.result.reply
    assert [i for _t, ids, _ts in got.chunks for i in ids] == list(got.result.generated)
    assert got.result.generated == cold(real, PROMPTS[0], 16)


def test_a_resent_chat_is_not_tokenized_again_and_still_hits_exactly(real: System) -> None:
    """A chat front end resends the conversation every turn: only its new part is tokenized, and the
    tokens are those of the whole rendered text (the next turn's prompt starts with this turn's row)."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Do you sell paint?"}]
    before = real.status("smol")["tokenizer"]
    first = real.complete("smol", mm.ChatPrompt(tuple(messages)), max_tokens=6)
    again = real.complete("smol", mm.ChatPrompt(tuple(messages)), max_tokens=6)
    assert again.cache_hit_kind == "exact" and again.generated == first.generated
    whole = real.tokenize("smol", real.apply_chat_template("smol", messages), add_special=True)
    assert again.cache_delta.read == len(whole) == again.stats["prompt_tokens"]
    after = real.status("smol")["tokenizer"]
    assert after["reused"] - before["reused"] >= 1 and after["reused_bytes"] > before["reused_bytes"]


def test_pass_throughs(real: System) -> None:
    toks = real.tokenize("smol", "hello world")
    assert real.detokenize("smol", toks).strip() == "hello world"
    text = real.apply_chat_template("smol", [{"role": "user", "content": "hi"}])
    assert "hi" in text
    ids = real.apply_chat_template("smol", [{"role": "user", "content": "hi"}], tokenize=True)
    assert ids and all(isinstance(t, int) for t in ids)
    vec = real.embed("smol", "hello world")
    assert len(vec) == 576


def test_crashes_mid_stream_restart_and_saved_rows_still_hit(tmp_path: Path) -> None:
    with running_system(tmp_path, default_tier="disk", policy=POLICY) as s:
        s.load_model("smol", context=CONTEXT, allow_debug_crash=True)
        prompt = SYSTEM + " Question: can I return a drill?"
        base = s.complete("smol", prompt, max_tokens=8)
        assert base.cache_hit_kind == "cold"
        runtime.ask(s.asys, s.tree.meta, cm.WaitIdle("idle"), 30)  # published on disk before the crash
        for i, how in enumerate(["kill", "segv"]):
            stream = s.infer("smol", "Once upon a time, in a small village by the sea,", max_tokens=400)
            it = iter(stream)
            next(it)
            t0 = time.monotonic()
            s.debug_crash("smol", how)
            with pytest.raises(ModelError) as e:
                for _ in it:
                    pass
            assert e.value.reason == "model_crashed"
            assert time.monotonic() - t0 < 2.0
            r = s.complete("smol", prompt, max_tokens=8)
            assert r.cache_hit_kind == "exact" and r.generated == base.generated
            assert s.list_models()[0]["restarts"] == i + 1


def test_a_chat_turn_saves_one_row_and_a_cold_prompt_two(tmp_path: Path) -> None:
    # The default policy: a cold prompt keeps a whole-prompt row (a resend is an exact hit) and a finish
    # row; a turn that restored the conversation and added one message keeps its finish row only.
    with running_system(tmp_path, default_tier="ram", policy=SavePolicy()) as s:
        s.load_model("smol", context=CONTEXT)

        def saves() -> int:
            return int(s.status("smol")["counters"]["saves"])

        prompt = real_tokens(s, SYSTEM * 2 + " Customer: do you sell ladders?")
        assert 64 <= len(prompt) < 256  # a row's worth, below the cold boundary save
        before = saves()
        t1 = s.complete("smol", prompt, max_tokens=8)
        assert t1.cache_hit_kind == "cold" and saves() - before == 2
        p2 = list(t1.context_tokens) + real_tokens(s, " Customer: and paint?", special=False)
        before = saves()
        t2 = s.complete("smol", p2, max_tokens=8)
        assert t2.cache_hit_kind == "partial" and t2.cache_delta.read == t1.committed_tokens
        assert saves() - before == 1
        again = s.complete("smol", prompt, max_tokens=8)
        assert again.cache_hit_kind == "exact" and again.generated == t1.generated


def real_tokens(s: System, text: str, special: bool = True) -> list[int]:
    return list(s.tokenize("smol", text, add_special=special))
