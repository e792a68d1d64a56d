"""OpenAI wire format: request bodies to :class:`GenCall`, results to response JSON and chunks (pure).

Chat (``/v1/chat/completions``), text completions (``/v1/completions``)
and embeddings (``/v1/embeddings``).  Non-standard but harmless: every
generation response carries ``llama_actors`` (cache hit kind, cached
tokens, model-side TTFT), which the official clients keep as an extra
field; a request may carry ``thinking: {type: enabled, budget_tokens}``
(the reply's thinking goes to ``reasoning_content``, as llama.cpp does).
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Mapping
from typing import Any

from actors.http.calls import (
    ChatPrompt,
    GenCall,
    ToolCall,
    bad_request,
    check_model_name,
    extras,
    forced_tool_grammar,
    get_bool,
    get_float,
    get_int,
    pick_grammar,
    render_tool_call,
    require_object,
    sampler_options,
    split_tool_calls,
    stop_list,
    text_blocks,
    tool_specs,
)
from actors.http.schema_grammar import SchemaError, json_object_gbnf, schema_to_gbnf
from actors.model import messages as mm
from actors.model.errors import OptionError
from actors.model.options import parse_logit_bias

_FINISH = {"stop": "stop", "length": "length", "timeout": "length", "cancelled": "stop"}
_UNSUPPORTED = ("logprobs", "top_logprobs", "audio", "modalities", "prediction")


def _common_options(body: Mapping[str, Any], default_max_tokens: int, session: str | None) -> dict[str, Any]:
    max_tokens = get_int(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = get_int(body, "max_tokens", 1)
    n = get_int(body, "n", 1)
    if n not in (None, 1):
        raise bad_request("n: only n=1 is supported", "n")
    for key in _UNSUPPORTED:
        if body.get(key) not in (None, False):
            raise bad_request(f"{key}: not supported by this server", key)
    opts: dict[str, Any] = {
        "max_tokens": max_tokens or default_max_tokens,
        "sampler": sampler_options(get_float(body, "temperature", 0.0, 2.0), get_float(body, "top_p", 0.0, 1.0),
                                   get_int(body, "top_k", 0), get_int(body, "seed", 0, 2**31 - 1)),
    }
    try:
        bias = parse_logit_bias(body.get("logit_bias"))  # token ids are checked against the vocabulary by the model
    except OptionError as e:
        raise bad_request(e.detail, "logit_bias") from None
    if bias:
        opts["sampler"]["logit_bias"] = dict(bias)
    stop = stop_list(body.get("stop"), "stop")
    if stop:
        opts["stop_sequences"] = stop
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request("user: expected a string", "user")
    if session or user:
        opts["session_id"] = session or user
    thinking = body.get("thinking")
    if thinking is not None:
        if not isinstance(thinking, Mapping) or thinking.get("type") not in ("enabled", "disabled"):
            raise bad_request("thinking: expected {type: enabled|disabled, budget_tokens}", "thinking")
        opts["thinking"] = thinking["type"]
        budget = get_int(thinking, "budget_tokens", 1)
        if budget is not None:
            opts["thinking_budget_tokens"] = budget
    return opts


def _grammar(body: Mapping[str, Any]) -> str | None:
    rf = body.get("response_format")
    if rf is None:
        return None
    if not isinstance(rf, Mapping) or rf.get("type") not in ("text", "json_object", "json_schema"):
        raise bad_request("response_format: type must be text, json_object or json_schema", "response_format")
    if rf["type"] == "text":
        return None
    if rf["type"] == "json_object":
        return json_object_gbnf()
    spec = rf.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("schema", {}), (Mapping, bool)):
        raise bad_request("response_format.json_schema: expected {name, schema}", "response_format")
    try:
        return schema_to_gbnf(spec.get("schema", {}))
    except SchemaError as e:
        raise bad_request(f"response_format.json_schema.schema: {e}", "response_format") from None


def _message(m: Any, i: int) -> dict[str, Any]:
    key = f"messages[{i}]"
    if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
        raise bad_request(f"{key}: expected {{role, content}}", "messages")
    role = m["role"]
    content = m.get("content")
    if role == "developer":
        role = "system"
    if role not in ("system", "user", "assistant", "tool"):
        raise bad_request(f"{key}.role: unknown role {role!r}", "messages")
    text = "" if content is None and role == "assistant" else text_blocks(content, f"{key}.content")
    if role == "assistant" and m.get("tool_calls"):
        calls = m["tool_calls"]
        if not isinstance(calls, list):
            raise bad_request(f"{key}.tool_calls: expected a list", "messages")
        rendered = []
        for j, c in enumerate(calls):
            fn = c.get("function") if isinstance(c, Mapping) else None
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                raise bad_request(f"{key}.tool_calls[{j}]: expected {{function: {{name, arguments}}}}", "messages")
            args: Any = fn.get("arguments", "{}")
            try:
                args = json.loads(args) if isinstance(args, str) else args
            except ValueError:
                raise bad_request(f"{key}.tool_calls[{j}].function.arguments: not JSON", "messages") from None
            rendered.append(render_tool_call(fn["name"], args))
        text = "\n".join([t for t in [text, *rendered] if t])
    return {"role": role, "content": text}


def chat_call(body: Any, default_max_tokens: int, session: str | None = None) -> GenCall:
    """``POST /v1/chat/completions`` body -> GenCall (ApiError 400 naming the field on bad input)."""
    body = require_object(body)
    model = check_model_name(body)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad_request("messages: expected a non-empty list", "messages")
    messages = tuple(_message(m, i) for i, m in enumerate(msgs))
    tools = tool_specs(body.get("tools"))
    choice = body.get("tool_choice")
    if choice == "none":
        tools = None
    elif isinstance(choice, Mapping):  # {"type": "function", "function": {"name": ...}}: offer just that one
        name = (choice.get("function") or {}).get("name")
        tools = tuple(t for t in tools or () if t["name"] == name) or None
        if tools is None:
            raise bad_request(f"tool_choice: no tool named {name!r} in tools", "tool_choice")
    elif choice not in (None, "auto", "required"):
        raise bad_request("tool_choice: expected none, auto, required or {type: function, function: {name}}",
                          "tool_choice")
    opts = _common_options(body, default_max_tokens, session)
    forced = forced_tool_grammar(tools, choice == "required" or isinstance(choice, Mapping))
    derived = _grammar(body)
    if forced and derived:
        raise bad_request("response_format cannot be combined with a required tool call", "response_format")
    grammar = pick_grammar(body, forced or derived, "response_format or a required tool call")
    if grammar:
        opts["sampler"]["grammar"] = grammar
    stream = get_bool(body, "stream")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, Mapping):
        raise bad_request("stream_options: expected an object", "stream_options")
    usage = bool(so and so.get("include_usage")) and stream
    return GenCall(model, ChatPrompt(messages, None, tools), opts, stream, usage, parse_tools=tools is not None)


def completion_call(body: Any, default_max_tokens: int, session: str | None = None) -> GenCall:
    """``POST /v1/completions``: a text prompt or a list of token ids (one prompt: n=1)."""
    body = require_object(body)
    model = check_model_name(body)
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], (str, list)):
        p = p[0]
    if isinstance(p, str):
        prompt: str | tuple[int, ...] = p
    elif isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
        prompt = tuple(p)
    else:
        raise bad_request("prompt: expected a string or a list of token ids (one prompt)", "prompt")
    if body.get("echo") or body.get("best_of") not in (None, 1) or body.get("suffix"):
        raise bad_request("echo, best_of and suffix are not supported", "echo")
    opts = _common_options(body, default_max_tokens, session)
    grammar = pick_grammar(body, None, "")
    if grammar:
        opts["sampler"]["grammar"] = grammar
    stream = get_bool(body, "stream")
    so = body.get("stream_options")
    usage = bool(isinstance(so, Mapping) and so.get("include_usage")) and stream
    return GenCall(model, prompt, opts, stream, usage)


# --------------------------------------------------------------------------- responses


def usage(result: mm.Completion, prompt_tokens: int) -> dict[str, Any]:
    """``prompt_tokens``: the model's own count (a text prompt is tokenized there), else what was sent."""
    prompt_tokens = int(result.stats.get("prompt_tokens") or prompt_tokens)
    out = len(result.generated)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": out, "total_tokens": prompt_tokens + out,
            "prompt_tokens_details": {"cached_tokens": result.cache_delta.read}}


