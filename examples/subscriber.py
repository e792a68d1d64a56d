"""A subscriber actor of your own: it asks a model for a streamed completion and collects the stream.

Thespian creates every actor in a process of the actor system, and that process imports the
actor's class by its module name. So the class must live in a module the system can import (a
file next to your script, a package on ``PYTHONPATH`` or an installed one): never in the script
you run (``__main__``). ``System`` starts the system with your script's import path, so a file
next to the script, like this one, is enough. ``23_custom_subscriber.py`` drives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thespian.actors import Actor

from actors.model import messages as mm


@dataclass(frozen=True)
class Ask:
    """To the subscriber: stream ``prompt`` from ``model`` through ``models`` (the model supervisor)."""

    req_id: str
    models: Any  # System.tree.models
    model: str
    prompt: str
    max_tokens: int


@dataclass(frozen=True)
class Answer:
    """From the subscriber, once the stream has ended: what it collected."""

    req_id: str
    text: str
    chunks: int
    finish_reason: str | None  # None when the request failed
    error: str | None  # "reason: detail" of the ErrorReply, when it failed


class Subscriber(Actor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asker: Any = None
        self.req_id = ""
        self.parts: list[str] = []

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, Ask):
            self.asker, self.req_id, self.parts = sender, msg.req_id, []
            # reply_to is this actor: the TokenChunks, then one Done or ErrorReply, come here.
            self.send(msg.models, mm.Infer(msg.model, msg.req_id, self.myAddress, prompt=msg.prompt,
                                           options=mm.GenOptions(max_tokens=msg.max_tokens)))
        elif getattr(msg, "req_id", None) != self.req_id:
            return  # a late message of an earlier request (e.g. a crash racing its final reply)
        elif isinstance(msg, mm.TokenChunk):
            self.parts.append(msg.text)
        elif isinstance(msg, mm.Done):
            text = "".join(self.parts)
            self.send(self.asker, Answer(self.req_id, text, len(self.parts), msg.result.finish_reason, None))
        elif isinstance(msg, mm.ErrorReply):
            self.send(self.asker, Answer(self.req_id, "".join(self.parts), len(self.parts), None, str(msg)))
