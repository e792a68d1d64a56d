"""Examples 08-11 and 20-22 (grammar, stop sequences, thinking, tool calls, LoRA, speculative decoding,
introspection) run as a user runs them, and print the facts their docstrings promise."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]


def run(name: str) -> dict[str, str]:
    """Run one example; its ``key: value`` lines (the last value of a repeated key wins)."""
    r = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=300,
                       cwd=EXAMPLES.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    facts: dict[str, str] = {}
    for line in r.stdout.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            facts[key] = value
    return facts


def js(value: str) -> Any:
    return json.loads(value)


def lit(value: str) -> Any:
    """A value the example printed with ``repr``."""
    return ast.literal_eval(value)


def test_08_grammar_json_always_parses() -> None:
    f = run("08_grammar.py")
    assert f["parsed"] == "True"
    obj = js(f["object"])
    assert json.loads(lit(f["grammar reply"])) == obj
    assert sorted(obj) == ["age", "name"] and isinstance(obj["age"], int) and obj["name"].strip()
    assert f["age is int"] == "True" and f["finish_reason"] == "stop"
    assert lit(f["free reply"]) != lit(f["grammar reply"])  # without the grammar the model writes what it likes
    assert f["leftover processes"] == "0"


def test_09_stop_sequences_trim_sync_and_stream() -> None:
    f = run("09_stop_sequences.py")
    stops = js(f["stop_sequences"])
    fired = lit(f["sync stop_sequence"])
    assert fired in stops and f["sync finish_reason"] == "stop"
    full, reply = lit(f["full reply"]), lit(f["sync reply"])
    assert full.startswith(reply + fired) and all(s not in reply for s in stops)
    assert reply == full[:min(full.find(s) for s in stops if s in full)]  # the first by position wins
    assert f["full reply continues with the stop string"] == "True"
    assert f["stop string in sync reply"] == "False" and f["stop string in any chunk"] == "False"
    assert "".join(js(f["stream chunks"])) == reply and f["stream text equals sync reply"] == "True"
    assert lit(f["stream stop_sequence"]) == fired and f["stream finish_reason"] == "stop"
    assert lit(f["no match stop_sequence"]) is None and f["no match reply equals full reply"] == "True"
    assert f["leftover processes"] == "0"


def test_10_thinking_streams_signs_and_caps() -> None:
    f = run("10_thinking.py")
    assert js(f["event order"]) == ["thinking", "thinking_end", "text"]
    assert lit(f["thinking"]).strip() and lit(f["answer"]).strip()
    sig = f["signature"]
    assert len(sig) == 64 and int(sig, 16) >= 0
    assert f["result.thinking equals deltas"] == "True" and f["result.thinking_signature equals event"] == "True"
    assert f["markers in answer"] == "False"
    assert f["signature verifies with the key"] == "True"
    assert f["signature verifies with another key"] == "False"
    assert f["signature verifies edited text"] == "False"
    plain = lit(f["thinking disabled reply"])
    assert plain.startswith("<think>" + lit(f["thinking"]) + "</think>")  # the same bytes, as plain text
    assert lit(f["thinking disabled result.thinking"]) == ""
    deltas = js(f["capped thinking deltas"])
    assert 1 <= len(deltas) <= int(f["budget"]) == 3
    assert lit(f["capped result.thinking"]) == "".join(deltas)
    assert f["capped thinking_end events"] == "1" and lit(f["capped answer"]).strip()


def test_11_tool_call_bytes_match_deltas() -> None:
    f = run("11_tool_calls.py")
    body = f["deltas joined"]
    assert "".join(js(f["tool_call deltas"])) == body
    assert f["tool_call_end events"] == "1" and f["ToolCallEnd.complete"] == "True"
    assert lit(f["ToolCallEnd.data"]) == body.encode() and f["end data equals joined deltas"] == "True"
    call = json.loads(body)
    assert call["name"] == f["tool name"] == "get_weather" and js(f["tool arguments"]) == call["arguments"]
    assert set(call["arguments"]) == {"city"}
    answer = lit(f["answer without the call"])
    assert answer == lit(f["result.reply"]) and "tool_call" not in answer and body not in answer
    assert js(f["result.tool_calls"]) == [body] and f["markers in answer"] == "False"
    assert f["leftover processes"] == "0"


def test_20_lora_adapter_changes_output_and_keeps_rows_apart() -> None:
    f = run("20_lora_adapters.py")
    assert f["base cache_hit_kind"] == "cold" and f["base repeat cache_hit_kind"] == "exact"
    loaded = js(f["loaded adapter"])
    assert loaded["adapter_id"] == "tiny-lora" and loaded["scale"] == 1.0
    assert js(f["list_adapters"]) == [["tiny-lora", 1.0]]
    assert f["adapter changes the output"] == "True" and lit(f["adapter reply"]) != lit(f["base reply"])
    assert f["adapter cache_hit_kind"] == "cold"  # the base model's row does not serve the adapted model
    assert f["adapter repeat cache_hit_kind"] == "exact" and f["adapter repeat identical"] == "True"
    assert f["scale 0 cache_hit_kind"] == "exact" and f["scale 0 equals base"] == "True"
    assert js(f["list_adapters after unload"]) == []
    assert f["after unload cache_hit_kind"] == "exact" and f["after unload equals base"] == "True"
    assert f["leftover processes"] == "0"


def test_21_speculative_draft_and_verify() -> None:
    f = run("21_speculative.py")
    draft = js(f["draft"])
    assert len(draft) == 8
    assert f["verify accepted"] == "8" and f["verify eog"] == "False" and int(f["verify next"]) >= 0
    assert f["corrupted verify accepted"] == f["corrupted index"] == "3"
    assert f["corrupted verify next equals draft[3]"] == "True"
    assert f["equals target greedy output"] == "True"
    assert int(f["speculative tokens"]) >= 24 and int(f["target passes"]) < int(f["speculative tokens"])
    assert 0 <= int(f["draft with 0.3s deadline"]) < 500 and f["fewer than asked"] == "True"
    assert f["draft phase after deadline"] == "idle"
    assert f["leftover processes"] == "0"


def test_22_introspection() -> None:
    f = run("22_introspection.py")
    assert js(f["models before load"]) == []
    assert js(f["list_models"]) == [["smol", "ready", 0]]
    info = js(f["model_info"])
    assert info["status"] == "ready" and info["phase"] == "idle" and info["quant"] == "Q4_1"
    assert info["context_size"] > 0 and info["free_sequences"] == info["n_seq_max"] >= 1 and info["adapters"] == []
    memory = js(f["memory MiB"])
    assert memory["weights"] > 50 and memory["kv"] > 0
    n = int(f["prompt tokens"])
    assert js(f["cached prefix before"])["kind"] == "none" and js(f["cached prefix before"])["length"] == 0
    assert js(f["cached prefix after"]) == {"kind": "exact", "length": n, "tier": "ram"}
    longer = js(f["cached prefix of a longer prompt"])
    assert longer["kind"] == "prefix" and longer["length"] == n
    assert f["inspection counted no hit"] == "True"
    vram = js(f["vram_info"])
    assert "available" in vram
    if not vram["available"]:
        assert vram["reason"] == "no_gpu"
    assert f["phase"] == "idle" and f["pending_len"] == "0"
    assert js(f["last_cache_hit"])["kind"] == "cold"
    assert f["repeat cache_hit_kind"] == "exact"
    assert js(f["last_cache_hit after repeat"]) == {"kind": "exact", "prefix_len": n}
    assert js(f["counters"])["hits_exact"] >= 1
    assert f["leftover processes"] == "0"