def tool_call_json(call: ToolCall, index: int, req_id: str) -> dict[str, Any]:
    return {"id": f"call_{req_id[:16]}_{index}", "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}}


def chat_response(call: GenCall, result: mm.Completion, prompt_tokens: int, rid: str) -> dict[str, Any]:
    calls, rest = split_tool_calls(result.tool_calls) if call.parse_tools else ([], list(result.tool_calls))
    content = "".join([result.reply, *rest])
    message: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
    if calls:
        message["tool_calls"] = [tool_call_json(c, i, rid) for i, c in enumerate(calls)]
    if result.thinking:
        message["reasoning_content"] = result.thinking
    finish = "tool_calls" if calls else _FINISH.get(result.finish_reason, "stop")
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": call.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage(result, prompt_tokens), "system_fingerprint": None, "llama_actors": extras(result)}


def completion_response(call: GenCall, result: mm.Completion, prompt_tokens: int, rid: str) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": call.model,
            "choices": [{"index": 0, "text": result.reply, "logprobs": None,
                         "finish_reason": _FINISH.get(result.finish_reason, "stop")}],
            "usage": usage(result, prompt_tokens), "llama_actors": extras(result)}


class ChatStream:
    """Chat completion chunks for a stream of model events (a small state machine, pure).

    ``feed(event)`` returns the chunk dicts to send for one event (the
    ``Completion`` last); the caller frames each with ``sse.data`` and ends
    with ``data: [DONE]``.  Tool calls are sent whole when their span ends
    (one delta per call); a span that is not a valid call goes out as text.
    """

    def __init__(self, call: GenCall, rid: str, prompt_tokens: int, text_completion: bool = False) -> None:
        self.call = call
        self.rid = rid
        self.prompt_tokens = prompt_tokens
        self.created = int(time.time())
        self.text_completion = text_completion
        self.started = False
        self.n_calls = 0

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if self.text_completion:
            choice: dict[str, Any] = {"index": 0, "text": delta.get("content", ""), "logprobs": None,
                                      "finish_reason": finish}
            obj = "text_completion"
        else:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            obj = "chat.completion.chunk"
        return {"id": self.rid, "object": obj, "created": self.created, "model": self.call.model, "choices": [choice]}

    def _start(self) -> list[dict[str, Any]]:
        if self.started or self.text_completion:
            self.started = True
            return []
        self.started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def feed(self, ev: Any) -> list[dict[str, Any]]:
        out = self._start()
        if isinstance(ev, mm.TokenChunk):
            if ev.text and ev.kind == "text":
                out.append(self._chunk({"content": ev.text}))
            elif ev.text and ev.kind == "thinking" and not self.text_completion:
                out.append(self._chunk({"reasoning_content": ev.text}))
        elif isinstance(ev, mm.ToolCallEnd):
            calls, rest = split_tool_calls([ev.text]) if self.call.parse_tools else ([], [ev.text])
            for c in calls:
                tc = {"index": self.n_calls, **tool_call_json(c, self.n_calls, self.rid)}
                out.append(self._chunk({"tool_calls": [tc]}))
                self.n_calls += 1
            out += [self._chunk({"content": t}) for t in rest]
        elif isinstance(ev, mm.Completion):
            finish = "tool_calls" if self.n_calls else _FINISH.get(ev.finish_reason, "stop")
            last = self._chunk({}, finish)
            last["llama_actors"] = extras(ev)
            out.append(last)
            if self.call.include_usage:
                u = {"id": self.rid, "object": last["object"], "created": self.created, "model": self.call.model,
                     "choices": [], "usage": usage(ev, self.prompt_tokens)}
                out.append(u)
        return out


