"""The small surface the model engine needs from an inference backend.

``LlamaBackend`` wraps the native binding; ``StubBackend`` is a
deterministic stand-in for fast scheduler tests.  The stub's next token
is a hash of the sequence's *content* (the tokens in its KV) and of the
sampler's parameters, never of the slot number: a scheduler bug that
feeds one request's rows into another sequence, or swaps samplers,
changes the output and shows in tests, while a cache restore (same
content, another slot) gives the same tokens as a cold run, exactly like
the real model.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from actors.cache.key import ctx_params_hash, effective_fingerprint
from actors.model.errors import InvalidInputError, LlamaError, OptionError, Status, error_for
from actors.model.host_load import HostLoad, cores_clear, cores_left
from actors.model.llama import Decode, Prefill, StepResult
from actors.model.options import default_threads, parse_sampler_options
from actors.model.prefix_tokens import PrefixTokenizer
from actors.model.stream import incomplete_utf8_tail
from actors.model.threads import ThreadTuner


class Backend(Protocol):
    """What the engine calls; everything runs on the model's single worker thread."""

    name: str
    n_seq_max: int
    n_batch: int
    n_ctx_seq: int
    n_vocab: int
    fingerprint: bytes
    quant: int
    ctx_hash: bytes
    context_size: int

    def info(self) -> dict[str, Any]: ...
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]: ...
    def detokenize(self, tokens: Sequence[int]) -> str: ...
    def piece(self, token: int) -> bytes: ...
    def is_eog(self, token: int) -> bool: ...
    def valid_token(self, token: int) -> bool: ...
    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], system: str | None,
                            tools: Sequence[Mapping[str, Any]] | None, add_assistant: bool) -> str: ...
    def embed(self, tokens: Sequence[int]) -> list[float]: ...
    def new_sampler(self, options: Mapping[str, Any]) -> Any: ...
    def free_sampler(self, sampler: Any) -> None: ...
    def accept(self, sampler: Any, token: int) -> None: ...
    def step(self, rows: Sequence[Prefill | Decode]) -> list[StepResult]: ...
    def sample(self, seq: int, sampler: Any) -> int | None: ...
    def kv_pack(self, seq: int) -> bytes | bytearray: ...
    def kv_unpack(self, seq: int, blob: bytes | bytearray | memoryview) -> None: ...
    def get_logits(self, seq: int) -> bytes: ...
    def set_logits(self, seq: int, logits: bytes | bytearray | memoryview) -> None: ...
    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> None: ...
    def seq_len(self, seq: int) -> int: ...
    def forward_argmax(self, seq: int, tokens: Sequence[int]) -> list[int]: ...
    def load_adapter(self, path: str) -> Any: ...
    def set_adapters(self, adapters: Sequence[tuple[Any, float]]) -> None: ...
    def close_adapter(self, adapter: Any) -> None: ...
    def vram(self) -> dict[str, Any]: ...
    def crash(self, how: str) -> None: ...
    def set_decode_budget(self, budget_ms: int) -> None: ...
    def abort_decode(self, on: bool = True) -> None: ...  # any thread: ends the decode in flight
    def reset(self) -> None: ...  # every sequence's KV and logits cleared; weights and adapters stay
    def hold_next_decode(self, ms: int) -> None: ...  # test hook: a decode slower than its budget
    def close(self) -> None: ...


def native_crash(how: str) -> None:
    """A real fault of this process (test hook): SIGSEGV, SIGABRT or SIGKILL."""
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "abort":
        os.abort()
    else:
        ctypes.string_at(0)  # NULL read: a genuine SIGSEGV
    time.sleep(5)  # pragma: no cover - the signal is on its way


# --------------------------------------------------------------------------- llama


