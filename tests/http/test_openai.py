"""The OpenAI surface, driven by the official ``openai`` client against the real server and model."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from actors.api import ChatPrompt
from actors.http import sse
from tests.http.conftest import Served

SYSTEM = ("You are a helpful assistant for a hardware shop. The shop is open Monday to Saturday from nine to six, "
          "sells tools, paint and garden supplies, and offers key cutting and tool rental. Answer briefly.")
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def chat(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def test_models_lists_every_loaded_model(client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} == {"smol", "stub", "crashy"}
    assert client.models.retrieve("smol").id == "smol"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_chat_stream_matches_plain_reply_and_ends_with_usage(client: openai.OpenAI) -> None:
    msgs = chat("What do you sell?")
    plain = client.chat.completions.create(model="smol", messages=msgs, max_tokens=24, temperature=0)
    choice = plain.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert plain.usage.completion_tokens > 0 and plain.usage.prompt_tokens > 20
    chunks = list(client.chat.completions.create(model="smol", messages=msgs, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content  # greedy: the stream spells the same reply
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason


def test_raw_stream_is_sse_ending_in_done(served: Served) -> None:
    body = {"model": "smol", "messages": chat("Hi"), "max_tokens": 4, "temperature": 0, "stream": True}
    r = httpx.post(served.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse.parse(r.content)
    assert events[-1] == (None, "[DONE]")
    assert all(json.loads(d)["object"] == "chat.completion.chunk" for _, d in events[:-1])


def test_a_stream_reaches_the_server_through_the_models_door(served: Served) -> None:
    """The request goes straight into the model's process and its tokens come back on that connection,
    read by the server's event loop itself (no thread hop, no thespian fallback)."""
    bridge = served.server.gateway.bridge
    before = bridge.on_loop_received()
    body = {"model": "smol", "messages": chat("Hi there"), "max_tokens": 6, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    r = httpx.post(served.url + "/v1/chat/completions", json=body, timeout=60)
    usage = json.loads(sse.parse(r.content)[-2][1])["usage"]
    # One frame per generated token at least, and the final reply.
    assert bridge.on_loop_received() - before >= usage["completion_tokens"] + 1
    assert "smol" in bridge.open_doors()
    assert served.system.status("smol")["door"]["requests"] >= 1


def test_repeated_prefix_reports_cached_tokens(client: openai.OpenAI) -> None:
    # A prompt no earlier test cached (its first words differ): a cold prompt keeps a whole-prompt row,
    # so sending it again is an exact hit.
    msgs = [{"role": "system", "content": "Repeat check. " + SYSTEM},
            {"role": "user", "content": "Do you cut keys on Sundays?"}]
    first = client.chat.completions.create(model="smol", messages=msgs, max_tokens=8, temperature=0)
    again = client.chat.completions.create(model="smol", messages=msgs, max_tokens=8, temperature=0)
    assert again.usage.prompt_tokens_details.cached_tokens > 0
    assert again.usage.prompt_tokens_details.cached_tokens > first.usage.prompt_tokens_details.cached_tokens
    assert again.llama_actors["cache_hit_kind"] == "exact"  # the extension field the client keeps
    assert again.choices[0].message.content == first.choices[0].message.content  # exact hits reproduce
    # A stateless client resending the conversation with one more turn gets the prefix from the cache.
    longer = [*msgs, {"role": "assistant", "content": first.choices[0].message.content},
              {"role": "user", "content": "And on Saturday?"}]
    turn2 = client.chat.completions.create(model="smol", messages=longer, max_tokens=8, temperature=0)
    assert turn2.usage.prompt_tokens_details.cached_tokens >= 32


def test_session_header_keeps_the_conversation_live(client: openai.OpenAI, served: Served) -> None:
    msgs = chat("Do you rent ladders?")
    headers = {"X-Session-Id": "http-test-session"}
    try:
        first = client.chat.completions.create(model="smol", messages=msgs, max_tokens=8, temperature=0,
                                               extra_headers=headers)
        more = [*msgs, {"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "How much?"}]
        second = client.chat.completions.create(model="smol", messages=more, max_tokens=8, temperature=0,
                                                extra_headers=headers)
        assert second.llama_actors["cache_hit_kind"] == "sticky"  # the pinned sequence, only the suffix prefilled
        assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens
    finally:
        served.system.end_session("smol", "http-test-session")


def test_greedy_reply_over_http_equals_python_api(client: openai.OpenAI, served: Served) -> None:
    msgs = chat("Name one thing you rent out.")
    http = client.chat.completions.create(model="smol", messages=msgs, max_tokens=20, temperature=0)
    tokens = served.system.apply_chat_template("smol", msgs, tokenize=True)
    py = served.system.complete("smol", tokens, max_tokens=20)
    assert http.choices[0].message.content == py.reply
    assert http.usage.prompt_tokens == len(tokens)
    # the same chat sent as a ChatPrompt is rendered by the model in the request: the same tokens
    as_chat = served.system.complete("smol", ChatPrompt(msgs), max_tokens=20)
    assert as_chat.context_tokens[: len(tokens)] == tuple(tokens) and as_chat.reply == py.reply


def test_a_refused_stream_gets_its_status_not_an_event(served: Served) -> None:
    body = {"model": "smol", "messages": chat("word " * 2500), "max_tokens": 4, "stream": True}
    with httpx.stream("POST", served.url + "/v1/chat/completions", json=body, timeout=60) as r:
        r.read()
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_stop_sequence_ends_the_reply_before_it(client: openai.OpenAI) -> None:
    msgs = chat("What do you sell?")
    full = client.chat.completions.create(model="smol", messages=msgs, max_tokens=24, temperature=0)
    text = full.choices[0].message.content
    word = text.split()[2]
    cut = client.chat.completions.create(model="smol", messages=msgs, max_tokens=24, temperature=0, stop=[word])
    assert cut.choices[0].message.content == text[: text.index(word)]
    assert cut.choices[0].finish_reason == "stop"


def test_json_schema_reply_follows_the_schema(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"item": {"type": "string"}, "price": {"type": "integer"},
                                               "in_stock": {"type": "boolean"}},
              "required": ["item", "price", "in_stock"]}
    r = client.chat.completions.create(
        model="smol", messages=chat("Give me one product as JSON."), max_tokens=40, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "product", "schema": schema}})
    obj = json.loads(r.choices[0].message.content)
    assert list(obj) == ["item", "price", "in_stock"]
    assert isinstance(obj["item"], str) and isinstance(obj["price"], int) and isinstance(obj["in_stock"], bool)
    r2 = client.chat.completions.create(model="smol", messages=chat("Reply in JSON."), max_tokens=6, temperature=0,
                                        response_format={"type": "json_object"})
    assert r2.choices[0].message.content.startswith("{")  # an object, even when cut at max_tokens


