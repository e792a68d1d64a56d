"""The inference context: KV memory for a model's sequences, and the decode steps that fill it.

Its own module because this is the part the engine drives on every step (prefill
slices and decode rows, logits, packing and restoring a sequence's state), while
``actors.model.llama`` is loading a model and its text functions; the context's
step types live beside it.  ``actors.model.llama`` re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors.model import options as opt
from actors.model.errors import LlamaError, OptionError, error_for
from actors.model.native import Handle, check, native

if TYPE_CHECKING:
    from actors.model.llama import Adapter, Model, Sampler


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
        from actors.model.llama import Adapter  # actors.model.llama imports this module

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