class LlamaBackend:
    name = "llama"

    def __init__(self, path: str | None, model_options: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        from actors.model.llama import Model

        self.model = Model(path, **dict(model_options))
        try:
            self.ctx = self.model.new_context(**dict(context))
        except BaseException:
            self.model.close()
            raise
        ci = self.ctx.info
        self.n_seq_max = ci.n_seq_max
        self.n_batch = ci.n_batch
        self.n_ctx_seq = ci.n_ctx_seq
        self.context_size = ci.n_ctx
        self.n_vocab = self.model.info.n_vocab
        self.fingerprint = effective_fingerprint(self.model.fingerprint, [])
        self.quant = self.model.info.ftype if 0 <= self.model.info.ftype <= 255 else 0
        self.ctx_hash = ctx_params_hash(self.ctx.options.layout())
        self._embed_ctx: Any = None
        self._context_opts = dict(context)
        # A resent system prompt or conversation is not tokenized again (model/prefix_tokens.py).
        self.tokens = PrefixTokenizer(self.model.tokenize, self.model.vocab())
        # The share of the node's cores (decode, prefill) and the count in use within it, chosen by step times.
        self.share = (ci.n_threads, ci.n_threads_batch)
        self.host = HostLoad()
        self.tuner = ThreadTuner(max(ci.n_threads, ci.n_threads_batch), probe_down=not self.host.available())
        self.cpus = default_threads()  # the cores this process may run on

    def info(self) -> dict[str, Any]:
        from actors.model.llama import type_name

        mi, ci = self.model.info, self.ctx.info
        return {"backend": "llama", "path": mi.path, "description": mi.description, "n_params": mi.n_params,
                "n_vocab": mi.n_vocab, "n_ctx": ci.n_ctx, "n_ctx_seq": ci.n_ctx_seq, "n_batch": ci.n_batch,
                "n_seq_max": ci.n_seq_max, "n_threads": ci.n_threads, "n_threads_batch": ci.n_threads_batch,
                "fingerprint": self.fingerprint.hex(),
                "base_fingerprint": self.model.fingerprint.hex(), "quant": mi.description.split()[-1],
                "ftype": mi.ftype, "kv_type": type_name(self.ctx.options.type_k),
                "memory": self.memory_estimate()}

    def memory_estimate(self) -> dict[str, int]:
        """Weights (file size) plus the KV cache llama.cpp reserves for n_ctx tokens, from GGUF metadata.

        An estimate for capacity planning: K and V of every layer for every
        context cell, with grouped-query attention taken into account.
        """
        mi, ci = self.model.info, self.ctx.info
        arch = self.model.meta("general.architecture") or "llama"

        def meta_int(key: str, default: int) -> int:
            try:
                return int(self.model.meta(f"{arch}.{key}") or default)
            except ValueError:
                return default

        heads = max(1, meta_int("attention.head_count", 1))
        heads_kv = meta_int("attention.head_count_kv", heads)
        n_embd_kv = mi.n_embd * heads_kv // heads
        elt = {0: 4, 1: 2, 30: 2, 8: 1}.get(self.ctx.options.type_k, 1)
        kv = ci.n_ctx * mi.n_layer * 2 * n_embd_kv * elt
        return {"weights_b": mi.size_bytes, "kv_b": kv, "total_b": mi.size_bytes + kv}

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return self.tokens.tokenize(text.encode("utf-8"), add_special, parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.model.detokenize(list(tokens))

    def piece(self, token: int) -> bytes:
        return self.model.token_to_piece(token)

    def is_eog(self, token: int) -> bool:
        return self.model.is_eog(token)

    def valid_token(self, token: int) -> bool:
        return isinstance(token, int) and not isinstance(token, bool) and 0 <= token < self.n_vocab

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], system: str | None,
                            tools: Sequence[Mapping[str, Any]] | None, add_assistant: bool) -> str:
        return self.model.apply_chat_template(messages, system=system, tools=tools, add_assistant=add_assistant)

    def embed(self, tokens: Sequence[int]) -> list[float]:
        if self._embed_ctx is None:
            n_ctx = min(int(self._context_opts.get("n_ctx", 2048) or 2048), 2048)
            ci = self.ctx.info  # the embeddings context stays within this model's share of the node's cores
            self._embed_ctx = self.model.new_context(n_ctx=n_ctx, n_batch=n_ctx, embeddings=True, pooling="mean",
                                                     n_threads=ci.n_threads, n_threads_batch=ci.n_threads_batch)
        self._embed_ctx.seq_clear(0)
        return self._embed_ctx.embed(tokens)

    def new_sampler(self, options: Mapping[str, Any]) -> Any:
        return self.model.sampler(**dict(options))

    def free_sampler(self, sampler: Any) -> None:
        sampler.close()

    def accept(self, sampler: Any, token: int) -> None:
        sampler.accept(token)

    def step(self, rows: Sequence[Prefill | Decode]) -> list[StepResult]:
        others = self.host.others_busy()
        if others is not None:  # what the rest of the host takes, before this step can collapse
            n = self.tuner.limit(cores_left(self.cpus, others), time.monotonic(), cores_clear(self.cpus, others))
            if n is not None:
                self._apply_threads(n)
        if not rows or not all(isinstance(r, Decode) for r in rows):
            return self.ctx.step(rows)
        t = time.perf_counter()
        out = self.ctx.step(rows)
        n = self.tuner.observe(time.monotonic(), time.perf_counter() - t, len(rows))
        if n is not None:
            self._apply_threads(n)
        return out

    def _apply_threads(self, n: int) -> None:
        self.ctx.set_threads(min(n, self.share[0]), min(self.tuner.settled, self.share[1]))

    def sample(self, seq: int, sampler: Any) -> int | None:
        """Sample from the pending logits without a decode (the token is appended later by a prefill row)."""
        return int(self.ctx.sample(seq, sampler).token)

    def forward_argmax(self, seq: int, tokens: Sequence[int]) -> list[int]:
        return self.ctx.forward_argmax(seq, tokens)

    def load_adapter(self, path: str) -> Any:
        return self.model.load_adapter(path)

    def set_adapters(self, adapters: Sequence[tuple[Any, float]]) -> None:
        """Apply exactly these adapters; the effective fingerprint follows, so rows of
        different adapter sets live in different cache namespaces."""
        self.ctx.set_adapters(list(adapters))
        self.fingerprint = effective_fingerprint(self.model.fingerprint, [(a.sha256, s) for a, s in adapters])

    def close_adapter(self, adapter: Any) -> None:
        adapter.close()

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        """A new share of the node's cores, applied to the live contexts (llama_set_n_threads: no reload)."""
        self.share = (n_threads, n_threads_batch)
        self._apply_threads(self.tuner.reshare(max(n_threads, n_threads_batch), time.monotonic()))
        if self._embed_ctx is not None:
            self._embed_ctx.set_threads(n_threads, n_threads_batch)

    def vram(self) -> dict[str, Any]:
        from dataclasses import asdict

        from actors.model.llama import vram_info

        return asdict(vram_info())

    def kv_pack(self, seq: int) -> bytearray:
        return self.ctx.kv_pack(seq)

    def kv_unpack(self, seq: int, blob: bytes | bytearray | memoryview) -> None:
        self.ctx.kv_unpack(seq, blob)

    def get_logits(self, seq: int) -> bytes:
        return self.ctx.get_logits(seq)

    def set_logits(self, seq: int, logits: bytes | bytearray | memoryview) -> None:
        self.ctx.set_logits(seq, logits)

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> None:
        self.ctx.seq_rm(seq, p0, p1)

    def seq_len(self, seq: int) -> int:
        return self.ctx.seq_len(seq)

    def crash(self, how: str) -> None:
        if how in ("segv", "abort"):
            from actors.model.llama import debug_crash

            debug_crash(how)
        native_crash(how)

    def set_decode_budget(self, budget_ms: int) -> None:
        self.ctx.set_decode_budget(budget_ms)

    def abort_decode(self, on: bool = True) -> None:
        self.ctx.abort(on)

    def reset(self) -> None:
        self.ctx.reset()

    def hold_next_decode(self, ms: int) -> None:
        self.ctx.debug_hold_decode(ms)

    def close(self) -> None:
        if self._embed_ctx is not None:
            self._embed_ctx.close()
        self.ctx.close()
        self.model.close()


