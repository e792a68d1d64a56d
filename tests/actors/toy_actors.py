"""Actors used only by tests (imported by actor processes through PYTHONPATH)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from thespian.actors import Actor

from actors.model import messages as mm
from actors.supervisor.spec import ChildSpec, Strategy
from actors.supervisor.supervisor import Supervisor


@dataclass(frozen=True)
class Subscribe:
    """Ask the subscriber to start an Infer on `model` through `models` (the model supervisor)."""

    req_id: str
    models: Any
    model: str
    prompt: Any
    max_tokens: int
    delay_s: float = 0.0  # a slow consumer: sleep this long per chunk


@dataclass(frozen=True)
class Collected:
    req_id: str
    chunks: list[tuple[str, tuple[int, ...], float]]  # (text, ids, delivery latency in s)
    result: Any
    error: Any


class Subscriber(Actor):
    """A user's own actor driving a model: sends Infer with itself as reply_to, collects the stream."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asker: Any = None
        self.req_id = ""
        self.chunks: list[tuple[str, tuple[int, ...], float]] = []
        self.delay_s = 0.0

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, Subscribe):
            self.asker, self.req_id, self.chunks, self.delay_s = sender, msg.req_id, [], msg.delay_s
            self.send(msg.models, mm.Infer(msg.model, msg.req_id, self.myAddress, prompt=msg.prompt,
                                           options=mm.GenOptions(max_tokens=msg.max_tokens)))
        elif isinstance(msg, mm.TokenChunk) and msg.req_id == self.req_id:
            self.chunks.append((msg.text, msg.token_ids, time.time() - msg.ts))
            if self.delay_s:
                time.sleep(self.delay_s)
        elif isinstance(msg, (mm.Done, mm.ErrorReply)) and msg.req_id == self.req_id:
            result = msg.result if isinstance(msg, mm.Done) else None
            error = msg if isinstance(msg, mm.ErrorReply) else None
            self.send(self.asker, Collected(self.req_id, self.chunks, result, error))


@dataclass(frozen=True)
class Pid:
    req_id: str = ""


@dataclass(frozen=True)
class PidIs:
    req_id: str
    pid: int


class Worker(Actor):
    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, Pid):
            self.send(sender, PidIs(msg.req_id, os.getpid()))


@dataclass(frozen=True)
class ToyStart:
    strategy: str
    max_restarts: int
    n_children: int = 3


class ToySup(Supervisor):
    """A supervisor of plain Worker children, its strategy and intensity set at start."""

    def handle(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, ToyStart):
            from actors.supervisor.spec import RestartIntensity

            self.strategy = Strategy(msg.strategy)
            self.intensity = RestartIntensity(msg.max_restarts, 60.0)
            for i in range(msg.n_children):
                self.add_child(ChildSpec(f"w{i}", Worker))


class ToyRoot(Supervisor):
    """Supervises one ToySup (one_for_one, generous intensity) to observe escalation."""

    def handle(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, ToyStart):
            self.add_child(ChildSpec("sup", ToySup, init=msg))
