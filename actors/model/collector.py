"""A small actor that subscribes to a model's token stream: an example and a bench tool.

It is what a user's own thespian actor does to drive a model: send an
``Infer`` to the model supervisor with itself as ``reply_to``, receive
``TokenChunk``s, then one ``Done`` or ``ErrorReply``.  It records each
chunk's delivery latency (arrival minus the chunk's sampling timestamp)
and answers the asker with everything once the stream ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from thespian.actors import Actor

from actors.model import messages as mm


@dataclass(frozen=True)
class Collect:
    req_id: str
    models: Any  # the model supervisor's address
    model: str
    prompt: mm.Prompt
    options: mm.GenOptions = field(default_factory=mm.GenOptions)


@dataclass(frozen=True)
class Collected:
    req_id: str
    chunks: tuple[tuple[str, tuple[int, ...], float, float], ...]  # (text, ids, sampled_at, arrived_at)
    result: mm.Completion | None
    error: mm.ErrorReply | None

    @property
    def latencies(self) -> list[float]:
        return [arrived - sampled for _t, _i, sampled, arrived in self.chunks]


class StreamCollector(Actor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asker: Any = None
        self.req_id = ""
        self.chunks: list[tuple[str, tuple[int, ...], float, float]] = []

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, Collect):
            self.asker, self.req_id, self.chunks = sender, msg.req_id, []
            self.send(msg.models, mm.Infer(msg.model, msg.req_id, self.myAddress, prompt=msg.prompt,
                                           options=msg.options))
        elif isinstance(msg, mm.TokenChunk) and msg.req_id == self.req_id:
            self.chunks.append((msg.text, msg.token_ids, msg.ts, time.time()))
        elif isinstance(msg, (mm.Done, mm.ErrorReply)) and msg.req_id == self.req_id:
            self.send(self.asker, Collected(self.req_id, tuple(self.chunks),
                                            msg.result if isinstance(msg, mm.Done) else None,
                                            msg if isinstance(msg, mm.ErrorReply) else None))
            self.req_id = ""
