"""Anthropic Messages wire format (pure): bodies to :class:`GenCall`, results to messages and named events.

``POST /v1/messages`` and ``/v1/messages/count_tokens``.  Content blocks:
``text``, ``tool_use`` (an assistant turn's call, rendered as the text the
model would have written), ``tool_result`` (a ``tool`` turn), and
``thinking`` / ``redacted_thinking`` of earlier turns (dropped, as the
Messages API itself ignores them in the prompt).  ``thinking: {type:
enabled, budget_tokens}`` turns on the model's thinking span; its block
carries the node's HMAC signature.

Usage: ``input_tokens`` counts the prompt tokens that were neither read
from the cache nor written to it, so ``input_tokens +
cache_read_input_tokens + cache_creation_input_tokens`` is the prompt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from actors.http.calls import (
    ChatPrompt,
    GenCall,
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
from actors.model import messages as mm


def _system(v: Any) -> str | None:
    if v is None:
        return None
    return text_blocks(v, "system")


def _turn(m: Any, i: int) -> list[dict[str, Any]]:
    key = f"messages[{i}]"
    if not isinstance(m, Mapping) or m.get("role") not in ("user", "assistant"):
        raise bad_request(f"{key}: expected {{role: user|assistant, content}}", "messages")
    role, content = m["role"], m.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise bad_request(f"{key}.content: expected a string or a list of blocks", "messages")
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    for j, b in enumerate(content):
        t = b.get("type") if isinstance(b, Mapping) else None
        if t == "text" and isinstance(b.get("text"), str):
            texts.append(b["text"])
        elif t == "tool_use" and role == "assistant" and isinstance(b.get("name"), str):
            texts.append(render_tool_call(b["name"], b.get("input", {})))
        elif t == "tool_result" and role == "user":
            if texts:
                out.append({"role": role, "content": "\n".join(texts)})
                texts = []
            c = b.get("content", "")
            out.append({"role": "tool", "content": text_blocks(c, f"{key}.content[{j}].content")})
        elif t in ("thinking", "redacted_thinking") and role == "assistant":
            continue
        else:
            raise bad_request(f"{key}.content[{j}]: unsupported block {t!r}", "messages")
    if texts or not out:
        out.append({"role": role, "content": "\n".join(texts)})
    return out


def chat_prompt(body: Mapping[str, Any]) -> ChatPrompt:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad_request("messages: expected a non-empty list", "messages")
    turns = tuple(t for i, m in enumerate(msgs) for t in _turn(m, i))
    tools = tool_specs(body.get("tools"))
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") == "none":
        tools = None
    elif isinstance(choice, Mapping) and choice.get("type") == "tool":
        tools = tuple(t for t in tools or () if t["name"] == choice.get("name")) or None
        if tools is None:
            raise bad_request(f"tool_choice: no tool named {choice.get('name')!r}", "tool_choice")
    return ChatPrompt(turns, _system(body.get("system")), tools)


def messages_call(body: Any, session: str | None = None) -> GenCall:
    """``POST /v1/messages`` body -> GenCall (``max_tokens`` is required, as in the API)."""
    body = require_object(body)
    model = check_model_name(body)
    max_tokens = get_int(body, "max_tokens", 1)
    if max_tokens is None:
        raise bad_request("max_tokens: required", "max_tokens")
    prompt = chat_prompt(body)
    opts: dict[str, Any] = {
        "max_tokens": max_tokens,
        "sampler": sampler_options(get_float(body, "temperature", 0.0, 1.0), get_float(body, "top_p", 0.0, 1.0),
                                   get_int(body, "top_k", 0), None),
    }
    choice = body.get("tool_choice")
    forced = isinstance(choice, Mapping) and choice.get("type") in ("any", "tool")
    grammar = pick_grammar(body, forced_tool_grammar(prompt.tools, forced), "a required tool call")
    if grammar:
        opts["sampler"]["grammar"] = grammar
    stop = stop_list(body.get("stop_sequences"), "stop_sequences")
    if stop:
        opts["stop_sequences"] = stop
    thinking = body.get("thinking")
    if thinking is not None:
        if not isinstance(thinking, Mapping) or thinking.get("type") not in ("enabled", "disabled"):
            raise bad_request("thinking: expected {type: enabled, budget_tokens}", "thinking")
        opts["thinking"] = thinking["type"]
        if thinking["type"] == "enabled":
            opts["thinking_budget_tokens"] = get_int(thinking, "budget_tokens", 1) or max_tokens
    meta = body.get("metadata")
    user = meta.get("user_id") if isinstance(meta, Mapping) else None
    if session or isinstance(user, str):
        opts["session_id"] = session or user
    return GenCall(model, prompt, opts, get_bool(body, "stream"), parse_tools=prompt.tools is not None)


def count_tokens_call(body: Any) -> tuple[str, ChatPrompt]:
    body = require_object(body)
    return check_model_name(body), chat_prompt(body)


# --------------------------------------------------------------------------- responses


def usage(result: mm.Completion | None, prompt_tokens: int) -> dict[str, Any]:
    """``prompt_tokens``: the model's own count when there is a result (it tokenized or rendered the prompt)."""
    if result is not None:
        prompt_tokens = int(result.stats.get("prompt_tokens") or prompt_tokens)
    read = result.cache_delta.read if result else 0
    created = min(result.cache_delta.created, prompt_tokens - read) if result else 0
    return {"input_tokens": prompt_tokens - read - created, "output_tokens": len(result.generated) if result else 0,
            "cache_read_input_tokens": read, "cache_creation_input_tokens": created}


