"""The typed request both APIs translate into, and the checks they share (pure).

An OpenAI or Anthropic body becomes one :class:`GenCall`: which model,
the prompt (a chat to render through the model's template, a text, or
token ids), the generation keywords of ``actors.api.gen_options``, and
how to answer (stream or not, usage chunk, tool-call parsing).  The
service runs a ``GenCall`` without knowing which API it came from.

Tool calls travel as text in the chat: an assistant turn that called a
tool is rendered as ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``
(the form the model's system prompt asks for, see
``actors.model.llama.normalise_messages``), and a tool call the model makes
(the bytes between its ``tool_call_markers``) is parsed back from that JSON.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from actors.http.errors import ApiError, bad_request
from actors.model import messages as mm
from actors.model.messages import ChatPrompt  # the model renders it through its template, in the request

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
MAX_STOP = 32


@dataclass(frozen=True)
class GenCall:
    """One generation request, API-neutral."""

    model: str
    prompt: ChatPrompt | str | tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)  # actors.api.gen_options keywords
    stream: bool = False
    include_usage: bool = False
    parse_tools: bool = False


@dataclass(frozen=True)
class ToolCall:
    """A parsed tool call: ``arguments`` is the JSON object the model wrote."""

    name: str
    arguments: dict[str, Any]


# --------------------------------------------------------------------------- field checks


def require_object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise bad_request("the request body must be a JSON object")
    return body


def get_str(body: Mapping[str, Any], key: str, required: bool = False) -> str | None:
    v = body.get(key)
    if v is None:
        if required:
            raise bad_request(f"{key}: required", key)
        return None
    if not isinstance(v, str) or not v:
        raise bad_request(f"{key}: expected a non-empty string", key)
    return v


def get_int(body: Mapping[str, Any], key: str, lo: int, hi: int | None = None) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        bound = f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise bad_request(f"{key}: expected {bound}, got {json.dumps(v)}", key)
    return v


def get_float(body: Mapping[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise bad_request(f"{key}: expected a number between {lo} and {hi}, got {json.dumps(v)}", key)
    return float(v)


def get_bool(body: Mapping[str, Any], key: str, default: bool = False) -> bool:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad_request(f"{key}: expected true or false", key)
    return v


def stop_list(v: Any, key: str) -> tuple[str, ...]:
    """``stop`` (a string or a list) / ``stop_sequences`` (a list) as a tuple of non-empty strings."""
    if v is None:
        return ()
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or len(items) > MAX_STOP or not all(isinstance(s, str) and s for s in items):
        raise bad_request(f"{key}: expected up to {MAX_STOP} non-empty strings", key)
    return tuple(items)


def sampler_options(temperature: float | None, top_p: float | None, top_k: int | None, seed: int | None,
                    default_temperature: float = 1.0) -> dict[str, Any]:
    """Both APIs default to temperature 1; a sampled request without a seed gets a fresh one."""
    t = default_temperature if temperature is None else temperature
    out: dict[str, Any] = {"temperature": t}
    if top_p is not None:
        out["top_p"] = top_p
    if top_k is not None:
        out["top_k"] = top_k
    if t > 0:
        out["seed"] = seed if seed is not None else random.getrandbits(31)
    elif seed is not None:
        out["seed"] = seed
    return out


def text_blocks(v: Any, key: str) -> str:
    """A content value that may hold text only: a string, or a list of ``{"type": "text", "text"}`` blocks."""
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        parts = []
        for i, b in enumerate(v):
            if isinstance(b, Mapping) and b.get("type") == "text" and isinstance(b.get("text"), str):
                parts.append(b["text"])
            else:
                kind = b.get("type") if isinstance(b, Mapping) else type(b).__name__
                raise bad_request(f"{key}[{i}]: only text blocks are supported here, got {kind!r}", key)
        return "\n".join(parts)
    raise bad_request(f"{key}: expected a string or a list of text blocks", key)


# --------------------------------------------------------------------------- tool calls


def render_tool_call(name: str, arguments: Any) -> str:
    """An assistant turn's tool call as the text the model itself would have written."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False, separators=(",", ":"))
    return f"{TOOL_CALL_START}{body}{TOOL_CALL_END}"


