"""Pure parts of the HTTP front door, without a server: grammars, SSE, request and stream translation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.config import HttpSettings
from actors.http import anthropic_wire, openai_wire, sse
from actors.http.calls import GenCall, parse_tool_call, render_tool_call
from actors.http.errors import ApiError, anthropic_body, anthropic_status, from_reason, openai_body
from actors.http.schema_grammar import SchemaError, json_object_gbnf, schema_to_gbnf, tool_call_gbnf
from actors.http.server import BindRefused, check_bind, is_loopback, parse_host_port
from actors.model import messages as mm
from tests.http.gbnf_match import accepts

# --------------------------------------------------------------------------- schema -> GBNF

NAMES = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=6)
PRIMITIVE = st.sampled_from([{"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"},
                             {"type": "null"}, {}])
ENUMS = st.lists(st.one_of(st.integers(-5, 5), NAMES, st.booleans(), st.none()), min_size=1, max_size=4,
                 unique_by=json.dumps).map(lambda v: {"enum": v})


def _objects(children: st.SearchStrategy) -> st.SearchStrategy:
    props = st.dictionaries(NAMES, children, min_size=0, max_size=4)
    return props.flatmap(lambda p: st.lists(st.sampled_from(sorted(p)) if p else st.nothing(), unique=True).map(
        lambda req: {"type": "object", "properties": p, "required": req}))


def _arrays(children: st.SearchStrategy) -> st.SearchStrategy:
    bounds = st.tuples(st.integers(0, 3), st.one_of(st.none(), st.integers(0, 4))).filter(
        lambda b: b[1] is None or b[1] >= b[0])
    return st.tuples(children, bounds).map(lambda t: {"type": "array", "items": t[0], "minItems": t[1][0],
                                                      **({"maxItems": t[1][1]} if t[1][1] is not None else {})})


SCHEMAS = st.recursive(st.one_of(PRIMITIVE, ENUMS),
                       lambda c: st.one_of(_objects(c), _arrays(c), st.lists(c, min_size=1, max_size=3).map(
                           lambda xs: {"anyOf": xs})), max_leaves=8)
ANY_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), NAMES),
                        lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(NAMES, c, max_size=3)),
                        max_leaves=5)


def instances(schema: dict[str, Any]) -> st.SearchStrategy:
    """Values valid against ``schema``, objects with their keys in declaration order."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([instances(s) for s in schema["anyOf"]])
    t = schema.get("type")
    if t is None:
        return ANY_JSON
    if t == "string":
        return st.text(max_size=6)
    if t == "integer":
        return st.integers(-10**12, 10**12)
    if t == "number":
        return st.one_of(st.integers(-1000, 1000), st.floats(allow_nan=False, allow_infinity=False))
    if t == "boolean":
        return st.booleans()
    if t == "null":
        return st.none()
    if t == "array":
        return st.lists(instances(schema["items"]), min_size=schema["minItems"], max_size=schema.get("maxItems", 4))
    props, req = schema["properties"], set(schema["required"])
    fields = [(k, instances(v), k in req) for k, v in props.items()]
    present = st.tuples(*[st.just(True) if r else st.booleans() for _, _, r in fields]) if fields else st.just(())
    values = st.tuples(*[s for _, s, _ in fields]) if fields else st.just(())
    return st.tuples(present, values).map(
        lambda pv: {k: v for (k, _, _), keep, v in zip(fields, pv[0], pv[1], strict=True) if keep})


