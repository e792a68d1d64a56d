"""From logits to the caller: the first token, each next token, and what the caller is sent.

Once a request's prompt is in KV, every token follows one path: sample (the
first one straight from the pending logits, no decode), feed its bytes to
the request's output shaper (UTF-8 assembly, stop sequences, thinking and
tool-call spans), stream what the shaper releases, and decide whether the
request ends (``stop``, ``length``) or a ``continued`` row is due.

The engine owns the requests and their endings; this class only asks it to
end one (``finish``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from actors.cache.policy import continued_save_length
from actors.model import messages as mm
from actors.model.backend import Backend
from actors.model.cache_use import CacheUse
from actors.model.errors import LlamaError
from actors.model.output import THINKING, Delta, Shaped, SpanEnd
from actors.model.request import Kind, Phase, Request
from actors.model.stream import Markers, Span

Emit = Callable[[Any, Any], None]
Finish = Callable[[Request, str], None]
Publish = Callable[[], None]


class Generation:
    def __init__(self, backend: Backend, cache: CacheUse, emit: Emit, finish: Finish, publish: Publish,
                 markers: Markers, counters: dict[str, int]) -> None:
        self.backend = backend
        self.cache = cache
        self.emit = emit
        self.finish = finish
        self.publish = publish
        self.markers = markers
        self.counters = counters
        self._greedy: Any = None
        self._thinking_end_tokens: list[int] | None = None

    def prompt_done(self, req: Request) -> None:
        """The prompt is in KV with its logits: end a prefill-only request, or take the first token."""
        if not req.t_prefill_done:
            req.t_prefill_done = time.perf_counter()
        req.phase = Phase.GENERATING
        # Whoever sees the first token may ask for status at once (the door delivers it in well
        # under a millisecond): the published view must say generating before the token leaves.
        self.publish()
        if req.kind is Kind.PREFILL_ONLY:
            self.finish(req, "prefill")
            return
        if not req.wants_token():
            self.finish(req, "length")
            return
        if req.generated:
            return
        # Keep the prompt's last logits before sampling consumes them: saved with the prompt's row,
        # the same prompt next time is an exact hit (restore + sample, no decode, same reply).
        req.prompt_logits = self.cache.prompt_logits(req)
        try:
            tok = self.backend.sample(req.seq, req.sampler)
        except LlamaError:
            tok = None
        if tok is not None:
            # The first token goes out before the prompt's row is packed, so its time to first token
            # does not include the save; a request that ends on this token saves it in its ending.
            req.logits = False
            self.on_token(req, tok, decoded=False, eog=self.backend.is_eog(tok))
        if req.phase is not Phase.DONE:
            self.cache.save_prompt(req)

    def on_token(self, req: Request, tok: int, decoded: bool, eog: bool) -> None:
        if eog:
            self.finish(req, "stop")
            return
        req.add_token(tok, decoded)
        if decoded:
            req.logits = True
        self.counters["tokens_generated"] += 1
        shaped = req.shaper.feed(self.backend.piece(tok))
        self.send(req, shaped, (tok,))
        if shaped.stop is not None:
            self.finish(req, "stop")
            return
        budget = req.options.thinking_budget_tokens
        if budget is not None and budget > 0 and req.shaper.span is Span.THINKING:
            if any(isinstance(e, Delta) and e.kind == THINKING for e in shaped.events):
                req.thinking_tokens += 1
            if req.thinking_tokens >= budget:
                self._force_thinking_end(req)
        if not req.wants_token() or len(req.target) >= self.backend.n_ctx_seq:
            self.finish(req, "length")
            return
        if decoded and self.cache.on(req):
            n = continued_save_length(self.cache.policy, req.pos, req.last_saved)
            if n and n == req.pos:
                self.cache.save(req, "continued")

    def last_token(self, req: Request) -> None:
        """Take the request's final token from its pending logits without a step (``Request.last_token_due``).

        The same sampler a decode row would use, so the token is the one that row would have
        sampled; if sampling fails here, the request is left to the decode row as before."""
        sampler, greedy = self.decode_sampler(req)
        try:
            tok = self.backend.sample(req.seq, sampler)
        except LlamaError:
            return
        if tok is None:
            return
        eog = self.backend.is_eog(tok)
        req.logits = False
        if greedy and not eog:
            self.accept(req, [tok])
        self.on_token(req, tok, decoded=False, eog=eog)

    def decode_sampler(self, req: Request) -> tuple[Any, bool]:
        """The sampler for this request's next decode row, and whether it is the shared greedy one.

        Tool-call syntax is decoded greedily, so its bytes are deterministic (a grammar, when given,
        rules instead)."""
        if req.shaper.wants_greedy() and not req.options.sampler.get("grammar"):
            if self._greedy is None:
                self._greedy = self.backend.new_sampler({})
            return self._greedy, True
        return req.sampler, False

    def accept(self, req: Request, tokens: list[int]) -> None:
        """Tokens the request's own sampler did not pick still enter its history (repetition penalty)."""
        if req.sampler is None:
            return
        for t in tokens:
            try:
                self.backend.accept(req.sampler, t)
            except Exception:  # a grammar may refuse a forced token: its state is then left as is
                return

    def send(self, req: Request, shaped: Shaped, token_ids: tuple[int, ...]) -> None:
        """Stream one feed's events in order; token ids ride on the first chunk (or an empty one)."""
        if not req.stream:
            return
        ts = time.time()
        for ev in shaped.events:
            if isinstance(ev, Delta):
                self.emit(req.reply_to, mm.TokenChunk(req.req_id, ev.text, token_ids, ts, ev.kind, self._first(req)))
                token_ids = ()
            elif isinstance(ev, SpanEnd):
                if ev.kind == THINKING:
                    self.emit(req.reply_to, mm.ThinkingEnd(req.req_id, ev.text, ev.signature, ev.complete))
                else:
                    self.emit(req.reply_to, mm.ToolCallEnd(req.req_id, ev.data, ev.complete))
        if token_ids:
            self.emit(req.reply_to, mm.TokenChunk(req.req_id, "", token_ids, ts, req.shaper.span.value,
                                                  self._first(req)))

    @staticmethod
    def _first(req: Request) -> int:
        """The prompt's length on the request's first chunk (a server's stream header needs it), else 0."""
        if req.chunks_sent:
            return 0
        req.chunks_sent = True
        return req.prompt_len

    def _force_thinking_end(self, req: Request) -> None:
        """Budget spent: end the block for the caller and append the end marker to the sequence,
        so the model itself moves on to its answer (not just the caller's view of it)."""
        self.send(req, req.shaper.close_thinking(), ())
        if self._thinking_end_tokens is None:
            end = self.markers.thinking_end.decode("utf-8", "replace")
            self._thinking_end_tokens = self.backend.tokenize(end, False, True)
        forced = list(self._thinking_end_tokens)
        room = self.backend.n_ctx_seq - len(req.target)
        for t in forced[:max(0, room)]:
            req.add_token(t, decoded=False)
        self.accept(req, forced)
        self.counters["tokens_generated"] += len(forced)

    def close(self) -> None:
        if self._greedy is not None:
            try:
                self.backend.free_sampler(self._greedy)
            finally:
                self._greedy = None


__all__ = ["Generation"]