def parse_tool_call(text: str) -> ToolCall | None:
    """The tool call in a span's text (``{"name", "arguments"|"parameters"}``), or None when it is not one."""
    s = text.strip()
    if s.startswith(TOOL_CALL_START) and s.endswith(TOOL_CALL_END):  # markers kept in the bytes
        s = s[len(TOOL_CALL_START):-len(TOOL_CALL_END)].strip()
    try:
        obj = json.loads(s)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(obj["name"], args)


def tool_specs(tools: Any, key: str = "tools") -> tuple[dict[str, Any], ...] | None:
    """OpenAI ``tools`` ([{type: function, function: {...}}]) or Anthropic ones ({name, input_schema})
    as the function specs the template describes to the model."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise bad_request(f"{key}: expected a list", key)
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, Mapping):
            raise bad_request(f"{key}[{i}]: expected an object", key)
        fn = t.get("function") if t.get("type") == "function" else t
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise bad_request(f"{key}[{i}]: a tool needs a name", key)
        spec = {"name": fn["name"]}
        if isinstance(fn.get("description"), str):
            spec["description"] = fn["description"]
        params = fn.get("parameters", fn.get("input_schema"))
        if params is not None:
            spec["parameters"] = params
        out.append(spec)
    return tuple(out) or None


def split_tool_calls(raw: Sequence[str]) -> tuple[list[ToolCall], list[str]]:
    """Parsed tool calls, and the spans that were not valid calls (returned as text, never dropped)."""
    calls, rest = [], []
    for text in raw:
        c = parse_tool_call(text)
        if c is None:
            rest.append(text)
        else:
            calls.append(c)
    return calls, rest


def extras(result: Any) -> dict[str, Any]:
    """What this runtime adds: how the cache served the prompt, and the model-side TTFT."""
    return {"cache_hit_kind": result.cache_hit_kind, "cached_tokens": result.cache_delta.read,
            "cache_created_tokens": result.cache_delta.created, "ttft_ms": result.stats.get("ttft_ms"),
            "finish_reason": result.finish_reason}


def pick_grammar(body: Mapping[str, Any], derived: str | None, why: str) -> str | None:
    """The request's grammar: the ``grammar`` extension (GBNF text, as llama.cpp's server takes it) or
    the one ``why`` (response_format, a forced tool call) implies; both at once is a 400."""
    own = body.get("grammar")
    if own is None:
        return derived
    if not isinstance(own, str) or not own.strip():
        raise bad_request("grammar: expected GBNF text", "grammar")
    if derived is not None:
        raise bad_request(f"grammar: cannot be combined with {why}", "grammar")
    return own


def forced_tool_grammar(tools: tuple[dict[str, Any], ...] | None, forced: bool) -> str | None:
    """A grammar that makes the reply one tool call, when the request demands a call."""
    if not forced or not tools:
        return None
    from actors.http.schema_grammar import SchemaError, tool_call_gbnf

    try:
        return tool_call_gbnf(list(tools), TOOL_CALL_START, TOOL_CALL_END)
    except SchemaError as e:
        raise bad_request(f"tools: {e}", "tools") from None


def check_model_name(body: Mapping[str, Any]) -> str:
    model = get_str(body, "model", required=True)
    assert model is not None
    return model


def prompt_count(first: Any, fallback: int) -> int:
    """A stream's prompt length from its first model event (the model tokenized or rendered it)."""
    if isinstance(first, mm.TokenChunk) and first.prompt_tokens:
        return first.prompt_tokens
    if isinstance(first, mm.Completion):
        return int(first.stats.get("prompt_tokens") or fallback)
    return fallback


__all__ = ["ApiError", "ChatPrompt", "GenCall", "ToolCall", "check_model_name", "extras", "forced_tool_grammar",
           "get_bool", "get_float", "get_int", "get_str", "parse_tool_call", "pick_grammar", "prompt_count",
           "render_tool_call",
           "require_object", "sampler_options", "split_tool_calls", "stop_list", "text_blocks", "tool_specs"]