@settings(max_examples=50, deadline=None)
@given(st.data(), SCHEMAS)
def test_grammar_accepts_every_valid_instance(data: st.DataObject, schema: dict[str, Any]) -> None:
    grammar = schema_to_gbnf(schema)
    value = data.draw(instances(schema))
    for text in (json.dumps(value, separators=(",", ":")), json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert accepts(grammar, text), (grammar, text)


@settings(max_examples=40, deadline=None)
@given(st.data(), _objects(PRIMITIVE).filter(lambda s: s["required"]))
def test_grammar_rejects_a_missing_required_key_or_an_extra_one(data: st.DataObject, schema: dict[str, Any]) -> None:
    grammar = schema_to_gbnf(schema)
    value = data.draw(instances(schema))
    missing = {k: v for k, v in value.items() if k != schema["required"][0]}
    assert not accepts(grammar, json.dumps(missing))
    extra = {**value, "zz_extra": 1} if "zz_extra" not in schema["properties"] else value
    assert extra is value or not accepts(grammar, json.dumps(extra))


@settings(max_examples=50, deadline=None)
@given(ANY_JSON)
def test_json_object_grammar_is_any_object(value: Any) -> None:
    g = json_object_gbnf()
    assert accepts(g, json.dumps(value)) == isinstance(value, dict)


def test_refs_recursion_and_unsupported_keywords() -> None:
    kids = {"type": "array", "items": {"$ref": "#/$defs/node"}}
    tree = {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": kids},
                               "required": ["v", "kids"]}}, "$ref": "#/$defs/node"}
    g = schema_to_gbnf(tree)
    assert accepts(g, '{"v":1,"kids":[{"v":2,"kids":[]}]}') and not accepts(g, '{"v":1}')
    for bad in ({"type": "string", "pattern": "a+"}, {"allOf": []}, {"$ref": "http://x"}, {"type": "date"}):
        with pytest.raises(SchemaError):
            schema_to_gbnf(bad)


@given(NAMES, st.dictionaries(NAMES, st.one_of(st.integers(), NAMES), max_size=3))
def test_tool_call_text_round_trips_and_its_grammar_accepts_it(name: str, args: dict[str, Any]) -> None:
    text = render_tool_call(name, args)
    call = parse_tool_call(text)
    assert call is not None and (call.name, call.arguments) == (name, args)
    assert parse_tool_call(text[len("<tool_call>"):-len("</tool_call>")]) == call  # markers stripped by the model
    g = tool_call_gbnf([{"name": name, "parameters": {"type": "object"}}])
    assert accepts(g, text)
    assert not accepts(g, render_tool_call(name + "x", args))


def test_not_a_tool_call() -> None:
    for text in ("", "hello", "[1]", '{"arguments": {}}', '{"name": "f", "arguments": 3}', '{"name": ""}'):
        assert parse_tool_call(text) is None


# --------------------------------------------------------------------------- SSE


@given(st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=12), ANY_JSON)
def test_sse_events_round_trip(name: str, value: Any) -> None:
    stream = sse.event(name, value) + sse.data(value) + sse.DONE
    assert sse.parse(stream) == [(name, json.dumps(value, separators=(",", ":"))),
                                 (None, json.dumps(value, separators=(",", ":"))), (None, "[DONE]")]
    with pytest.raises(ValueError):
        sse.event("bad\nname", value)


# --------------------------------------------------------------------------- requests


def test_chat_call_translates_fields() -> None:
    body = {"model": "m", "messages": [{"role": "developer", "content": "be brief"},
                                       {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                                       {"role": "assistant", "content": None, "tool_calls": [
                                           {"id": "c", "type": "function",
                                            "function": {"name": "f", "arguments": '{"a": 1}'}}]},
                                       {"role": "tool", "tool_call_id": "c", "content": "ok"}],
            "max_completion_tokens": 7, "temperature": 0, "stop": "\n", "user": "u1", "seed": 3,
            "stream": True, "stream_options": {"include_usage": True}}
    call = openai_wire.chat_call(body, 100)
    assert call.model == "m" and call.stream and call.include_usage
    assert [m["role"] for m in call.prompt.messages] == ["system", "user", "assistant", "tool"]
    assert call.prompt.messages[2]["content"] == render_tool_call("f", {"a": 1})
    assert call.options["max_tokens"] == 7 and call.options["stop_sequences"] == ("\n",)
    assert call.options["session_id"] == "u1" and call.options["sampler"] == {"temperature": 0.0, "seed": 3}
    assert openai_wire.chat_call({**body, "max_completion_tokens": None}, 100).options["max_tokens"] == 100
    sampled = openai_wire.chat_call({"model": "m", "messages": body["messages"][:2]}, 10).options["sampler"]
    assert sampled["temperature"] == 1.0 and "seed" in sampled  # the API's default, a fresh seed


@pytest.mark.parametrize(("patch", "param"), [
    ({"n": 2}, "n"), ({"temperature": 3}, "temperature"), ({"messages": []}, "messages"), ({"model": 5}, "model"),
    ({"stop": [""]}, "stop"), ({"logprobs": True}, "logprobs"), ({"max_tokens": 0}, "max_tokens"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "x"}}}},
     "response_format"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": []}, "tool_choice"),
    ({"grammar": 'root ::= "a"', "response_format": {"type": "json_object"}}, "grammar"),
])
def test_chat_call_rejects_bad_fields_naming_them(patch: dict[str, Any], param: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **patch}
    with pytest.raises(ApiError) as e:
        openai_wire.chat_call(body, 10)
    assert e.value.status == 400 and e.value.param == param


