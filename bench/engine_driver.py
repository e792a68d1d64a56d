"""Drivers without the actor tree: our ``Engine`` in this process, and the raw binding on a chat's least work.

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



class RawBindingChat:
    """The engine's own limit on a chat: the raw binding with one live sequence per conversation.

    Why: "within 5% of the engine's own limit" was computed from rates the
    binding reaches on a one-token context (decode there is ~40% faster than
    at a chat's 400-600 tokens), a bound no engine can meet.  This driver does
    the least work any server on this llama.cpp must do for the same turns:
    each conversation keeps its sequence for the whole run, so a turn
    prefills only the tokens its sequence lacks (the new message), in the
    engine's slice size, then decodes greedily.  No cache, no saves, no
    scheduler, no process hop.  Run in the same lockstep as the others, its
    wall is the limit the tree's wall is held against.

    A turn's last token is sampled, not decoded (as both servers do): the
    next turn's prompt brings it in.
    """

    name = "raw_binding"

    def __init__(self, conversations: int, n_ctx_seq: int, threads: int, n_batch: int = 512) -> None:
        from actors.model.llama import Model
        from actors.model.scheduler import default_chunk

        self.chunk = default_chunk(n_batch)
        self._model = Model(default_model_path())
        try:
            # One stream per sequence (not a unified KV): each decode attends over its own conversation only.
            self._ctx = self._model.new_context(n_ctx=n_ctx_seq * conversations, n_seq_max=conversations,
                                                n_batch=n_batch, n_threads=threads, n_threads_batch=threads)
            self._sampler = self._model.sampler()
        except BaseException:
            self._model.close()
            raise
        self._held: list[list[int]] = [[] for _ in range(conversations)]  # the tokens each sequence holds
        self._used: list[int] = [0] * conversations  # last use, to reuse the stalest sequence when all are taken
        self._clock = itertools.count(1)

    def _sequence_for(self, prompt: list[int]) -> tuple[int, int]:
        """The sequence to run ``prompt`` on, and how many of its tokens it keeps.

        A conversation's own sequence holds a prefix of its next prompt; a new conversation takes a free
        sequence, else the stalest one (the chat of an earlier round, never a live conversation of this one)."""
        def common(held: list[int]) -> int:
            n = 0
            for a, b in zip(held, prompt, strict=False):
                if a != b:
                    break
                n += 1
            return n

        shared = [common(h) for h in self._held]
        own = [i for i, h in enumerate(self._held) if h and shared[i] == len(h)]
        free = [i for i, h in enumerate(self._held) if not h]
        if own:
            seq = max(own, key=lambda i: shared[i])
        elif free:
            seq = free[0]
        else:
            seq = min(range(len(self._used)), key=lambda i: self._used[i])
        return seq, min(shared[seq], len(prompt) - 1)  # at least the last token is evaluated, for its logits

    def complete(self, prompt: list[int], max_tokens: int) -> dict[str, Any]:
        import time

        from actors.model.context import Decode, Prefill

        seq, keep = self._sequence_for(prompt)
        self._used[seq] = next(self._clock)
        ctx = self._ctx
        ctx.seq_rm(seq, keep, -1)
        t0 = time.perf_counter()
        for start in range(keep, len(prompt), self.chunk):
            ctx.step([Prefill(seq, prompt[start:start + self.chunk])])
        t1 = time.perf_counter()
        out: list[int] = []
        held = list(prompt)
        for i in range(max_tokens):
            if i == max_tokens - 1:
                r = ctx.sample(seq, self._sampler)  # the last token: sampled, left for the next prompt
            else:
                (r,) = ctx.step([Decode(seq, self._sampler)])
            if r.eog:
                break
            out.append(int(r.token))
            if i < max_tokens - 1:
                held.append(int(r.token))
        t2 = time.perf_counter()
        self._held[seq] = held
        return {"tokens": out, "evaluated": len(prompt) - keep, "cached": keep, "prefill_s": t1 - t0,
                "decode_s": t2 - t1, "generated": len(out),
                "decode_tok_s": (len(out) - 1) / (t2 - t1) if len(out) > 1 and t2 > t1 else 0.0}

    def close(self) -> None:
        try:
            self._sampler.close()
            self._ctx.close()
        finally:
            self._model.close()


__all__ = ["InProcessEngine", "RawBindingChat"]
