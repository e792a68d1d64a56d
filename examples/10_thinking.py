"""10. Extended thinking: stream a model's thoughts apart from its answer, signed, and cap them.

Reasoning models write a thinking span between markers (``<think>`` ... ``</think>`` for qwen3 and
many others) before the answer. Load the model with ``thinking_markers`` and send ``thinking="enabled"``:
the stream then carries ``TokenChunk(kind="thinking")`` deltas, one ``ThinkingEnd`` event (before any
answer text) and the answer as ``kind="text"``; the markers themselves never reach you. A front end
can render the thoughts separately, as the Anthropic Messages API does.

With a node-wide ``thinking_key`` every block is signed (hex HMAC-SHA256 of its text), so when a
client sends a thinking block back on a later turn you can check it was not edited:
``actors.model.stream.verify_signature``. ``thinking_budget_tokens=N`` caps the thinking deltas; at the
cap the end marker is forced into the sequence, so the model moves on to its answer.

SmolLM2 never thinks by itself, so a grammar makes it write ``<think>...</think>`` and then an answer.

    .venv/bin/python examples/10_thinking.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import MODEL, cache_config, fact, parser

from actors.api import System
from actors.model.messages import ThinkingEnd, TokenChunk
from actors.model.stream import verify_signature

KEY = b"example-node-thinking-key-32-bytes"
MARKERS = {"start": "<think>", "end": "</think>"}
THINK_THEN_ANSWER = r'''root ::= "<think>" [a-z ]{3,40} "</think>" [A-Za-z ,.]{1,60}'''
OPEN_THINKING = r'''root ::= "<think>" [a-z ]* "</think>" [A-Za-z ,.]{1,60}'''  # would think as long as it likes
QUESTION = "What is the capital of France?"


def main() -> None:
    args = parser(__doc__).parse_args()
    with tempfile.TemporaryDirectory(prefix="llama-actors-example-") as d, \
            System(args.port, cache=cache_config(Path(d)), thinking_key=KEY) as system:
        system.load_model(MODEL, thinking_markers=MARKERS)
        prompt = system.apply_chat_template(MODEL, [{"role": "user", "content": QUESTION}])

        stream = system.infer(MODEL, prompt, max_tokens=60, thinking="enabled", grammar=THINK_THEN_ANSWER)
        order: list[str] = []
        thinking, answer, signature = "", "", ""
        for event in stream:
            if isinstance(event, ThinkingEnd):
                order.append("thinking_end")
                signature = event.signature
            elif isinstance(event, TokenChunk) and event.text:  # some chunks carry only token ids
                order.append(event.kind)
                if event.kind == "thinking":
                    thinking += event.text
                else:
                    answer += event.text
        result = stream.result
        assert result is not None
        fact("event order", [k for i, k in enumerate(order) if i == 0 or order[i - 1] != k])  # runs collapsed
        fact("thinking", repr(thinking))
        fact("answer", repr(answer))
        fact("signature", signature)
        fact("result.thinking equals deltas", result.thinking == thinking)
        fact("result.thinking_signature equals event", result.thinking_signature == signature)
        fact("markers in answer", "<think>" in result.reply or "</think>" in result.reply)
        fact("signature verifies with the key", verify_signature(KEY, thinking, signature))
        fact("signature verifies with another key", verify_signature(b"someone else's key", thinking, signature))
        fact("signature verifies edited text", verify_signature(KEY, thinking + " and more", signature))

        plain = system.complete(MODEL, prompt, max_tokens=60, grammar=THINK_THEN_ANSWER)  # thinking not enabled
        fact("thinking disabled reply", repr(plain.reply))
        fact("thinking disabled result.thinking", repr(plain.thinking))

        capped = system.infer(MODEL, prompt, max_tokens=60, thinking="enabled", thinking_budget_tokens=3,
                              grammar=OPEN_THINKING)
        events = list(capped)
        result = capped.result
        assert result is not None
        deltas = [e.text for e in events if isinstance(e, TokenChunk) and e.kind == "thinking" and e.text]
        fact("budget", 3)
        fact("capped thinking deltas", deltas)
        fact("capped result.thinking", repr(result.thinking))
        fact("capped thinking_end events", sum(isinstance(e, ThinkingEnd) for e in events))
        fact("capped answer", repr(result.reply))


if __name__ == "__main__":
    main()