def stop_reason(result: mm.Completion, tool_use: bool) -> str:
    if tool_use:
        return "tool_use"
    if result.stop_sequence is not None:
        return "stop_sequence"
    return "max_tokens" if result.finish_reason in ("length", "timeout") else "end_turn"


def tool_use_block(name: str, arguments: dict[str, Any], rid: str, index: int) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{rid[:16]}_{index}", "name": name, "input": arguments}


def message_response(call: GenCall, result: mm.Completion, prompt_tokens: int, rid: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if result.thinking or result.thinking_signature:
        content.append({"type": "thinking", "thinking": result.thinking, "signature": result.thinking_signature})
    calls, rest = split_tool_calls(result.tool_calls) if call.parse_tools else ([], list(result.tool_calls))
    text = "".join([result.reply, *rest])
    if text or not calls:
        content.append({"type": "text", "text": text})
    content += [tool_use_block(c.name, c.arguments, rid, i) for i, c in enumerate(calls)]
    return {"id": rid, "type": "message", "role": "assistant", "model": call.model, "content": content,
            "stop_reason": stop_reason(result, bool(calls)), "stop_sequence": result.stop_sequence,
            "usage": usage(result, prompt_tokens), "llama_actors": extras(result)}


class MessageStream:
    """Named events for a stream of model events (pure state machine).

    ``start()`` gives ``message_start`` and a ``ping``; ``feed(event)`` the
    events for one model event, the ``Completion`` last (closing the open
    block, then ``message_delta`` with the stop reason and usage, then
    ``message_stop``).  Blocks are numbered from 0 in order; each has one
    ``content_block_start`` and one ``content_block_stop``.
    """

    def __init__(self, call: GenCall, rid: str, prompt_tokens: int) -> None:
        self.call = call
        self.rid = rid
        self.prompt_tokens = prompt_tokens
        self.index = -1
        self.open: str | None = None  # type of the open block
        self.n_tools = 0

    def start(self) -> list[tuple[str, dict[str, Any]]]:
        msg = {"id": self.rid, "type": "message", "role": "assistant", "model": self.call.model, "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": usage(None, self.prompt_tokens)}
        return [("message_start", {"type": "message_start", "message": msg}), ("ping", {"type": "ping"})]

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        if self.open is None:
            return []
        self.open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _begin(self, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        out = self._close()
        self.index += 1
        self.open = block["type"]
        return [*out, ("content_block_start", {"type": "content_block_start", "index": self.index,
                                                "content_block": block})]

    def _delta(self, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return ("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def _text(self, text: str) -> list[tuple[str, dict[str, Any]]]:
        out = [] if self.open == "text" else self._begin({"type": "text", "text": ""})
        return [*out, self._delta({"type": "text_delta", "text": text})]

    def feed(self, ev: Any) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        if isinstance(ev, mm.TokenChunk) and ev.text:
            if ev.kind == "text":
                out += self._text(ev.text)
            elif ev.kind == "thinking":
                if self.open != "thinking":
                    out += self._begin({"type": "thinking", "thinking": "", "signature": ""})
                out.append(self._delta({"type": "thinking_delta", "thinking": ev.text}))
        elif isinstance(ev, mm.ThinkingEnd):
            if self.open != "thinking":  # an empty thinking block still carries its signature
                out += self._begin({"type": "thinking", "thinking": "", "signature": ""})
            out.append(self._delta({"type": "signature_delta", "signature": ev.signature}))
            out += self._close()
        elif isinstance(ev, mm.ToolCallEnd):
            calls, rest = split_tool_calls([ev.text]) if self.call.parse_tools else ([], [ev.text])
            for c in calls:
                block = tool_use_block(c.name, {}, self.rid, self.n_tools)
                self.n_tools += 1
                out += self._begin(block)
                out.append(self._delta({"type": "input_json_delta",
                                        "partial_json": json.dumps(c.arguments, ensure_ascii=False)}))
                out += self._close()
            for t in rest:
                out += self._text(t)
        elif isinstance(ev, mm.Completion):
            if self.index < 0:  # a message always has at least one block
                out += self._begin({"type": "text", "text": ""})
            out += self._close()
            delta = {"stop_reason": stop_reason(ev, self.n_tools > 0), "stop_sequence": ev.stop_sequence}
            out.append(("message_delta", {"type": "message_delta", "delta": delta,
                                          "usage": usage(ev, self.prompt_tokens)}))
            out.append(("message_stop", {"type": "message_stop", "llama_actors": extras(ev)}))
        return out


__all__ = ["MessageStream", "chat_prompt", "count_tokens_call", "message_response", "messages_call", "usage"]