# --------------------------------------------------------------------------- embeddings


def embedding_inputs(body: Any) -> tuple[str, list[str | tuple[int, ...]], str]:
    """``POST /v1/embeddings`` -> (model, inputs, encoding_format)."""
    body = require_object(body)
    model = check_model_name(body)
    x = body.get("input")
    if isinstance(x, str):
        inputs: list[str | tuple[int, ...]] = [x]
    elif isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x):
        inputs = [tuple(x)]
    elif isinstance(x, list) and x and all(isinstance(s, str) for s in x):
        inputs = list(x)
    elif isinstance(x, list) and x and all(isinstance(s, list) and s and all(isinstance(t, int) for t in s)
                                           for s in x):
        inputs = [tuple(s) for s in x]
    else:
        raise bad_request("input: expected a string, a list of strings, or token id lists", "input")
    if any(isinstance(i, str) and not i for i in inputs):
        raise bad_request("input: empty string", "input")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise bad_request("encoding_format: float or base64", "encoding_format")
    return model, inputs, fmt


def embeddings_response(model: str, vectors: list[list[float]], n_tokens: int, fmt: str) -> dict[str, Any]:
    def enc(v: list[float]) -> Any:
        return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if fmt == "base64" else v

    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": enc(v)} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}


def models_response(models: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": m["model_id"], "object": "model", "created": 0,
                                         "owned_by": "llama-actors"} for m in models]}


__all__ = ["ChatStream", "chat_call", "chat_response", "completion_call", "completion_response",
           "embedding_inputs", "embeddings_response", "models_response", "usage"]
