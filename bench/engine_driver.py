"""Our engine without the actor tree: the same ``Engine``, real backend and cache policy, in this process.

Why: the interleaved chat through the actor tree trails llama-server, and the
question that decides where to work next is whether the gap is the engine's
(scheduling, restores, saves) or the hosting's (the model process, the
messages to it).  Run side by side with both, this driver answers it: the
tree's wall over this one's is what hosting costs, and this one's over
llama-server's is what the engine costs.

The engine runs on this thread; the cache is an in-process ``CacheService``
with the configuration the tree gets (ram tier, same policy), so restores and
saves cost what they cost in the model process.
"""

from __future__ import annotations

import itertools
from typing import Any

from actors.cache.config import CacheConfig
from actors.cache.service import CacheService
from actors.errors import ErrorReply
from actors.model import messages as mm
from actors.model.backend import LlamaBackend
from actors.model.engine import Engine, EngineHooks, EngineSettings
from actors.model.llama import default_model_path


class InProcessEngine:
    """A driver with ``complete(prompt, max_tokens)`` like the others; close it when done."""

    name = "engine_in_process"

    def __init__(self, cache: CacheConfig, context: dict[str, Any]) -> None:
        self._ids = itertools.count()
        self._service = CacheService(cache, writers=0)
        self._backend = LlamaBackend(str(default_model_path()), {}, context)
        self._replies: dict[str, mm.Completion | ErrorReply] = {}
        self.engine = Engine(EngineSettings("engine", policy=cache.policy), self._backend, self._emit,
                             cache=self._service.client(), hooks=EngineHooks(done=lambda _rid: None))

    def _emit(self, _dest: Any, msg: Any) -> None:
        # Recorded, never raised here: the engine catches what a tick raises and answers with an error.
        if isinstance(msg, (mm.Completion, ErrorReply)):
            self._replies[msg.req_id] = msg

    def complete(self, prompt: list[int], max_tokens: int) -> dict[str, Any]:
        rid = f"e{next(self._ids)}"
        self.engine.handle(mm.Complete("engine", rid, "bench", prompt=prompt,
                                       options=mm.GenOptions(max_tokens=max_tokens)))
        while self.engine.has_work():
            self.engine.tick()
        r = self._replies.pop(rid)
        if isinstance(r, ErrorReply):
            raise RuntimeError(f"in-process engine: {r.reason}: {r.detail}")
        st = r.stats
        return {"tokens": list(r.generated), "evaluated": st["prompt_tokens"] - r.cache_delta.read,
                "cached": r.cache_delta.read, "prefill_s": st["prefill_ms"] / 1e3, "decode_s": st["decode_ms"] / 1e3,
                "generated": len(r.generated), "decode_tok_s": st.get("tokens_per_s") or 0.0}

    def close(self) -> None:
        try:
            self._backend.close()
        finally:
            self._service.close()


__all__ = ["InProcessEngine"]
