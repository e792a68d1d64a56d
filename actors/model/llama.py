"""Python objects over the native shim: Model, Context, Sampler, Adapter.

Each object owns one native handle. `close()` releases the llama.cpp resource
at once (deferred natively while children still need it); the handle itself is
freed by the garbage collector, so a closed object answers ReleasedError rather
than touching freed memory. Children keep a reference to their model so the
model's handle outlives them.

Calls drop the GIL (cffi API mode), so a prefill in one thread does not stall
others; each handle has its own native mutex. Loading the shim, status checks
and the handle base live in ``actors.model.native``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.model import options as opt
from actors.model.errors import LlamaError, OptionError, error_for
from actors.model.native import (  # the functions re-exported here are the binding's module-level surface
    Handle,
    VramInfo,
    check,
    debug_crash,
    default_model_path,
    file_sha256,
    native,
    path_bytes,
    type_name,
    vram_info,
)

__all__ = ["Adapter", "Context", "ContextInfo", "Decode", "Model", "ModelInfo", "Prefill", "Sampler", "StepResult",
           "VramInfo", "debug_crash", "default_model_path", "file_sha256", "native", "normalise_messages",
           "type_name", "vram_info"]

@dataclass(frozen=True)
class ModelInfo:
    path: str
    description: str
    size_bytes: int
    n_params: int
    n_layer: int
    n_ctx_train: int
    n_embd: int
    n_vocab: int
    ftype: int
    token_bos: int
    token_eos: int
    has_chat_template: bool
    vocab_only: bool


@dataclass(frozen=True)
class ContextInfo:
    n_ctx: int
    n_ctx_seq: int
    n_batch: int
    n_ubatch: int
    n_seq_max: int
    n_threads: int
    n_threads_batch: int
    pooling: int
    embeddings: bool


@dataclass(frozen=True)
class Prefill:
    """A step row that appends `tokens` to sequence `seq` (no sampling)."""

    seq: int
    tokens: Sequence[int]


@dataclass(frozen=True)
class Decode:
    """A step row that samples one token for `seq` from its pending logits and appends it."""

    seq: int
    sampler: Sampler


@dataclass(frozen=True)
class StepResult:
    seq: int
    token: int | None  # None for prefill rows
    eog: bool = False


class Model(Handle):
    """A loaded GGUF model. Options as in `actors.model.options.MODEL_KEYS`."""

    _kind = "model"

    def __init__(self, path: str | os.PathLike[str] | None = None, **options: Any) -> None:
        super().__init__()
        ffi, lib = native()
        self.path = Path(path) if path is not None else default_model_path()
        raw = path_bytes(self.path)
        defaults = ffi.new("la_model_params*")
        check(lib.la_model_default_params(defaults))
        parsed = opt.parse_model_options(options, lib.la_max_devices(), defaults.load_mode, defaults.n_gpu_layers)
        if not self.path.exists():
            raise error_for(lib.LA_E_NOT_FOUND, f"no such file: {self.path}")
        params = ffi.new("la_model_params*")
        params.n_gpu_layers = parsed.n_gpu_layers
        params.main_gpu = parsed.main_gpu
        params.split_mode = parsed.split_mode
        split = ffi.new("float[]", list(parsed.tensor_split) or [0.0])
        params.tensor_split = split if parsed.tensor_split else ffi.NULL
        params.n_tensor_split = len(parsed.tensor_split)
        params.load_mode = parsed.load_mode
        params.vocab_only = parsed.vocab_only
        out = ffi.new("la_model**")
        rc = lib.la_model_load(raw, params, out)
        if rc != lib.LA_OK:
            try:
                check(rc)
            except LlamaError as e:
                if not e.detail:
                    e.detail = str(self.path)
                    e.args = (f"{e.reason}: {self.path}",)
                raise
        self._h = ffi.gc(out[0], lib.la_model_drop)
        self.options = parsed
        self._eog_cache: dict[int, bool] = {}
        self._piece_cache: dict[int, bytes] = {}
        self.info = self._read_info()
        self._fingerprint: bytes | None = None

    def _native_close(self, ptr: Any) -> int:
        return native()[1].la_model_close(ptr)

    def _read_info(self) -> ModelInfo:
        ffi, lib = native()
        info = ffi.new("la_model_info*")
        check(lib.la_model_info_get(self._ptr(), info))
        buf = ffi.new("char[256]")
        n = ffi.new("int32_t*")
        check(lib.la_model_desc(self._ptr(), buf, 256, n))
        return ModelInfo(
            path=str(self.path), description=ffi.unpack(buf, n[0]).decode("utf-8", "replace"),
            size_bytes=info.size_bytes, n_params=info.n_params, n_layer=info.n_layer,
            n_ctx_train=info.n_ctx_train, n_embd=info.n_embd, n_vocab=info.n_vocab, ftype=info.ftype,
            token_bos=info.token_bos, token_eos=info.token_eos,
            has_chat_template=bool(info.has_chat_template), vocab_only=bool(info.vocab_only),
        )

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the GGUF file: the identity cache rows are keyed on."""
        if self._fingerprint is None:
            self._fingerprint = file_sha256(self.path)
        return self._fingerprint

    # -------------------------------------------------------- text

    def tokenize(self, text: str | bytes, add_special: bool = True, parse_special: bool = False) -> list[int]:
        ffi, lib = native()
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        cap = len(raw) + 8
        n = ffi.new("int32_t*")
        while True:
            out = ffi.new("int32_t[]", cap)
            rc = lib.la_tokenize(self._ptr(), raw, len(raw), add_special, parse_special, out, cap, n)
            if rc == lib.LA_E_BUFFER_TOO_SMALL:
                cap = n[0]
                continue
            check(rc)
            return list(ffi.unpack(out, n[0]))

    def detokenize_bytes(self, tokens: Sequence[int], remove_special: bool = False,
                         unparse_special: bool = False) -> bytes:
        ffi, lib = native()
        arr = ffi.new("int32_t[]", list(tokens) or [0])
        cap = max(64, 8 * len(tokens))
        n = ffi.new("int32_t*")
        while True:
            buf = ffi.new("char[]", cap)
            rc = lib.la_detokenize(self._ptr(), arr, len(tokens), remove_special, unparse_special, buf, cap, n)
            if rc == lib.LA_E_BUFFER_TOO_SMALL:
                cap = n[0] + 1
                continue
            check(rc)
            return ffi.unpack(buf, n[0])

    def detokenize(self, tokens: Sequence[int], remove_special: bool = False, unparse_special: bool = False) -> str:
        return self.detokenize_bytes(tokens, remove_special, unparse_special).decode("utf-8", "replace")

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        """The raw bytes of one token (may be part of a multi-byte UTF-8 character)."""
        if not special and token in self._piece_cache:
            return self._piece_cache[token]
        ffi, lib = native()
        n = ffi.new("int32_t*")
        cap = 64
        while True:
            buf = ffi.new("char[]", cap)
            rc = lib.la_token_to_piece(self._ptr(), token, special, buf, cap, n)
            if rc == lib.LA_E_BUFFER_TOO_SMALL:
                cap = n[0]
                continue
            check(rc)
            piece = ffi.unpack(buf, n[0])
            if not special:
                self._piece_cache[token] = piece
            return piece

    def is_eog(self, token: int) -> bool:
        cached = self._eog_cache.get(token)
        if cached is None:
            ffi, lib = native()
            out = ffi.new("bool*")
            check(lib.la_token_is_eog(self._ptr(), token, out))
            cached = self._eog_cache[token] = bool(out[0])
        return cached

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as text (None when the key is absent)."""
        ffi, lib = native()
        n = ffi.new("int32_t*")
        buf = ffi.new("char[4096]")
        rc = lib.la_model_meta(self._ptr(), key.encode(), buf, 4096, n)
        if rc == lib.LA_E_NOT_FOUND:
            return None
        if rc == lib.LA_E_BUFFER_TOO_SMALL:
            buf = ffi.new("char[]", n[0] + 1)
            rc = lib.la_model_meta(self._ptr(), key.encode(), buf, n[0] + 1, n)
        check(rc)
        return ffi.unpack(buf, n[0]).decode("utf-8", "replace")

    def chat_template(self) -> str | None:
        ffi, lib = native()
        n = ffi.new("int32_t*")
        rc = lib.la_model_chat_template(self._ptr(), ffi.NULL, 0, n)
        if rc == lib.LA_E_NO_TEMPLATE:
            return None
        buf = ffi.new("char[]", n[0] + 1)
        check(lib.la_model_chat_template(self._ptr(), buf, n[0] + 1, n))
        return ffi.unpack(buf, n[0]).decode("utf-8", "replace")

    def apply_chat_template(self, messages: Iterable[Mapping[str, Any]], system: str | None = None,
                            tools: Sequence[Mapping[str, Any]] | None = None, add_assistant: bool = True,
                            template: str | None = None) -> str:
        """Render a chat through the model's GGUF template.

        Content may be a string or a list of text blocks ({"type": "text",
        "text": ...}), which are joined; any other block kind is rejected.
        `tools` (JSON-able specs) are described in the system message, since
        llama.cpp's built-in templates have no tool slot of their own.
        """
        ffi, lib = native()
        msgs = normalise_messages(messages, system, tools)
        roles = [ffi.new("char[]", m[0].encode()) for m in msgs]
        contents = [ffi.new("char[]", m[1].encode()) for m in msgs]
        role_arr = ffi.new("char*[]", roles or [ffi.NULL])
        content_arr = ffi.new("char*[]", contents or [ffi.NULL])
        tmpl = ffi.new("char[]", template.encode()) if template else ffi.NULL
        n = ffi.new("int32_t*")
        cap = 256 + sum(len(m[1]) + len(m[0]) + 32 for m in msgs) * 2
        while True:
            buf = ffi.new("char[]", cap)
            rc = lib.la_chat_apply_template(self._ptr(), tmpl, role_arr, content_arr, len(msgs), add_assistant,
                                            buf, cap, n)
            if rc == lib.LA_E_BUFFER_TOO_SMALL:
                cap = n[0] + 1
                continue
            check(rc)
            return ffi.unpack(buf, n[0]).decode("utf-8", "replace")

    # -------------------------------------------------------- children

    def new_context(self, **options: Any) -> Context:
        return Context(self, **options)

    def sampler(self, **options: Any) -> Sampler:
        return Sampler(self, **options)

    def load_adapter(self, path: str | os.PathLike[str]) -> Adapter:
        return Adapter(self, path)


def normalise_messages(messages: Iterable[Mapping[str, Any]], system: str | None,
                       tools: Sequence[Mapping[str, Any]] | None) -> list[tuple[str, str]]:
    """Flatten a chat request into (role, text) pairs; pure, raises OptionError."""
    out: list[tuple[str, str]] = []
    sys_parts: list[str] = []
    if system is not None:
        if not isinstance(system, str):
            raise OptionError("system", "expected a string")
        sys_parts.append(system)
    if tools:
        try:
            specs = "\n".join(json.dumps(t, sort_keys=True) for t in tools)
        except (TypeError, ValueError) as e:
            raise OptionError("tools", f"not JSON-serialisable: {e}") from None
        sys_parts.append("You can call these tools. Reply with a JSON object inside "
                         f"<tool_call></tool_call> to call one.\n<tools>\n{specs}\n</tools>")
    if sys_parts:
        out.append(("system", "\n\n".join(sys_parts)))
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable):
        raise OptionError("messages", "expected a list of {role, content} maps")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise OptionError("messages", f"message {i} is not a map")
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not role:
            raise OptionError("messages", f"message {i} has no role")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            parts = []
            for j, block in enumerate(content):
                if isinstance(block, str):
                    parts.append(block)
                elif isinstance(block, Mapping) and block.get("type") == "text" and isinstance(block.get("text"), str):
                    parts.append(block["text"])
                else:
                    raise OptionError("messages", f"message {i} block {j}: only text content is supported")
            text = "\n".join(parts)
        else:
            raise OptionError("messages", f"message {i}: content must be a string or a list of text blocks")
        if "\x00" in text or "\x00" in role:
            raise OptionError("messages", f"message {i}: NUL byte in text")
        out.append((role, text))
    return out


class Context(Handle):
    """An inference context: KV memory for up to n_seq_max sequences."""

    _kind = "context"

    def __init__(self, model: Model, **options: Any) -> None:
        super().__init__()
        ffi, lib = native()
        parsed = opt.parse_context_options(options)
        self.model = model
        params = ffi.new("la_context_params*")
        check(lib.la_context_default_params(params))
        for name in ("n_ctx", "n_batch", "n_ubatch", "n_seq_max", "n_threads", "n_threads_batch", "embeddings",
                     "offload_kqv", "kv_unified", "flash_attn", "type_k", "type_v", "pooling"):
            setattr(params, name, getattr(parsed, name))
        out = ffi.new("la_context**")
        check(lib.la_context_new(model._ptr(), params, out))
        self._h = ffi.gc(out[0], lib.la_context_drop)
        self.options = parsed
        self.n_vocab = model.info.n_vocab
        self.info = self._read_info()
        self._adapters: list[tuple[Adapter, float]] = []

    def _native_close(self, ptr: Any) -> int:
        return native()[1].la_context_close(ptr)

    def _read_info(self) -> ContextInfo:
        ffi, lib = native()
        info = ffi.new("la_context_info*")
        check(lib.la_context_info_get(self._ptr(), info))
        return ContextInfo(info.n_ctx, info.n_ctx_seq, info.n_batch, info.n_ubatch, info.n_seq_max, info.n_threads,
                           info.n_threads_batch, info.pooling, bool(info.embeddings))

    # -------------------------------------------------------- sequences

    def seq_len(self, seq: int = 0) -> int:
        """Number of positions held for `seq` (next position to write)."""
        ffi, lib = native()
        out = ffi.new("int32_t*")
        check(lib.la_seq_pos_max(self._ptr(), seq, out))
        return out[0] + 1

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> None:
        """Drop positions [p0, p1) of `seq` (-1 = open end); forgets its pending logits."""
        check(native()[1].la_seq_rm(self._ptr(), seq, p0, p1))

    def seq_clear(self, seq: int = 0) -> None:
        self.seq_rm(seq, -1, -1)

    # -------------------------------------------------------- bounded decodes

    def set_decode_budget(self, budget_ms: int) -> None:
        """Every later decode ends with ``decode_timeout`` past ``budget_ms`` (0: unbounded)."""
        check(native()[1].la_set_decode_budget(self._ptr(), int(budget_ms)))

    def abort(self, on: bool = True) -> None:
        """End the decode in flight (or the next one) with ``aborted``; safe from any thread."""
        check(native()[1].la_abort(self._ptr(), bool(on)))

    def reset(self) -> None:
        """Clear every sequence's KV and pending logits (after a stopped decode); the weights stay."""
        check(native()[1].la_reset(self._ptr()))

    def debug_hold_decode(self, ms: int) -> None:
        """Test hook: the next decode waits up to ``ms`` at its first check, as a slow graph would."""
        check(native()[1].la_debug_hold_decode(self._ptr(), int(ms)))

    def has_logits(self, seq: int = 0) -> bool:
        ffi, lib = native()
        out = ffi.new("bool*")
        check(lib.la_seq_has_logits(self._ptr(), seq, out))
        return bool(out[0])

    def prefill(self, seq: int, tokens: Sequence[int]) -> None:
        """Append tokens to `seq` and leave the last one's logits pending: Prefill steps of n_batch tokens.

        All or nothing: a prompt that cannot fit is refused before any decode,
        and when a later slice fails the slices already decoded are removed
        again, so `seq` is as it was before the call.
        """
        tokens = list(tokens)
        before = self.seq_len(seq)
        if before + len(tokens) > self.info.n_ctx_seq:
            raise error_for(native()[1].LA_E_CONTEXT_OVERFLOW, f"{before} + {len(tokens)} > {self.info.n_ctx_seq}")
        chunk = self.info.n_batch
        for start in range(0, max(1, len(tokens)), chunk):  # an empty prompt is one row the shim refuses
            try:
                self.step([Prefill(seq, tokens[start:start + chunk])])
            except LlamaError:
                if start:
                    self.seq_rm(seq, before, -1)
                raise

    def step(self, rows: Sequence[Prefill | Decode]) -> list[StepResult]:
        """One llama_decode over many sequences: prefill slices and decode rows together."""
        ffi, lib = native()
        n = len(rows)
        if n == 0:
            return []
        c_rows = ffi.new("la_step_row[]", n)
        keep = []
        for i, row in enumerate(rows):
            c_rows[i].seq = row.seq
            if isinstance(row, Prefill):
                arr = ffi.new("int32_t[]", list(row.tokens) or [0])
                keep.append(arr)
                c_rows[i].kind = 0
                c_rows[i].tokens = arr
                c_rows[i].n_tokens = len(row.tokens)
                c_rows[i].sampler = ffi.NULL
            elif isinstance(row, Decode):
                c_rows[i].kind = 1
                c_rows[i].tokens = ffi.NULL
                c_rows[i].n_tokens = 0
                c_rows[i].sampler = row.sampler._ptr()
            else:
                raise OptionError("rows", f"row {i} is neither Prefill nor Decode")
        res = ffi.new("la_step_result[]", n)
        check(lib.la_step(self._ptr(), c_rows, n, res))
        return [StepResult(r.seq, r.token if r.kind == 1 else None, bool(r.eog)) for r in res]

    def sample(self, seq: int, sampler: Sampler) -> StepResult:
        """Sample the next token of `seq` from its pending logits without decoding it.

        The token is known at once (time to first token after a cache restore is
        just this call); append it later with a Prefill row or prefill().
        """
        ffi, lib = native()
        tok = ffi.new("int32_t*")
        eog = ffi.new("bool*")
        check(lib.la_sample(self._ptr(), seq, sampler._ptr(), tok, eog))
        return StepResult(seq, tok[0], bool(eog[0]))

    def generate(self, seq: int, prompt: Sequence[int], sampler: Sampler, max_tokens: int) -> list[int]:
        """Prefill `prompt` (may be empty if logits are pending) and sample up to max_tokens; excludes EOG."""
        if prompt:
            self.prefill(seq, prompt)
        out: list[int] = []
        for _ in range(max_tokens):
            (r,) = self.step([Decode(seq, sampler)])
            if r.eog:
                break
            out.append(r.token)  # type: ignore[arg-type]
        return out

    # -------------------------------------------------------- logits and state

    def get_logits(self, seq: int = 0) -> bytes:
        """float32 logits of the last decoded position of `seq`, as raw bytes."""
        ffi, lib = native()
        buf = bytearray(4 * self.n_vocab)
        n = ffi.new("int32_t*")
        check(lib.la_get_logits(self._ptr(), seq, ffi.from_buffer("float[]", buf), self.n_vocab, n))
        return bytes(buf)

    def set_logits(self, seq: int, logits: bytes | bytearray | memoryview) -> None:
        """Make `logits` the pending logits of `seq` (e.g. restored from a cache row)."""
        ffi, lib = native()
        if len(logits) != 4 * self.n_vocab:
            raise OptionError("logits", f"expected {4 * self.n_vocab} bytes, got {len(logits)}")
        check(lib.la_set_logits(self._ptr(), seq, ffi.from_buffer("float[]", logits), self.n_vocab))

    def kv_size(self, seq: int = 0) -> int:
        ffi, lib = native()
        out = ffi.new("size_t*")
        check(lib.la_kv_size(self._ptr(), seq, out))
        return int(out[0])

    def kv_pack(self, seq: int = 0) -> bytearray:
        """The llama.cpp state of one sequence as bytes (restorable with kv_unpack)."""
        ffi, lib = native()
        n = ffi.new("size_t*")
        size = self.kv_size(seq)
        while True:
            buf = bytearray(size)
            rc = lib.la_kv_pack(self._ptr(), seq, ffi.from_buffer("uint8_t[]", buf), size, n)
            if rc == lib.LA_E_BUFFER_TOO_SMALL:
                size = int(n[0])
                continue
            check(rc)
            del buf[int(n[0]):]
            return buf

    def kv_unpack(self, seq: int, blob: bytes | bytearray | memoryview) -> None:
        """Replace `seq` with a packed state; a blob of another model or layout is an error."""
        ffi, lib = native()
        if len(blob) == 0:
            raise OptionError("blob", "empty state blob")
        check(lib.la_kv_unpack(self._ptr(), seq, ffi.from_buffer("uint8_t[]", blob), len(blob)))

    # -------------------------------------------------------- other uses

    def embed(self, tokens: Sequence[int], seq: int = 0) -> list[float]:
        """Pooled embedding of `tokens` (last-token embedding when the model has no pooling)."""
        ffi, lib = native()
        dim = self.model.info.n_embd
        arr = ffi.new("int32_t[]", list(tokens) or [0])
        out = ffi.new("float[]", dim)
        n = ffi.new("int32_t*")
        check(lib.la_embed(self._ptr(), seq, arr, len(tokens), out, dim, n))
        return list(ffi.unpack(out, n[0]))

    def forward_argmax(self, seq: int, tokens: Sequence[int]) -> list[int]:
        """Append tokens and return the argmax next-token id after each one (speculative verify)."""
        ffi, lib = native()
        arr = ffi.new("int32_t[]", list(tokens) or [0])
        out = ffi.new("int32_t[]", max(1, len(tokens)))
        check(lib.la_forward_argmax(self._ptr(), seq, arr, len(tokens), out))
        return list(ffi.unpack(out, len(tokens)))

    def set_adapters(self, adapters: Sequence[tuple[Adapter, float]]) -> None:
        """Apply exactly these LoRA adapters with these scales (empty: none)."""
        ffi, lib = native()
        for a, s in adapters:
            if not isinstance(a, Adapter):
                raise OptionError("adapters", "expected (Adapter, scale) pairs")
            if isinstance(s, bool) or not isinstance(s, (int, float)):
                raise OptionError("adapters", f"scale must be a number, got {s!r}")
        ptrs = ffi.new("la_adapter*[]", [a._ptr() for a, _ in adapters] or [ffi.NULL])
        scales = ffi.new("float[]", [float(s) for _, s in adapters] or [0.0])
        check(lib.la_set_adapters(self._ptr(), ptrs, scales, len(adapters)))
        self._adapters = list(adapters)

    def set_threads(self, n_threads: int, n_threads_batch: int | None = None) -> None:
        check(native()[1].la_set_threads(self._ptr(), n_threads, n_threads_batch or n_threads))


