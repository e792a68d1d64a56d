"""Server-sent events, encoded (pure).

Both APIs stream ``text/event-stream``: OpenAI sends unnamed ``data:``
lines ending with ``data: [DONE]``; Anthropic names every event
(``event: message_start`` ...) and repeats the name as ``type`` in the data.
One event is one ``bytes`` value so a response can write it in one piece.
"""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"
MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _json(obj: Any) -> str:
    # Compact and ASCII-safe: a JSON document never holds a raw newline, so it is one data line.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


def data(obj: Any) -> bytes:
    """An unnamed event (OpenAI chunks)."""
    return f"data: {_json(obj)}\n\n".encode()


def event(name: str, obj: Any) -> bytes:
    """A named event (Anthropic): ``event: <name>`` then its data line."""
    if not name or any(c in name for c in "\r\n:"):
        raise ValueError(f"bad event name {name!r}")
    return f"event: {name}\ndata: {_json(obj)}\n\n".encode()


def parse(stream: bytes) -> list[tuple[str | None, str]]:
    """Split an event stream into ``(event name or None, data)`` pairs (what a client sees; for tests)."""
    out: list[tuple[str | None, str]] = []
    for block in stream.decode().replace("\r\n", "\n").split("\n\n"):
        name, lines = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                lines.append(line[5:].lstrip(" "))
        if lines:
            out.append((name, "\n".join(lines)))
    return out
