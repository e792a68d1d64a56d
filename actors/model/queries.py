"""Requests that ask the model something and change nothing: tokens, templates, embeddings, inspection.

They are answered between two steps on the worker thread (every C call
happens there) with one ``Value`` reply, and never touch a sequence, a
session or the scheduler, which is why they live apart from the engine's
admission and tick.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors.model import messages as mm
from actors.model.backend import Backend
from actors.model.cache_use import CacheUse
from actors.model.validate import RequestError, check_text, check_texts_deep, check_token_ids


class Queries:
    def __init__(self, backend: Backend, cache: CacheUse, embeddings: bool) -> None:
        self.backend = backend
        self.cache = cache
        self.embeddings = embeddings
        self._by_type: dict[type, Callable[[Any], Any]] = {
            mm.Tokenize: self._tokenize,
            mm.Detokenize: lambda m: backend.detokenize(self.token_ids(m.tokens)),
            mm.ApplyChatTemplate: self._chat_template,
            mm.Embed: self._embed,
            mm.EmbedBatch: self._embed_batch,
            mm.CachedPrefix: lambda m: self.cache.lookup_only(self.prompt_tokens(m.tokens)),
            mm.VramInfoReq: lambda _m: backend.vram(),
        }

    def handles(self, msg: Any) -> bool:
        return type(msg) in self._by_type

    def answer(self, msg: Any) -> Any:
        """The value for the reply, or RequestError / LlamaError."""
        return self._by_type[type(msg)](msg)

    # ------------------------------------------------------------------ shared by the engine

    def token_ids(self, tokens: Any) -> list[int]:
        return check_token_ids(tokens, self.backend.n_vocab)

    def prompt_tokens(self, prompt: Any, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """A text prompt tokenized, a chat rendered and tokenized, or a token list checked."""
        if isinstance(prompt, str):
            return self.backend.tokenize(check_text(prompt, "prompt"), add_special, parse_special)
        if isinstance(prompt, mm.ChatPrompt):
            return self.render(prompt.messages, prompt.system, prompt.tools, True)  # type: ignore[return-value]
        return self.token_ids(prompt)

    def render(self, messages: Any, system: Any, tools: Any, tokenize: bool,
               add_assistant: bool = True) -> str | list[int]:
        """A chat through the model's template (the tokens include the template's special tokens)."""
        check_texts_deep((messages, system, tools), "messages")
        if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) for m in messages):
            raise RequestError("bad_request", "messages: expected a list of {role, content} objects")
        text = self.backend.apply_chat_template(list(messages), system, tools, add_assistant)
        return self.backend.tokenize(text, True, True) if tokenize else text

    # ------------------------------------------------------------------ answers

    def _tokenize(self, msg: mm.Tokenize) -> list[int]:
        check_text(msg.text, "text")
        if not isinstance(msg.add_special, bool) or not isinstance(msg.parse_special, bool):
            raise RequestError("bad_option", "add_special, parse_special: expected true or false")
        return self.backend.tokenize(msg.text, msg.add_special, msg.parse_special)

    def _chat_template(self, msg: mm.ApplyChatTemplate) -> str | list[int]:
        return self.render(msg.messages, msg.system, msg.tools, msg.tokenize, msg.add_assistant)

    def _need_embeddings(self) -> None:
        if not self.embeddings:
            raise RequestError("embeddings_disabled", "load the model with embeddings=True to embed")

    def _embed(self, msg: mm.Embed) -> list[float]:
        self._need_embeddings()
        return self.backend.embed(self.prompt_tokens(msg.input))

    def _embed_batch(self, msg: mm.EmbedBatch) -> list[list[float]]:
        self._need_embeddings()
        if isinstance(msg.inputs, (str, bytes)) or not isinstance(msg.inputs, (list, tuple)):
            raise RequestError("bad_request", "inputs: expected a list of texts or token lists")
        token_lists = [self.prompt_tokens(x) for x in msg.inputs]
        if any(not t for t in token_lists):
            raise RequestError("bad_request", "an input is empty")
        return [self.backend.embed(t) for t in token_lists]


__all__ = ["Queries"]
