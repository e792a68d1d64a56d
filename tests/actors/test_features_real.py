"""The request feature surface end to end on the real model, through the actor tree.

SmolLM2 has no thinking or tool-call tokens of its own, so a GBNF grammar makes
it write them: a grammar can force ``<think>...</think>`` then an answer, and
the markers are matched on the bytes the model produced.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.api import ModelError, System
from actors.cache.policy import SavePolicy
from actors.model import messages as mm
from actors.model.stream import verify_signature
from tests.actors.conftest import running_system
from tests.native.fixtures import write_lora

POLICY = SavePolicy(min_tokens=8, cold_min_tokens=8, continued_interval=0, boundary_trim_tokens=0,
                    boundary_align_tokens=1)
CONTEXT = {"n_ctx": 2048, "n_batch": 256, "n_seq_max": 4}
KEY = b"test-node-thinking-key"
THINK = {"start": "<think>", "end": "</think>"}
TOOLS = {"start": "<tool_call>", "end": "</tool_call>"}
TOOLS_PAYLOAD = {**TOOLS, "payload_start": "<arg>", "payload_end": "</arg>"}
THINK_GRAMMAR = r'''root ::= "<think>" [a-z ]{3,40} "</think>" [A-Za-z ,.]{1,60}'''
OPEN_THINK_GRAMMAR = r'''root ::= "<think>" [a-z ]* "</think>" [A-Za-z ,.]{1,60}'''
TOOL_GRAMMAR = r'''root ::= "Calling. <tool_call>{\"name\": \"" [a-z]{2,8} "\"}</tool_call> Done."'''
PAYLOAD_GRAMMAR = (r'''root ::= "<tool_call>{\"name\": \"search\", \"query\": \"<arg>" [a-z ]{2,30} '''
                   r'''"</arg>\"}</tool_call>"''')

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


def chat(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def feat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("feat"), default_tier="ram", policy=POLICY,
                        thinking_key=KEY) as system:
        system.load_model("smol", context=CONTEXT, embeddings=True, thinking_markers=THINK,
                          tool_call_markers=TOOLS)
        yield system


def events(stream: Any) -> list[Any]:
    return list(stream)


# --------------------------------------------------------------------------- stop sequences


def test_stop_sequences_sync_and_streaming(feat: System) -> None:
    prompt = chat("Write one sentence about the sea.")
    base = feat.complete("smol", prompt, max_tokens=40, cache=False)
    toks = list(base.generated)
    # Text boundaries of each token, from cumulative detokenisation.
    ends = [len(feat.detokenize("smol", toks[: i + 1])) for i in range(len(toks))]
    text = feat.detokenize("smol", toks)
    assert base.reply == text and len(toks) > 6
    i = next(k for k in range(2, len(toks)) if ends[k] - ends[k - 1] >= 3)  # a token of 3+ chars
    inside = text[ends[i - 1] + 1: ends[i - 1] + 3]  # within one token's text
    j = next(k for k in range(3, len(toks)) if ends[k] - ends[k - 1] >= 2 and ends[k - 1] - ends[k - 2] >= 2)
    across = text[ends[j - 1] - 2: ends[j - 1] + 2]  # the last 2 chars of one token + first 2 of the next
    cases = [[inside], [across], ["zqxj never there"], [text[ends[4]:ends[4] + 4], text[ends[1]:ends[1] + 3]]]
    for stops in cases:
        first = min((text.find(s), s) for s in stops if s in text) if any(s in text for s in stops) else None
        r = feat.complete("smol", prompt, max_tokens=40, cache=False, stop_sequences=stops)
        stream = feat.infer("smol", prompt, max_tokens=40, cache=False, stop_sequences=stops)
        chunks = [c.text for c in stream if isinstance(c, mm.TokenChunk)]
        sr = stream.result
        assert sr is not None
        if first is None:
            assert r.reply == text and r.stop_sequence is None and r.finish_reason == base.finish_reason
        else:
            pos, s = first
            assert r.reply == text[:pos], stops
            assert r.stop_sequence == s and r.finish_reason == "stop" and r.stats["stop_sequence"] == s
            assert all(s not in c for c in chunks)
        assert "".join(chunks) == sr.reply == r.reply
        assert sr.stop_sequence == r.stop_sequence


# --------------------------------------------------------------------------- thinking


def test_thinking_streams_before_answer_and_signature_verifies(feat: System) -> None:
    prompt = chat("What is the capital of France?")
    stream = feat.infer("smol", prompt, max_tokens=80, thinking="enabled", grammar=THINK_GRAMMAR)
    evs = events(stream)
    r = stream.result
    assert r is not None
    kinds = [("end" if isinstance(e, mm.ThinkingEnd) else e.kind) for e in evs if not (
        isinstance(e, mm.TokenChunk) and not e.text)]
    assert "thinking" in kinds and "end" in kinds and "text" in kinds
    assert kinds.index("end") > max(i for i, k in enumerate(kinds) if k == "thinking")
    assert kinds.index("end") < min(i for i, k in enumerate(kinds) if k == "text")  # before any answer text
    end = next(e for e in evs if isinstance(e, mm.ThinkingEnd))
    thought = "".join(e.text for e in evs if isinstance(e, mm.TokenChunk) and e.kind == "thinking")
    assert end.text == thought == r.thinking and thought.strip()
    assert verify_signature(KEY, thought, end.signature) and r.thinking_signature == end.signature
    assert not verify_signature(b"another key", thought, end.signature)
    assert "<think>" not in r.reply and "</think>" not in r.reply and r.reply.strip()
    # disabled (the default): the same bytes are plain answer text, no thinking events
    plain = feat.complete("smol", prompt, max_tokens=80, grammar=THINK_GRAMMAR)
    assert plain.reply.startswith("<think>") and plain.thinking == ""


def test_thinking_budget_caps_deltas_and_model_moves_on(feat: System) -> None:
    prompt = chat("What is the capital of France?")
    stream = feat.infer("smol", prompt, max_tokens=80, thinking="enabled", thinking_budget_tokens=3,
                        grammar=OPEN_THINK_GRAMMAR)
    evs = events(stream)
    r = stream.result
    assert r is not None
    deltas = [e for e in evs if isinstance(e, mm.TokenChunk) and e.kind == "thinking" and e.text]
    assert 1 <= len(deltas) <= 3
    assert sum(isinstance(e, mm.ThinkingEnd) for e in evs) == 1
    assert r.reply.strip()  # the forced end marker moved the model on to its answer
    # the forced end marker is in the sequence the model continued from
    assert "</think>" in feat.detokenize("smol", list(r.generated))


def test_model_without_markers_ignores_thinking(tmp_path: Path) -> None:
    with running_system(tmp_path, default_tier="ram", policy=POLICY) as s:
        s.load_model("plain", context={"n_ctx": 512, "n_seq_max": 1})
        r = s.complete("plain", chat("Hi"), max_tokens=40, thinking="enabled", grammar=THINK_GRAMMAR)
        assert r.thinking == "" and r.reply.startswith("<think>")


# --------------------------------------------------------------------------- tool calls


def test_tool_call_deltas_concatenate_to_end_event(feat: System) -> None:
    stream = feat.infer("smol", chat("Look up the weather."), max_tokens=60, grammar=TOOL_GRAMMAR)
    evs = events(stream)
    r = stream.result
    assert r is not None
    body = "".join(e.text for e in evs if isinstance(e, mm.TokenChunk) and e.kind == "tool_call")
    ends = [e for e in evs if isinstance(e, mm.ToolCallEnd)]
    assert len(ends) == 1 and ends[0].complete
    assert ends[0].data == body.encode() and r.tool_calls == (body,)
    assert json.loads(body)["name"].isalpha()
    assert r.reply == "Calling.  Done."


def test_tool_call_with_payload_markers(tmp_path: Path) -> None:
    with running_system(tmp_path, default_tier="ram", policy=POLICY) as s:
        s.load_model("tools", context={"n_ctx": 512, "n_seq_max": 1}, tool_call_markers=TOOLS_PAYLOAD)
        stream = s.infer("tools", chat("Search for cats."), max_tokens=60, grammar=PAYLOAD_GRAMMAR,
                         temperature=0.8, seed=11)
        evs = events(stream)
        end = next(e for e in evs if isinstance(e, mm.ToolCallEnd))
        body = "".join(e.text for e in evs if isinstance(e, mm.TokenChunk) and e.kind == "tool_call")
        assert end.data.decode() == body
        assert body.startswith('{"name": "search", "query": "<arg>') and body.endswith('</arg>"}')


# --------------------------------------------------------------------------- grammar and samplers


def test_grammar_json_parses(feat: System) -> None:
    grammar = r'''root ::= "{\"city\": \"" [A-Za-z ]{1,20} "\", \"population\": " [0-9]{1,8} "}"'''
    r = feat.complete("smol", chat("Give me a city as JSON."), max_tokens=60, grammar=grammar)
    obj = json.loads(r.reply)
    assert set(obj) == {"city", "population"} and isinstance(obj["population"], int)


def test_concurrent_samplers_equal_their_solo_runs(feat: System) -> None:
    prompt = chat("Tell me a short story.")
    settings = [{"temperature": 0.9, "seed": 1}, {"temperature": 1.3, "seed": 2, "top_k": 20}]
    solo = [feat.complete("smol", prompt, max_tokens=24, cache=False, **kw).generated for kw in settings]
    assert solo[0] != solo[1]
    results: list[Any] = [None, None]

    def run(i: int) -> None:
        results[i] = feat.complete("smol", prompt, max_tokens=24, cache=False, **settings[i]).generated

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == solo


@pytest.mark.parametrize(("kw", "reason"), [
    ({"temperature": -0.5}, "bad_option"),
    ({"top_p": 2.0}, "bad_option"),
    ({"seed": "x"}, "bad_option"),
    ({"grammar": "root ::= [a-z"}, None),  # llama.cpp's parser says why
    ({"grammar": "start ::= \"a\""}, None),  # no root rule
    ({"stop_sequences": 5}, "bad_option"),
    ({"thinking": True}, "bad_option"),
])
def test_invalid_options_are_clear_errors(feat: System, kw: dict[str, Any], reason: str | None) -> None:
    with pytest.raises(ModelError) as e:
        feat.complete("smol", "Hello", max_tokens=4, **kw)
    assert e.value.reason == reason if reason else e.value.reason in ("bad_grammar", "bad_option")
    assert feat.complete("smol", "Hello", max_tokens=2).generated  # the model still serves


# --------------------------------------------------------------------------- LoRA


def test_lora_changes_output_and_keeps_rows_apart(feat: System, tmp_path: Path) -> None:
    path = str(write_lora(tmp_path / "tiny-lora.gguf", scale=2.0))
    prompt = chat("Name three colours of the rainbow.")
    base = feat.complete("smol", prompt, max_tokens=16)
    assert feat.complete("smol", prompt, max_tokens=16).cache_hit_kind == "exact"
    info = feat.load_adapter("smol", path, scale=1.0)
    assert info["adapter_id"] == "tiny-lora" and len(info["sha256"]) == 64
    assert feat.list_adapters("smol") == [info]
    with_lora = feat.complete("smol", prompt, max_tokens=16)
    assert with_lora.cache_hit_kind == "cold"  # the base rows do not serve the adapted model
    assert with_lora.generated != base.generated
    again = feat.complete("smol", prompt, max_tokens=16)
    assert again.cache_hit_kind == "exact" and again.generated == with_lora.generated
    st = feat.status("smol")
    assert st["fingerprint"] != st["info"]["base_fingerprint"]  # the adapter folds into the cache identity
    feat.set_adapter_scale("smol", "tiny-lora", 0.0)  # loaded but off: base identity again
    off = feat.complete("smol", prompt, max_tokens=16)
    assert off.cache_hit_kind == "exact" and off.generated == base.generated
    feat.set_adapter_scale("smol", "tiny-lora", 1.0)
    assert feat.complete("smol", prompt, max_tokens=16).generated == with_lora.generated
    feat.unload_adapter("smol", "tiny-lora")
    assert feat.list_adapters("smol") == []
    back = feat.complete("smol", prompt, max_tokens=16)
    assert back.cache_hit_kind == "exact" and back.generated == base.generated
    with pytest.raises(ModelError) as e:
        feat.unload_adapter("smol", "tiny-lora")
    assert e.value.reason == "no_such_adapter"
    with pytest.raises(ModelError) as e:
        feat.load_adapter("smol", str(tmp_path / "missing.gguf"))
    assert e.value.reason == "no_such_file"


def test_adapter_change_waits_for_in_flight_request(feat: System, tmp_path: Path) -> None:
    path = str(write_lora(tmp_path / "mid-lora.gguf", scale=2.0, seed=3))
    prompt = chat("Describe a forest in detail.")
    solo = feat.complete("smol", prompt, max_tokens=40, cache=False)
    stream = feat.infer("smol", prompt, max_tokens=40, cache=False)
    it = iter(stream)
    next(it)  # generating now
    feat.load_adapter("smol", path)  # returns once applied, which waits for the stream to finish
    list(it)
    assert stream.result is not None and stream.result.generated == solo.generated  # untouched by the change
    assert feat.complete("smol", prompt, max_tokens=40, cache=False).generated != solo.generated
    feat.unload_adapter("smol", "mid-lora")


# --------------------------------------------------------------------------- embeddings


def cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_single_and_batch(feat: System) -> None:
    texts = ["The cat sat on the mat.", "A cat was sitting on the mat.", "Quarterly revenue grew by eight percent."]
    vecs = feat.embed_batch("smol", texts)
    assert len(vecs) == 3 and all(len(v) == 576 for v in vecs)
    assert vecs[0] == feat.embed("smol", texts[0])
    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2])
    with pytest.raises(ModelError) as e:
        feat.embed_batch("smol", ["ok", ""])
    assert e.value.reason == "bad_request"


def test_embed_needs_embeddings_enabled(tmp_path: Path) -> None:
    with running_system(tmp_path, default_tier="ram", policy=POLICY) as s:
        s.load_model("gen", context={"n_ctx": 256, "n_seq_max": 1})
        with pytest.raises(ModelError) as e:
            s.embed("gen", "hello")
        assert e.value.reason == "embeddings_disabled"


# --------------------------------------------------------------------------- speculative decoding


def test_draft_then_verify(feat: System) -> None:
    prefix = feat.tokenize("smol", chat("Count from one to ten in words."), parse_special=True)
    draft = feat.draft_tokens("smol", prefix, 8)
    assert len(draft) == 8
    v = feat.verify("smol", prefix, draft)
    assert v.accepted == 8 and not v.eog and v.next is not None
    bad = list(draft)
    bad[3] = (bad[3] + 1) % 1000 + 1
    v2 = feat.verify("smol", prefix, bad)
    assert v2.accepted == 3 and v2.next == draft[3]
    assert feat.status("smol")["queue_depth"] == 0


def test_verify_busy_and_sessions_unchanged(feat: System) -> None:
    sticky = feat.complete("smol", chat("Hello there."), max_tokens=6, session_id="spec")
    prefix = feat.tokenize("smol", "The capital of France is")
    stream = feat.infer("smol", chat("Tell me a long story about dragons."), max_tokens=200)
    it = iter(stream)
    next(it)
    with pytest.raises(ModelError) as e:
        feat.verify("smol", prefix, [1, 2])
    assert e.value.reason == "busy"
    stream.close()
    feat.verify("smol", prefix, feat.draft_tokens("smol", prefix, 4))
    follow = feat.complete("smol", list(sticky.context_tokens) + feat.tokenize("smol", " More.", add_special=False),
                           max_tokens=4, session_id="spec")
    assert follow.cache_hit_kind == "sticky"  # verify borrowed a free sequence, the pinned one is intact
    assert feat.end_session("smol", "spec")


def test_draft_timeout_cancels_and_drains(feat: System) -> None:
    prefix = feat.tokenize("smol", chat("Write a very long essay about the history of Rome."), parse_special=True)
    out = feat.draft_tokens("smol", prefix, 2000, timeout=0.3)
    assert 0 < len(out) < 2000
    st = feat.status("smol")
    assert st["queue_depth"] == 0 and st["pending_len"] == 0


# --------------------------------------------------------------------------- introspection


def test_tokenize_defaults_match_a_requests_prompt(feat: System) -> None:
    text = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    tokens = feat.tokenize("smol", text)
    assert len(tokens) < 12  # the chat markers are one special token each, as in a request
    r = feat.complete("smol", text, max_tokens=1)
    assert list(r.context_tokens[:len(tokens)]) == tokens


def test_introspection(feat: System) -> None:
    models = feat.list_models()
    assert [m["model_id"] for m in models] == ["smol"] and models[0]["state"] == "ready"
    info = feat.model_info("smol")
    for key in ("address", "status", "phase", "pending", "last_cache_hit", "context_size", "quant", "fingerprint",
                "n_seq_max", "free_sequences", "memory"):
        assert key in info, key
    assert info["context_size"] == 2048 and info["n_seq_max"] == 4 and info["quant"] == "Q4_1"
    assert info["memory"]["weights_b"] > 50 << 20 and info["memory"]["kv_b"] > 0
    prompt = feat.tokenize("smol", "An introspection prompt, long enough to span several cache blocks: " * 4)
    assert feat.list_cached_prefixes("smol", prompt)["length"] == 0  # never seen: nothing cached
    feat.complete("smol", prompt, max_tokens=2)
    assert feat.list_cached_prefixes("smol", prompt) == {**feat.list_cached_prefixes("smol", prompt),
                                                         "length": len(prompt), "kind": "exact"}
    longer = prompt + feat.tokenize("smol", " And more words after it.", add_special=False)
    assert feat.list_cached_prefixes("smol", longer)["length"] >= len(prompt) - 1
    vram = feat.vram_info("smol")
    assert vram["available"] is False and vram["reason"] == "no_gpu"


def test_second_process_attaches_and_reads_state_during_generation(feat: System) -> None:
    import os
    import subprocess
    import sys
    import textwrap

    root = Path(__file__).resolve().parents[2]
    stream = feat.infer("smol", chat("Tell me a long story about a lighthouse keeper."), max_tokens=400)
    it = iter(stream)
    next(it)  # generating now
    script = textwrap.dedent(f"""
        import json
        from actors.api import System
        with System.attach({feat.port}) as s:
            st = s.status("smol")
            o = s.observe("smol")
            info = s.model_info("smol")
            print(json.dumps({{"phase": st["phase"], "requests": len(st["requests"]), "obs_phase": o.phase,
                               "depth": s.queue_depth(), "status": info["status"]}}))
    """)
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=root,
                             env={**os.environ, "PYTHONPATH": str(root)})
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got == {"phase": "generating", "requests": 1, "obs_phase": "generating", "depth": 1,
                       "status": "ready"}
    finally:
        stream.close()
    assert stream.result is not None and stream.result.finish_reason == "cancelled"


def test_adapters_survive_a_model_crash(tmp_path: Path) -> None:
    path = str(write_lora(tmp_path / "kept-lora.gguf", scale=2.0, seed=5))
    prompt = chat("Name three kinds of trees.")
    with running_system(tmp_path / "sys", default_tier="disk", policy=POLICY) as s:
        s.load_model("smol", context={"n_ctx": 1024, "n_seq_max": 1}, allow_debug_crash=True)
        base = s.complete("smol", prompt, max_tokens=12, cache=False)
        s.load_adapter("smol", path, scale=0.7)
        adapted = s.complete("smol", prompt, max_tokens=12, cache=False)
        assert adapted.generated != base.generated
        stream = s.infer("smol", "Once upon a time, in a small village by the sea,", max_tokens=400, cache=False)
        it = iter(stream)
        next(it)
        s.debug_crash("smol", "kill")
        with pytest.raises(ModelError) as e:
            for _ in it:
                pass
        assert e.value.reason == "model_crashed"
        after = s.complete("smol", prompt, max_tokens=12, cache=False)  # the restarted process
        assert s.list_models()[0]["restarts"] == 1
        assert [a["adapter_id"] for a in s.list_adapters("smol")] == ["kept-lora"]
        assert s.list_adapters("smol")[0]["scale"] == 0.7
        assert after.generated == adapted.generated  # same weights as before the crash, not the base ones