# --------------------------------------------------------------------------- stub

_SPECIALS = 3  # 0 pad, 1 bos, 2 eos
BOS, EOS = 1, 2
_BLOB_MAGIC = b"STUBKV1\x00"


@dataclass(frozen=True)
class StubConfig:
    """Knobs of the stub backend.

    ``alphabet``: characters generated tokens spell (their UTF-8 bytes are
    emitted one token per byte, so multi-byte characters exercise the
    UTF-8-safe streaming).  ``eog_every``: a generated token is EOS when the
    content hash is divisible by it (0 = never).  ``step_delay_s`` and
    ``token_delay_s`` simulate compute per step and per batch token.
    """

    n_seq_max: int = 4
    n_batch: int = 64
    n_ctx: int = 4096
    alphabet: str = "abcdefghijklmnopqrstuvwxyz "
    eog_every: int = 0
    step_delay_s: float = 0.0
    token_delay_s: float = 0.0
    model_name: str = "stub"


class StubSampler:
    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = parse_sampler_options(dict(options))
        o = self.options
        self.tag = struct.pack("<dI", o.temperature, o.seed) + (o.grammar or "").encode()
        self.closed = False


class StubBackend:
    name = "stub"

    def __init__(self, config: StubConfig | Mapping[str, Any] | None = None) -> None:
        cfg = config if isinstance(config, StubConfig) else StubConfig(**dict(config or {}))
        if not cfg.alphabet:
            raise OptionError("alphabet", "must not be empty")
        self.cfg = cfg
        self.n_seq_max = cfg.n_seq_max
        self.n_batch = cfg.n_batch
        per_seq = -(-cfg.n_ctx // cfg.n_seq_max)
        self.n_ctx_seq = max(256, -(-per_seq // 256) * 256)  # as llama.cpp: n_ctx / n_seq_max rounded up to 256
        self.context_size = cfg.n_ctx
        self.n_vocab = _SPECIALS + 256
        self.fingerprint = effective_fingerprint(hashlib.sha256(b"stub-model:" + cfg.alphabet.encode()).digest(), [])
        self.quant = 0
        self.ctx_hash = ctx_params_hash({"type_k": 1, "type_v": 1, "flash_attn": -1})
        self._kv: dict[int, list[int]] = {s: [] for s in range(cfg.n_seq_max)}
        self._logits: dict[int, bytes | None] = {s: None for s in range(cfg.n_seq_max)}
        self.steps: list[list[tuple[int, str, int]]] = []  # (seq, kind, n) per step, for tests
        self.closed = False
        self.budget_s = 0.0
        self.hold_s = 0.0
        self._abort = threading.Event()

    def info(self) -> dict[str, Any]:
        return {"backend": "stub", "n_vocab": self.n_vocab, "n_ctx": self.context_size, "n_ctx_seq": self.n_ctx_seq,
                "n_batch": self.n_batch, "n_seq_max": self.n_seq_max, "fingerprint": self.fingerprint.hex()}

    # -- text --------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        raw = text.encode("utf-8")
        return ([BOS] if add_special else []) + [b + _SPECIALS for b in raw]

    def piece(self, token: int) -> bytes:
        return bytes([token - _SPECIALS]) if token >= _SPECIALS else b""

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return token == EOS

    def valid_token(self, token: int) -> bool:
        return isinstance(token, int) and not isinstance(token, bool) and 0 <= token < self.n_vocab

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], system: str | None,
                            tools: Sequence[Mapping[str, Any]] | None, add_assistant: bool) -> str:
        from actors.model.llama import normalise_messages

        parts = [f"<{role}>{text}\n" for role, text in normalise_messages(messages, system, tools)]
        return "".join(parts) + ("<assistant>" if add_assistant else "")

    def embed(self, tokens: Sequence[int]) -> list[float]:
        h = hashlib.sha256(struct.pack(f"<{len(tokens)}i", *tokens)).digest()
        return [b / 255.0 for b in h[:16]]

    # -- sampling ----------------------------------------------------------------

    def new_sampler(self, options: Mapping[str, Any]) -> StubSampler:
        return StubSampler(options)

    def free_sampler(self, sampler: Any) -> None:
        sampler.closed = True

    def accept(self, sampler: Any, token: int) -> None:
        """The stub's choice depends on the sequence's content only: nothing to record."""

    def _digest(self, tokens: Sequence[int]) -> bytes:
        return hashlib.blake2b(struct.pack(f"<{len(tokens)}i", *tokens), digest_size=16).digest()

    def _next_token(self, seq: int, sampler: StubSampler) -> int:
        logits = self._logits[seq]
        if logits is None:
            raise error_for(Status.LA_E_NO_LOGITS, f"seq {seq} has no pending logits")
        if sampler.closed:
            raise error_for(Status.LA_E_RELEASED, "sampler is closed")
        h = int.from_bytes(hashlib.blake2b(logits + sampler.tag, digest_size=8).digest(), "little")
        if self.cfg.eog_every and h % self.cfg.eog_every == 0:
            return EOS
        tail = incomplete_utf8_tail(bytes(t - _SPECIALS for t in self._kv[seq][-3:] if t >= _SPECIALS))
        if tail:  # finish the multi-byte character already started
            for ch in self.cfg.alphabet:
                enc = ch.encode()
                if len(enc) > len(tail) and enc.startswith(tail):
                    return enc[len(tail)] + _SPECIALS
        ch = self.cfg.alphabet[h % len(self.cfg.alphabet)]
        return ch.encode()[0] + _SPECIALS

    def sample(self, seq: int, sampler: Any) -> int | None:
        self._check_seq(seq)
        tok = self._next_token(seq, sampler)
        self._logits[seq] = None
        return tok

    # -- steps -------------------------------------------------------------------

    def _check_seq(self, seq: int) -> None:
        if not isinstance(seq, int) or not 0 <= seq < self.n_seq_max:
            raise error_for(Status.LA_E_BAD_SEQ, f"seq {seq}")

    def step(self, rows: Sequence[Prefill | Decode]) -> list[StepResult]:
        if self.closed:
            raise error_for(Status.LA_E_RELEASED, "closed")
        seen: set[int] = set()
        total = 0
        for row in rows:
            self._check_seq(row.seq)
            if row.seq in seen:
                raise error_for(Status.LA_E_BAD_ARG, f"seq {row.seq} twice in one step")
            seen.add(row.seq)
            if isinstance(row, Prefill):
                if not row.tokens:
                    raise error_for(Status.LA_E_BAD_ARG, "empty prefill row")
                if any(not self.valid_token(t) for t in row.tokens):
                    raise error_for(Status.LA_E_BAD_TOKEN, "bad token")
                adds = len(row.tokens)
            else:
                if self._logits[row.seq] is None:
                    raise error_for(Status.LA_E_NO_LOGITS, f"seq {row.seq} has no pending logits")
                adds = 1
            if len(self._kv[row.seq]) + adds > self.n_ctx_seq:
                raise error_for(Status.LA_E_CONTEXT_OVERFLOW, f"seq {row.seq}")
            total += adds
        if total > self.n_batch:
            raise error_for(Status.LA_E_BATCH_OVERFLOW, f"{total} > {self.n_batch}")
        self._compute(self.cfg.step_delay_s + self.cfg.token_delay_s * total)
        out: list[StepResult] = []
        log: list[tuple[int, str, int]] = []
        for row in rows:
            if isinstance(row, Decode):
                tok = self._next_token(row.seq, row.sampler)
                eog = self.is_eog(tok)
                if eog:
                    self._logits[row.seq] = None
                else:
                    self._kv[row.seq].append(tok)
                    self._logits[row.seq] = self._digest(self._kv[row.seq])
                out.append(StepResult(row.seq, tok, eog))
                log.append((row.seq, "decode", 1))
            else:
                self._kv[row.seq].extend(row.tokens)
                self._logits[row.seq] = self._digest(self._kv[row.seq])
                out.append(StepResult(row.seq, None, False))
                log.append((row.seq, "prefill", len(row.tokens)))
        self.steps.append(log)
        return out

    def _compute(self, delay: float) -> None:
        """The step's simulated compute, stopped as llama.cpp's abort callback would (nothing applied)."""
        hold, self.hold_s = self.hold_s, 0.0
        delay += hold
        if delay <= 0 and not self._abort.is_set():
            return
        end = time.monotonic() + delay
        deadline = time.monotonic() + self.budget_s if self.budget_s > 0 else None
        while True:
            if self._abort.is_set():
                self._abort.clear()
                raise error_for(Status.LA_E_ABORTED, "aborted")
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise error_for(Status.LA_E_DECODE_TIMEOUT, f"past its budget of {self.budget_s * 1000:.0f} ms")
            if now >= end:
                return
            self._abort.wait(min(end, deadline or end) - now)

    def set_decode_budget(self, budget_ms: int) -> None:
        self.budget_s = budget_ms / 1000.0

    def abort_decode(self, on: bool = True) -> None:
        if on:
            self._abort.set()
        else:
            self._abort.clear()

    def reset(self) -> None:
        self._kv = {s: [] for s in range(self.n_seq_max)}
        self._logits = {s: None for s in range(self.n_seq_max)}
        self._abort.clear()

    def hold_next_decode(self, ms: int) -> None:
        self.hold_s = ms / 1000.0

    # -- state -------------------------------------------------------------------

    def kv_pack(self, seq: int) -> bytes:
        self._check_seq(seq)
        toks = self._kv[seq]
        return _BLOB_MAGIC + struct.pack(f"<I{len(toks)}i", len(toks), *toks)

    def kv_unpack(self, seq: int, blob: bytes | bytearray | memoryview) -> None:
        self._check_seq(seq)
        raw = bytes(blob)
        if not raw.startswith(_BLOB_MAGIC) or len(raw) < len(_BLOB_MAGIC) + 4:
            raise error_for(Status.LA_E_UNPACK_FAILED, "not a stub state blob")
        (n,) = struct.unpack_from("<I", raw, len(_BLOB_MAGIC))
        if len(raw) != len(_BLOB_MAGIC) + 4 + 4 * n:
            raise error_for(Status.LA_E_UNPACK_FAILED, "truncated stub state blob")
        self._kv[seq] = list(struct.unpack_from(f"<{n}i", raw, len(_BLOB_MAGIC) + 4))
        self._logits[seq] = None

    def get_logits(self, seq: int) -> bytes:
        self._check_seq(seq)
        lg = self._logits[seq]
        if lg is None:
            raise error_for(Status.LA_E_NO_LOGITS, f"seq {seq}")
        return lg

    def set_logits(self, seq: int, logits: bytes | bytearray | memoryview) -> None:
        self._check_seq(seq)
        if len(logits) != 16:
            raise InvalidInputError("bad_arg", "stub logits are 16 bytes")
        self._logits[seq] = bytes(logits)

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> None:
        self._check_seq(seq)
        toks = self._kv[seq]
        lo = 0 if p0 < 0 else p0
        hi = len(toks) if p1 < 0 else p1
        self._kv[seq] = toks[:lo] + toks[hi:]
        self._logits[seq] = None

    def seq_len(self, seq: int) -> int:
        self._check_seq(seq)
        return len(self._kv[seq])

    def forward_argmax(self, seq: int, tokens: Sequence[int]) -> list[int]:
        """Append ``tokens``; after each one, the token a greedy request would get next."""
        greedy = StubSampler({})
        out = []
        for t in tokens:
            self.step([Prefill(seq, [t])])
            out.append(self._next_token(seq, greedy))
        return out

    def load_adapter(self, path: str) -> Any:
        raise LlamaError("not_supported", "the stub backend has no LoRA adapters")

    def set_adapters(self, adapters: Sequence[tuple[Any, float]]) -> None:
        if adapters:
            raise LlamaError("not_supported", "the stub backend has no LoRA adapters")

    def close_adapter(self, adapter: Any) -> None:
        pass

    def vram(self) -> dict[str, Any]:
        return {"available": False, "reason": "stub backend"}

    def kv_tokens(self, seq: int) -> list[int]:
        """Test helper: the tokens sequence ``seq`` holds."""
        return list(self._kv[seq])

    def crash(self, how: str) -> None:
        native_crash(how)

    def close(self) -> None:
        self.closed = True


def make_backend(kind: str, path: str | None, model_options: Mapping[str, Any], context: Mapping[str, Any],
                 stub: Mapping[str, Any]) -> Backend:
    if kind == "llama":
        return LlamaBackend(path, model_options, context)
    if kind == "stub":
        return StubBackend(stub)
    raise LlamaError("bad_option", f"backend: unknown backend {kind!r} (known: llama, stub)")