class Sampler(Handle):
    """A per-request sampler chain (see SamplerOptions for the order)."""

    _kind = "sampler"

    def __init__(self, model: Model, **options: Any) -> None:
        super().__init__()
        ffi, lib = native()
        parsed = opt.parse_sampler_options(options)
        self.model = model
        self.options = parsed
        p = ffi.new("la_sampler_params*")
        p.temperature = parsed.temperature
        p.top_k = parsed.top_k
        p.top_p = parsed.top_p
        p.min_p = parsed.min_p
        p.repeat_penalty = parsed.repetition_penalty
        p.repeat_last_n = parsed.repeat_last_n
        p.seed = parsed.seed
        grammar = ffi.new("char[]", parsed.grammar.encode()) if parsed.grammar else ffi.NULL
        root = ffi.new("char[]", parsed.grammar_root.encode())
        p.grammar = grammar
        p.grammar_root = root
        out = ffi.new("la_sampler**")
        check(lib.la_sampler_new(model._ptr(), p, out))
        self._h = ffi.gc(out[0], lib.la_sampler_drop)

    def _native_close(self, ptr: Any) -> int:
        return native()[1].la_sampler_close(ptr)

    def reset(self) -> None:
        check(native()[1].la_sampler_reset(self._ptr()))

    def accept(self, token: int) -> None:
        """Feed a token the sampler did not pick (e.g. a forced one) into its history."""
        check(native()[1].la_sampler_accept(self._ptr(), token))


class Adapter(Handle):
    """A LoRA adapter loaded against one model."""

    _kind = "adapter"

    def __init__(self, model: Model, path: str | os.PathLike[str]) -> None:
        super().__init__()
        ffi, lib = native()
        self.model = model
        self.path = Path(path)
        raw = path_bytes(self.path)
        out = ffi.new("la_adapter**")
        check(lib.la_adapter_load(model._ptr(), raw, out))
        self._h = ffi.gc(out[0], lib.la_adapter_drop)
        self._sha256: bytes | None = None

    def _native_close(self, ptr: Any) -> int:
        return native()[1].la_adapter_close(ptr)

    @property
    def sha256(self) -> bytes:
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return self._sha256