def test_messages_call_translates_blocks() -> None:
    body = {"model": "m", "max_tokens": 9, "system": [{"type": "text", "text": "sys"}], "stop_sequences": ["X"],
            "thinking": {"type": "enabled", "budget_tokens": 5}, "metadata": {"user_id": "u"},
            "messages": [{"role": "user", "content": "q"},
                         {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                                                           {"type": "tool_use", "id": "t1", "name": "f",
                                                            "input": {"a": 1}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"},
                                                      {"type": "text", "text": "next"}]}]}
    call = anthropic_wire.messages_call(body)
    assert call.prompt.system == "sys"
    assert [(m["role"], m["content"]) for m in call.prompt.messages] == [
        ("user", "q"), ("assistant", render_tool_call("f", {"a": 1})), ("tool", "r"), ("user", "next")]
    o = call.options
    assert (o["max_tokens"], o["stop_sequences"], o["thinking"], o["thinking_budget_tokens"], o["session_id"]) == (
        9, ("X",), "enabled", 5, "u")
    with pytest.raises(ApiError):
        anthropic_wire.messages_call({"model": "m", "messages": [{"role": "user", "content": "q"}]})  # no max_tokens


# --------------------------------------------------------------------------- streams

STREAM_EVENTS = st.lists(st.one_of(
    st.builds(lambda t: mm.TokenChunk("r", t, (1,), kind="text"), st.text(min_size=1, max_size=5)),
    st.builds(lambda t: [mm.TokenChunk("r", t, (1,), kind="thinking"), mm.ThinkingEnd("r", t, "sig")],
              st.text(min_size=1, max_size=5)),
    st.builds(lambda n: mm.ToolCallEnd("r", render_tool_call(n, {"k": 1}).encode()), NAMES),
), max_size=8)


def _flatten(evs: list[Any]) -> list[Any]:
    return [e for x in evs for e in (x if isinstance(x, list) else [x])]


def _completion(reply: str = "", reason: str = "stop") -> mm.Completion:
    return mm.Completion("r", reply, (1, 2), (1, 2, 3), 3, None, "partial", reason, mm.CacheDelta(4, 1),
                         {"prompt_tokens": 9, "ttft_ms": 1.0})


@given(STREAM_EVENTS)
def test_anthropic_stream_blocks_are_well_formed(evs: list[Any]) -> None:
    evs = _flatten(evs)
    call = GenCall("m", "p", parse_tools=True)
    enc = anthropic_wire.MessageStream(call, "rid", 9)
    out = enc.start() + [e for ev in [*evs, _completion()] for e in enc.feed(ev)]
    names = [n for n, _ in out]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    open_index, seen, text = None, [], ""
    for name, obj in out:
        assert obj["type"] == name
        if name == "content_block_start":
            assert open_index is None
            open_index = obj["index"]
            seen.append(open_index)
        elif name == "content_block_delta":
            assert obj["index"] == open_index
            if obj["delta"]["type"] == "text_delta":
                text += obj["delta"]["text"]
        elif name == "content_block_stop":
            assert obj["index"] == open_index
            open_index = None
    assert open_index is None and seen == list(range(len(seen))) and seen
    assert text == "".join(e.text for e in evs if isinstance(e, mm.TokenChunk) and e.kind == "text")
    tools = sum(isinstance(e, mm.ToolCallEnd) for e in evs)
    assert out[-2][1]["delta"]["stop_reason"] == ("tool_use" if tools else "end_turn")
    assert out[-2][1]["usage"] == {"input_tokens": 4, "output_tokens": 2, "cache_read_input_tokens": 4,
                                   "cache_creation_input_tokens": 1}