def test_required_tool_call_comes_back_as_tool_calls(client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model="smol", messages=msgs, tools=[WEATHER_TOOL], tool_choice="required",
                                       max_tokens=60, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    # The same call streamed: one tool_calls delta with the whole call.
    chunks = list(client.chat.completions.create(model="smol", messages=msgs, tools=[WEATHER_TOOL],
                                                 tool_choice="required", max_tokens=60, temperature=0, stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [d.function.name for d in deltas] == ["get_weather"]
    assert json.loads(deltas[0].function.arguments) == json.loads(call.function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # The call and its result go back in the next turn (rendered by the template, accepted).
    follow = [*msgs, choice.message.model_dump(exclude_none=True),
              {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    r2 = client.chat.completions.create(model="smol", messages=follow, tools=[WEATHER_TOOL], max_tokens=2,
                                        temperature=0)
    assert r2.choices[0].message.role == "assistant"


def test_completions_text_and_token_prompts(client: openai.OpenAI, served: Served) -> None:
    prompt = "The capital of France is"
    r = client.completions.create(model="smol", prompt=prompt, max_tokens=8, temperature=0)
    assert r.choices[0].text == served.system.complete("smol", prompt, max_tokens=8).reply
    ids = served.system.tokenize("smol", prompt)
    assert r.usage.prompt_tokens == len(ids) and 0 < r.usage.completion_tokens <= 8
    r2 = client.completions.create(model="smol", prompt=ids, max_tokens=8, temperature=0)
    assert r2.choices[0].text == r.choices[0].text and r2.usage.prompt_tokens == len(ids)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="smol", prompt=prompt, max_tokens=8, temperature=0, stream=True) if c.choices)
    assert streamed == r.choices[0].text


def test_embeddings_float_and_base64(client: openai.OpenAI, served: Served) -> None:
    r = client.embeddings.create(model="smol", input=["a red hammer", "garden hose"])  # the client asks base64
    assert [d.index for d in r.data] == [0, 1]
    want = served.system.embed("smol", "a red hammer")
    assert r.data[0].embedding == pytest.approx(want, rel=1e-5, abs=1e-6)
    f = client.embeddings.create(model="smol", input="a red hammer", encoding_format="float")
    assert f.data[0].embedding == pytest.approx(want, rel=1e-5, abs=1e-6) and f.usage.prompt_tokens > 0


def test_errors_have_the_openai_shape(client: openai.OpenAI, served: Served) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="nope", messages=chat("Hi"), max_tokens=4)
    assert nf.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as n2:
        client.chat.completions.create(model="smol", messages=chat("Hi"), max_tokens=4, n=2)
    assert n2.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as over:  # longer than the sequence's context (1024 tokens)
        client.completions.create(model="smol", prompt="word " * 1500, max_tokens=4)
    assert over.value.body["code"] == "context_length_exceeded"
    r = httpx.post(served.url + "/v1/chat/completions", content=b"{not json", timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["code"] == "invalid_json"


def test_logit_bias_bans_a_token_over_http_and_in_python(client: openai.OpenAI, served: Served) -> None:
    msgs = chat("Name a colour.")
    plain = served.system.complete("smol", ChatPrompt(tuple(msgs)), max_tokens=6, cache=False)
    first = plain.generated[0]
    # The Python API: greedy, with its own first choice banned, starts with another token.
    r = served.system.complete("smol", ChatPrompt(tuple(msgs)), max_tokens=6, cache=False, logit_bias={first: -100})
    assert r.generated[0] != first
    # Over HTTP, token ids as JSON strings (a cache hit may change later tokens, so the reply is compared whole).
    over_http = client.chat.completions.create(model="smol", messages=msgs, max_tokens=6, temperature=0,
                                               logit_bias={str(first): -100})
    text = over_http.choices[0].message.content
    assert text and text != plain.reply
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="smol", messages=msgs, max_tokens=2, logit_bias={"x": 1})
    assert e.value.body["param"] == "logit_bias"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as e:  # checked against the vocabulary by the model itself
        client.chat.completions.create(model="smol", messages=msgs, max_tokens=2, logit_bias={"99999999": 1})
    assert "vocabulary" in str(e.value)
