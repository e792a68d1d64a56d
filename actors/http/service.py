"""The server's effectful core: admission, prompt rendering, generation, model state.

Routes translate their API into a :class:`GenCall` and hand it here; this
module talks to the tree only through the :class:`Bridge` (messages) and
the observability table and cache counter files (shared memory, no
message).  It never runs inside a model process.

Backpressure: each model has a bounded number of requests in flight at
the server (running in a sequence or waiting for one, ``queue_limit``);
one more is refused at once with ``overloaded`` and a ``Retry-After``,
rather than queueing without bound behind a busy model.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from actors.api import ModelError, System, gen_options
from actors.config import HttpSettings
from actors.http.bridge import Bridge, new_id
from actors.http.calls import ChatPrompt, GenCall
from actors.http.errors import ApiError, from_reason
from actors.http.metrics import Metrics
from actors.model import messages as mm


@dataclass
class Prepared:
    """A call ready to send: the prompt goes as it came (a chat is rendered by the model itself)."""

    call: GenCall
    prompt: str | tuple[int, ...] | ChatPrompt
    prompt_tokens: int  # 0 when the model tokenizes or renders the prompt (then read from its first event)
    rid: str


class Gateway:
    """What the routes call: one per server, on its event loop (so ``in_flight`` needs no lock)."""

    def __init__(self, system: System, settings: HttpSettings) -> None:
        self.system = system
        self.settings = settings
        self.bridge = Bridge(system)
        self.in_flight: dict[str, int] = {}
        self.metrics = Metrics(system.observe_all, system.cache_counters, lambda: dict(self.in_flight))

    # ------------------------------------------------------------------ model state (no messages)

    def observe(self, model: str) -> Any:
        try:
            return self.system.observe(model)
        except ModelError:
            return None

    def check_model(self, model: str) -> None:
        """404 for a model the tree does not know (read from shared memory: no round trip)."""
        try:
            known = self.system.has_model(model)
        except ModelError:
            known = False
        if not known:
            raise ApiError(404, "model_not_found", f"no model {model!r} is loaded", "model")

    def limit(self, model: str) -> int:
        return int(self.settings.queue_limits.get(model, self.settings.queue_limit))

    def acquire(self, model: str) -> Callable[[], None]:
        """Take one of ``model``'s places for a request, or refuse with 429 when none is left.

        Returns the idempotent release (a stream releases when its response ends, however it ends).
        """
        n = self.in_flight.get(model, 0)
        if n >= self.limit(model):
            self.metrics.rejected.labels(model).inc()
            raise ApiError(429, "overloaded", f"model {model!r} has {n} requests in flight (queue_limit "
                                              f"{self.limit(model)}); retry later",
                           retry_after_s=self.settings.retry_after_s)
        self.in_flight[model] = n + 1
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                self.in_flight[model] -= 1

        return release

    @contextlib.contextmanager
    def admitted(self, model: str) -> Iterator[None]:
        release = self.acquire(model)
        try:
            yield
        finally:
            release()

    async def models(self) -> list[dict[str, Any]]:
        return list((await self.bridge.call(mm.ListModels(new_id()), 30.0)).value)

    # ------------------------------------------------------------------ prompts

    @staticmethod
    def prepare(call: GenCall) -> Prepared:
        """No round trip: a chat travels as the prompt and the model renders it where it prefills."""
        prompt = call.prompt
        return Prepared(call, prompt, len(prompt) if isinstance(prompt, tuple) else 0, new_id())

    async def count_tokens(self, model: str, chat: ChatPrompt) -> int:
        """The chat's length through the model's own template (what a request with it would prefill)."""
        self.check_model(model)
        msg = mm.ApplyChatTemplate(model, new_id(), messages=chat.messages, system=chat.system, tools=chat.tools,
                                   add_assistant=True, tokenize=True)
        return len((await self.bridge.call(msg, 60.0)).value)

    # ------------------------------------------------------------------ generation

    async def generate(self, p: Prepared, endpoint: str) -> AsyncIterator[Any]:
        """Model events, then the final ``Completion``; records metrics on the way.

        Leaving early (a client that went away) cancels the request in the model.
        """
        try:
            options = gen_options({**p.call.options, "sampler": dict(p.call.options.get("sampler", {}))})
        except ModelError as e:
            raise from_reason(e.reason, e.detail) from None
        msg = mm.Infer(p.call.model, p.rid, prompt=p.prompt, options=options)
        t0 = time.perf_counter()
        first = True
        async with contextlib.aclosing(self.bridge.stream(msg)) as events:
            async for ev in events:
                if first and isinstance(ev, (mm.TokenChunk, mm.Completion)):
                    first = False
                    self.metrics.ttft.labels(p.call.model, endpoint).observe(time.perf_counter() - t0)
                if isinstance(ev, mm.Completion):
                    self.metrics.record_completion(p.call.model, ev)
                yield ev

    async def complete(self, p: Prepared, endpoint: str) -> mm.Completion:
        """Run to the end and return the ``Completion`` (events are folded into it by the model)."""
        result = None
        async with contextlib.aclosing(self.generate(p, endpoint)) as events:
            async for ev in events:
                if isinstance(ev, mm.Completion):
                    result = ev
        if result is None:
            raise ApiError(500, "bad_reply", "the model ended the request without a result")
        return result

    async def embed(self, model: str, inputs: Sequence[str | tuple[int, ...]]) -> tuple[list[list[float]], int]:
        """Vectors and the number of input tokens (text inputs are tokenized first, to count them)."""
        self.check_model(model)
        token_lists = []
        for x in inputs:
            if isinstance(x, str):
                msg = mm.Tokenize(model, new_id(), text=x, add_special=True, parse_special=False)
                token_lists.append(tuple((await self.bridge.call(msg, 60.0)).value))
            else:
                token_lists.append(tuple(x))
        reply = await self.bridge.call(mm.EmbedBatch(model, new_id(), inputs=tuple(token_lists)), 600.0)
        return [list(v) for v in reply.value], sum(len(t) for t in token_lists)

    # ------------------------------------------------------------------ operations

    async def health(self) -> tuple[bool, dict[str, Any]]:
        models = await self.models()
        out = {}
        for m in models:
            rec = self.observe(m["model_id"])
            out[m["model_id"]] = {"state": m["state"], "phase": rec.phase if rec else None,
                                  "restarts": m["restarts"], "pid": m["pid"]}
        ok = bool(models) and all(m["state"] == "ready" for m in models)
        return ok, {"status": "ok" if ok else "degraded", "models": out}

    async def state(self) -> dict[str, Any]:
        """What the page shows: models with phase and queue, and the cache counters."""
        models = []
        for m in await self.models():
            rec = self.observe(m["model_id"])
            models.append({"id": m["model_id"], "state": m["state"], "restarts": m["restarts"],
                           "phase": rec.phase if rec else None, "pending": rec.pending_len if rec else 0,
                           "queue_depth": rec.queue_depth if rec else 0,
                           "in_flight": self.in_flight.get(m["model_id"], 0), "queue_limit": self.limit(m["model_id"]),
                           "last_cache_hit": rec.last_cache_hit if rec else None})
        counters = self.metrics.cache_counters()
        keys = ("hits_exact", "hits_resume", "hits_longest_prefix", "misses", "saves_cold", "saves_finish",
                "bytes_ram", "bytes_ram_file", "bytes_disk", "rows_ram", "rows_ram_file", "rows_disk")
        return {"models": models, "cache": {k: counters.get(k, 0) for k in keys}}

    def close(self) -> None:
        self.bridge.close()


__all__ = ["Gateway", "Prepared"]