@given(STREAM_EVENTS)
def test_openai_chunks_spell_the_reply_and_the_calls(evs: list[Any]) -> None:
    evs = _flatten(evs)
    call = GenCall("m", "p", include_usage=True, parse_tools=True)
    enc = openai_wire.ChatStream(call, "rid", 9)
    out = [c for ev in [*evs, _completion()] for c in enc.feed(ev)]
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in out if c["choices"]]
    assert "".join(d.get("content", "") for d in deltas) == "".join(
        e.text for e in evs if isinstance(e, mm.TokenChunk) and e.kind == "text")
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert [tc["index"] for tc in calls] == list(range(len(calls)))
    assert len(calls) == sum(isinstance(e, mm.ToolCallEnd) for e in evs)
    assert out[-2]["choices"][0]["finish_reason"] == ("tool_calls" if calls else "stop")
    assert out[-1]["choices"] == [] and out[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 4


# --------------------------------------------------------------------------- errors and binding


def test_error_bodies_per_api() -> None:
    e = from_reason("context_overflow", "too long")
    assert e.status == 400 and openai_body(e)["error"]["code"] == "context_length_exceeded"
    assert anthropic_body(e) == {"type": "error", "error": {"type": "invalid_request_error",
                                                             "message": "context_length_exceeded: too long"}}
    busy = ApiError(429, "overloaded", "full", retry_after_s=1)
    assert anthropic_status(busy) == 529 and anthropic_body(busy)["error"]["type"] == "overloaded_error"
    assert openai_body(busy)["error"]["type"] == "rate_limit_error"
    assert from_reason("model_crashed").status == 500 and from_reason("something_new").status == 500


def test_http_config_table() -> None:
    from actors.config import ConfigError, parse_config

    c = parse_config({"http": {"bind": "0.0.0.0", "port": 9000, "api_keys": ["k1"], "queue_limit": 3,
                               "queue_limits": {"smol": 1}, "cors_origins": ["http://a"], "retry_after_s": 2}})
    h = c.http
    assert (h.bind, h.port, h.queue_limit, dict(h.queue_limits), h.cors_origins, h.retry_after_s) == (
        "0.0.0.0", 9000, 3, {"smol": 1}, ("http://a",), 2)
    assert [k.reveal() for k in h.api_keys] == [b"k1"] and "k1" not in repr(h)  # keys never printed
    assert parse_config({}).http is None
    for bad, key in (({"port": "x"}, "http.port"), ({"queue_limit": 0}, "http.queue_limit"),
                     ({"api_keys": "k"}, "http.api_keys"), ({"nope": 1}, "http")):
        with pytest.raises(ConfigError) as e:
            parse_config({"http": bad})
        assert str(e.value).startswith(key)


def test_bind_rules() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.org")
    with pytest.raises(BindRefused):
        check_bind(HttpSettings(bind="0.0.0.0"))
    from actors.secret import Secret

    check_bind(HttpSettings(bind="0.0.0.0", api_keys=(Secret(b"k"),)))
    assert parse_host_port("127.0.0.1:8080") == ("127.0.0.1", 8080) and parse_host_port("[::1]:9") == ("::1", 9)
    for bad in ("8080", "host:", ":80", "h:99999"):
        with pytest.raises(ValueError):
            parse_host_port(bad)
