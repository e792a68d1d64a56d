"""11. Tool-call streaming: capture the exact bytes of a tool call the model writes.

Models trained for tools wrap a call in markers of their chat format (``<tool_call>`` ... ``</tool_call>``
for qwen and hermes-style templates). Load the model with ``tool_call_markers`` and the stream splits
the call out of the answer: ``TokenChunk(kind="tool_call")`` deltas with the call's body, then one
``ToolCallEnd`` whose ``data`` is exactly those bytes joined, ready to store under a tool-call id and
splice back verbatim on the next turn (no re-buffering, no re-serialising). The answer text around it
comes as ``kind="text"`` without the call, and ``Completion.tool_calls`` lists every call's body.
Tool-call syntax is sampled greedily, so it stays byte-deterministic even at a high temperature.

SmolLM2 was not trained for tools, so a grammar makes it write one ``get_weather`` call; the model picks the city.

    .venv/bin/python examples/11_tool_calls.py
"""

from __future__ import annotations

import json

from _common import MODEL, fact, parser, running_system

from actors.model.messages import TokenChunk, ToolCallEnd

MARKERS = {"start": "<tool_call>", "end": "</tool_call>"}
GRAMMAR = (r'''root ::= "Let me check. <tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"" '''
           r'''[A-Z] [a-z]{2,12} "\"}}</tool_call> One moment."''')
QUESTION = "What is the weather like in Paris today?"


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL, tool_call_markers=MARKERS)
        prompt = system.apply_chat_template(MODEL, [{"role": "user", "content": QUESTION}])
        stream = system.infer(MODEL, prompt, max_tokens=60, grammar=GRAMMAR)
        deltas: list[str] = []
        answer = ""
        ends: list[ToolCallEnd] = []
        for event in stream:
            if isinstance(event, ToolCallEnd):
                ends.append(event)
            elif isinstance(event, TokenChunk) and event.kind == "tool_call":
                deltas.append(event.text)
            elif isinstance(event, TokenChunk):
                answer += event.text
        result = stream.result
        assert result is not None
        body = "".join(deltas)
        fact("tool_call deltas", [d for d in deltas if d])
        fact("deltas joined", body)
        fact("tool_call_end events", len(ends))
        fact("ToolCallEnd.data", ends[0].data if ends else None)
        fact("ToolCallEnd.complete", ends[0].complete if ends else None)
        fact("end data equals joined deltas", bool(ends) and ends[0].data == body.encode())
        call = json.loads(body)
        fact("tool name", call["name"])
        fact("tool arguments", call["arguments"])
        fact("answer without the call", repr(answer))
        fact("result.reply", repr(result.reply))
        fact("result.tool_calls", list(result.tool_calls))
        fact("markers in answer", "<tool_call>" in result.reply or "</tool_call>" in result.reply)


if __name__ == "__main__":
    main()
