"""The Anthropic Messages surface, driven by the official ``anthropic`` client against the real server and model.

This client version no longer sends ``temperature``; greedy requests pass it as ``extra_body``.
"""

from __future__ import annotations

import anthropic
import httpx
import pytest

from actors.http import sse
from actors.model.stream import verify_signature
from tests.http.conftest import THINKING_KEY, Served

SYSTEM = ("You are a helpful assistant for a hardware shop. The shop is open Monday to Saturday from nine to six, "
          "sells tools, paint and garden supplies, and offers key cutting and tool rental. Answer briefly.")
GREEDY = {"temperature": 0}
WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def client(served: Served) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=served.url, api_key="unused", max_retries=0, timeout=120)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_message_and_its_stream_agree(client: anthropic.Anthropic) -> None:
    m = client.messages.create(model="smol", system=SYSTEM, messages=user("What do you sell?"), max_tokens=20,
                               extra_body=GREEDY)
    assert m.type == "message" and m.role == "assistant" and m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens") and m.usage.output_tokens > 0
    names = []
    with client.messages.stream(model="smol", system=SYSTEM, messages=user("What do you sell?"), max_tokens=20,
                                extra_body=GREEDY) as s:
        for ev in s:
            names.append(ev.type)
        final = s.get_final_message()
    assert final.content[0].text == m.content[0].text and final.stop_reason == m.stop_reason
    assert final.usage.output_tokens == m.usage.output_tokens
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(names)
    # The repeat was served from the cache, and the usage says so.
    total = final.usage.input_tokens + final.usage.cache_read_input_tokens + final.usage.cache_creation_input_tokens
    assert final.usage.cache_read_input_tokens > 0
    assert total == m.usage.input_tokens + m.usage.cache_read_input_tokens + m.usage.cache_creation_input_tokens


def test_raw_stream_has_named_events_and_a_ping(served: Served) -> None:
    body = {"model": "smol", "messages": user("Hi"), "max_tokens": 4, "stream": True, **GREEDY}
    r = httpx.post(served.url + "/v1/messages", json=body, timeout=60)
    events = sse.parse(r.content)
    assert [n for n, _ in events][:2] == ["message_start", "ping"]
    assert events[-1][0] == "message_stop" and all(n is not None for n, _ in events)


def test_stop_sequences(client: anthropic.Anthropic) -> None:
    full = client.messages.create(model="smol", system=SYSTEM, messages=user("What do you sell?"), max_tokens=20,
                                  extra_body=GREEDY).content[0].text
    word = full.split()[2]
    m = client.messages.create(model="smol", system=SYSTEM, messages=user("What do you sell?"), max_tokens=20,
                               stop_sequences=[word], extra_body=GREEDY)
    assert m.content[0].text == full[: full.index(word)]
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == word


def test_thinking_block_carries_the_node_signature(client: anthropic.Anthropic) -> None:
    # SmolLM2 does not think on its own; a grammar (the ``grammar`` extension) makes it write the markers.
    grammar = 'root ::= "<think>" [a-z ]{4,24} "</think>" [A-Za-z ]{1,20}'
    kwargs = {"model": "smol", "messages": user("Is the shop open on Sunday?"), "max_tokens": 60,
              "thinking": {"type": "enabled", "budget_tokens": 40}, "extra_body": {**GREEDY, "grammar": grammar}}
    m = client.messages.create(**kwargs)
    thinking, text = m.content[0], m.content[1]
    assert thinking.type == "thinking" and thinking.thinking and text.type == "text"
    assert "<think>" not in text.text and verify_signature(THINKING_KEY, thinking.thinking, thinking.signature)
    with client.messages.stream(**kwargs) as s:
        deltas = [ev.delta.type for ev in s if ev.type == "content_block_delta"]
        final = s.get_final_message()
    assert "thinking_delta" in deltas and "signature_delta" in deltas and "text_delta" in deltas
    assert final.content[0].thinking == thinking.thinking and final.content[0].signature == thinking.signature


def test_forced_tool_use_and_tool_result_turn(client: anthropic.Anthropic) -> None:
    msgs = user("What is the weather in Paris?")
    m = client.messages.create(model="smol", messages=msgs, tools=[WEATHER], tool_choice={"type": "any"},
                               max_tokens=60, extra_body=GREEDY)
    assert m.stop_reason == "tool_use"
    use = next(b for b in m.content if b.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input["city"], str)
    with client.messages.stream(model="smol", messages=msgs, tools=[WEATHER], tool_choice={"type": "any"},
                                max_tokens=60, extra_body=GREEDY) as s:
        final = s.get_final_message()
    streamed = next(b for b in final.content if b.type == "tool_use")
    assert streamed.input == use.input and final.stop_reason == "tool_use"
    follow = [*msgs, {"role": "assistant", "content": [b.model_dump() for b in m.content]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}]
    r = client.messages.create(model="smol", messages=follow, tools=[WEATHER], max_tokens=2, extra_body=GREEDY)
    assert r.role == "assistant"


def test_count_tokens_matches_the_prompt(client: anthropic.Anthropic) -> None:
    n = client.messages.count_tokens(model="smol", system=SYSTEM, messages=user("How long are you open?"))
    m = client.messages.create(model="smol", system=SYSTEM, messages=user("How long are you open?"), max_tokens=2,
                               extra_body=GREEDY)
    u = m.usage
    assert n.input_tokens == u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens


def test_errors_have_the_anthropic_shape(client: anthropic.Anthropic, served: Served) -> None:
    with pytest.raises(anthropic.NotFoundError) as nf:
        client.messages.create(model="nope", messages=user("Hi"), max_tokens=4)
    assert nf.value.body["type"] == "error" and nf.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="smol", messages=[{"role": "system", "content": "x"}], max_tokens=4)
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    r = httpx.post(served.url + "/v1/messages", json={"model": "smol", "messages": user("Hi")}, timeout=30)
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
