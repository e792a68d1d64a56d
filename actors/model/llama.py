"""Python objects over the native shim: Model, Context, Sampler, Adapter.

Each object owns one native handle. `close()` releases the llama.cpp resource
at once (deferred natively while children still need it); the handle itself is
freed by the garbage collector, so a closed object answers ReleasedError rather
than touching freed memory. Children keep a reference to their model so the
model's handle outlives them.

Calls drop the GIL (cffi API mode), so a prefill in one thread does not stall
others; each handle has its own native mutex. Loading the shim, status checks
and the handle base live in ``actors.model.native``; ``Context`` and its step
types (``Prefill``, ``Decode``, ``StepResult``) in ``actors.model.context``,
re-exported here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.model import options as opt
from actors.model.context import Context, ContextInfo, Decode, Prefill, StepResult
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
from actors.model.prefix_tokens import SpecialToken, Vocab

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

    def vocab(self) -> Vocab:
        """What :class:`actors.model.prefix_tokens.PrefixTokenizer` needs to know of the tokenizer."""
        ffi, lib = native()
        kind = ffi.new("int32_t*")
        flags = [ffi.new("bool*") for _ in range(3)]
        check(lib.la_vocab_kind(self._ptr(), kind, *flags))
        n = ffi.new("int32_t*")
        rc = lib.la_vocab_specials(self._ptr(), ffi.NULL, ffi.NULL, 0, n)  # the count first
        if rc != lib.LA_E_BUFFER_TOO_SMALL:
            check(rc)
        ids, attrs = ffi.new("int32_t[]", max(1, n[0])), ffi.new("int32_t[]", max(1, n[0]))
        check(lib.la_vocab_specials(self._ptr(), ids, attrs, n[0], n))
        specials = []
        for i in range(n[0]):
            text_n = ffi.new("int32_t*")
            buf = ffi.new("char[]", 256)
            rc = lib.la_vocab_text(self._ptr(), ids[i], buf, 256, text_n)
            if rc == lib.LA_E_BUFFER_TOO_SMALL:
                buf = ffi.new("char[]", text_n[0])
                rc = lib.la_vocab_text(self._ptr(), ids[i], buf, text_n[0], text_n)
            check(rc)
            specials.append(SpecialToken(int(ids[i]), ffi.unpack(buf, text_n[0]), int(attrs[i])))
        return Vocab(int(kind[0]), bool(flags[0][0]), bool(flags[1][0]), bool(flags[2][0]), tuple(specials))

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
        bias = parsed.logit_bias
        bad = [t for t, _ in bias if t >= model.info.n_vocab]
        if bad:
            raise opt.OptionError("logit_bias", f"token {bad[0]} is not in the vocabulary (n_vocab "
                                                f"{model.info.n_vocab})")
        bias_tokens = ffi.new("int32_t[]", [t for t, _ in bias] or [0])
        bias_values = ffi.new("float[]", [b for _, b in bias] or [0.0])
        p.bias_tokens = bias_tokens
        p.bias_values = bias_values
        p.n_bias = len(bias)
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
