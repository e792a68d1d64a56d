"""Validation of model, context and sampler options: pure functions.

Options arrive as plain mappings (from keyword arguments, a TOML file or an
actor message). They are checked here, completely, before any native call, so
a typo or a bad value is reported with the offending key and nothing is loaded.
The result is a frozen dataclass the binding copies into the C structs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.model.errors import OptionError

SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}
FLASH_ATTN = {"auto": -1, False: 0, True: 1, "false": 0, "true": 1, "off": 0, "on": 1}
# ggml_type ids of the KV cache element types llama.cpp accepts for K and V.
KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}
POOLING = {"unspecified": -1, "none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}
# llama_load_mode values
LOAD_NONE, LOAD_MMAP, LOAD_MLOCK, LOAD_MMAP_MLOCK = 0, 1, 2, 3


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _unknown(opts: Mapping[str, Any], known: set[str], what: str) -> None:
    for key in opts:
        if key not in known:
            raise OptionError(str(key), f"unknown {what} option (known: {', '.join(sorted(known))})")


def _int(opts: Mapping[str, Any], key: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
    v = opts.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise OptionError(key, f"expected an integer, got {v!r}")
    if lo is not None and v < lo:
        raise OptionError(key, f"must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise OptionError(key, f"must be <= {hi}, got {v}")
    return v


def _float(opts: Mapping[str, Any], key: str, default: float, lo: float | None = None,
           hi: float | None = None) -> float:
    v = opts.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise OptionError(key, f"expected a finite number, got {v!r}")
    if lo is not None and v < lo:
        raise OptionError(key, f"must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise OptionError(key, f"must be <= {hi}, got {v}")
    return float(v)


INT32_MAX = 2**31 - 1


def _text(opts: Mapping[str, Any], key: str, default: str | None) -> str | None:
    """A string C can take: valid UTF-8 (no lone surrogates), no NUL bytes."""
    v = opts.get(key, default)
    if v is None:
        return None
    if not isinstance(v, str) or "\x00" in v:
        raise OptionError(key, f"expected text without NUL bytes, got {type(v).__name__}")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise OptionError(key, "not valid Unicode text (a lone surrogate?)") from None
    return v


def _bool(opts: Mapping[str, Any], key: str, default: bool) -> bool:
    v = opts.get(key, default)
    if not isinstance(v, bool):
        raise OptionError(key, f"expected true or false, got {v!r}")
    return v


def _choice(opts: Mapping[str, Any], key: str, default: Any, table: Mapping[Any, int]) -> int:
    v = opts.get(key, default)
    try:
        return table[v]
    except (KeyError, TypeError):
        names = ", ".join(sorted({str(k).lower() for k in table}))
        raise OptionError(key, f"expected one of {names}, got {v!r}") from None


# ------------------------------------------------------------------ model

MODEL_KEYS = {"n_gpu_layers", "main_gpu", "split_mode", "tensor_split", "use_mmap", "use_mlock", "vocab_only"}


@dataclass(frozen=True)
class ModelOptions:
    n_gpu_layers: int = -1
    main_gpu: int = 0
    split_mode: int = SPLIT_MODES["layer"]
    tensor_split: tuple[float, ...] = ()
    load_mode: int = -1
    vocab_only: bool = False


def parse_model_options(opts: Mapping[str, Any], max_devices: int, default_load_mode: int = -1,
                        default_gpu_layers: int = -1) -> ModelOptions:
    """Validate model options; `max_devices` bounds tensor_split (llama_max_devices())."""
    _unknown(opts, MODEL_KEYS, "model")
    split = opts.get("tensor_split", ())
    if not isinstance(split, (list, tuple)):
        raise OptionError("tensor_split", f"expected a list of numbers, got {split!r}")
    if len(split) > max_devices:
        raise OptionError("tensor_split", f"at most {max_devices} entries (llama_max_devices), got {len(split)}")
    values: list[float] = []
    for i, x in enumerate(split):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
            raise OptionError("tensor_split", f"entry {i} must be a non-negative number, got {x!r}")
        values.append(float(x))
    # llama.cpp folds mmap/mlock into one load mode; an option not given keeps
    # llama.cpp's own default for that half (auto counts as mmap on).
    if "use_mmap" in opts or "use_mlock" in opts:
        default_mmap = default_load_mode in (-1, LOAD_MMAP, LOAD_MMAP_MLOCK)
        default_mlock = default_load_mode in (LOAD_MLOCK, LOAD_MMAP_MLOCK)
        mmap = _bool(opts, "use_mmap", default_mmap)
        mlock = _bool(opts, "use_mlock", default_mlock)
        load_mode = {(False, False): LOAD_NONE, (True, False): LOAD_MMAP, (False, True): LOAD_MLOCK,
                     (True, True): LOAD_MMAP_MLOCK}[(mmap, mlock)]
    else:
        load_mode = default_load_mode
    return ModelOptions(
        n_gpu_layers=_int(opts, "n_gpu_layers", default_gpu_layers, lo=-1, hi=INT32_MAX),
        main_gpu=_int(opts, "main_gpu", 0, lo=0, hi=max(0, max_devices - 1)),
        split_mode=_choice(opts, "split_mode", "layer", SPLIT_MODES),
        tensor_split=tuple(values),
        load_mode=load_mode,
        vocab_only=_bool(opts, "vocab_only", False),
    )


# ------------------------------------------------------------------ context

CONTEXT_KEYS = {"n_ctx", "n_batch", "n_ubatch", "n_seq_max", "n_threads", "n_threads_batch", "embeddings",
                "offload_kqv", "flash_attn", "type_k", "type_v", "pooling", "kv_unified"}


@dataclass(frozen=True)
class ContextOptions:
    n_ctx: int = 4096
    n_batch: int = 512
    n_ubatch: int = 512
    n_seq_max: int = 1
    n_threads: int = field(default_factory=default_threads)
    n_threads_batch: int = field(default_factory=default_threads)
    embeddings: bool = False
    offload_kqv: bool = True
    kv_unified: bool = False
    flash_attn: int = -1
    type_k: int = KV_TYPES["f16"]
    type_v: int = KV_TYPES["f16"]
    pooling: int = -1

    def layout(self) -> dict[str, Any]:
        """The fields that change the byte layout of a saved sequence state.

        A cache row packed under one layout cannot be restored under another
        (llama.cpp checks K/V types and V transposition, which flash attention
        decides), so these go into the cache key's context hash.
        """
        return {"type_k": self.type_k, "type_v": self.type_v, "flash_attn": self.flash_attn}


def parse_context_options(opts: Mapping[str, Any]) -> ContextOptions:
    _unknown(opts, CONTEXT_KEYS, "context")
    threads = default_threads()
    n_batch = _int(opts, "n_batch", 512, lo=1, hi=1 << 20)
    n_ubatch = _int(opts, "n_ubatch", min(512, n_batch), lo=1, hi=1 << 20)
    if n_ubatch > n_batch:
        raise OptionError("n_ubatch", f"must be <= n_batch ({n_batch}), got {n_ubatch}")
    n_threads = _int(opts, "n_threads", threads, lo=1, hi=1024)
    return ContextOptions(
        n_ctx=_int(opts, "n_ctx", 4096, lo=0, hi=1 << 24),
        n_batch=n_batch,
        n_ubatch=n_ubatch,
        n_seq_max=_int(opts, "n_seq_max", 1, lo=1, hi=256),
        n_threads=n_threads,
        n_threads_batch=_int(opts, "n_threads_batch", n_threads, lo=1, hi=1024),
        embeddings=_bool(opts, "embeddings", False),
        offload_kqv=_bool(opts, "offload_kqv", True),
        kv_unified=_bool(opts, "kv_unified", False),
        flash_attn=_choice(opts, "flash_attn", "auto", FLASH_ATTN),
        type_k=_choice(opts, "type_k", "f16", KV_TYPES),
        type_v=_choice(opts, "type_v", "f16", KV_TYPES),
        pooling=_choice(opts, "pooling", "unspecified", POOLING),
    )


# ------------------------------------------------------------------ sampler

SAMPLER_KEYS = {"temperature", "top_k", "top_p", "min_p", "repetition_penalty", "repeat_last_n", "seed",
                "grammar", "grammar_root", "logit_bias"}
MAX_LOGIT_BIAS = 1024  # entries; each bias within +-100, as the OpenAI API bounds it


@dataclass(frozen=True)
class SamplerOptions:
    """Chain order: logit bias -> grammar -> repetition penalty -> top_k -> top_p -> min_p -> temperature +
    seeded dist.

    temperature <= 0 means greedy (the filters are then irrelevant and skipped).  ``logit_bias`` adds
    to given tokens' logits first (-100 bans a token, +100 all but forces it); token ids are checked
    against the vocabulary where the sampler is made.
    """

    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repetition_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int = 0
    grammar: str | None = None
    grammar_root: str = "root"
    logit_bias: tuple[tuple[int, float], ...] = ()


def parse_logit_bias(v: Any) -> tuple[tuple[int, float], ...]:
    """``{token_id: bias}`` (ids as ints or decimal strings, as JSON carries them) -> sorted pairs (pure)."""
    if v is None:
        return ()
    if not isinstance(v, Mapping):
        raise OptionError("logit_bias", f"expected a map of token id to bias, got {type(v).__name__}")
    if len(v) > MAX_LOGIT_BIAS:
        raise OptionError("logit_bias", f"at most {MAX_LOGIT_BIAS} entries, got {len(v)}")
    out: dict[int, float] = {}
    for k, b in v.items():
        tok = k if isinstance(k, int) and not isinstance(k, bool) else None
        if isinstance(k, str) and k.strip().isdigit():
            tok = int(k)
        if tok is None or not 0 <= tok <= INT32_MAX:
            raise OptionError("logit_bias", f"keys are token ids, got {k!r}")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or not -100 <= b <= 100:
            raise OptionError("logit_bias", f"bias for token {tok}: expected a number in -100..100, got {b!r}")
        out[tok] = float(b)
    return tuple(sorted(out.items()))


def parse_sampler_options(opts: Mapping[str, Any]) -> SamplerOptions:
    _unknown(opts, SAMPLER_KEYS, "sampler")
    grammar = _text(opts, "grammar", None)
    root = _text(opts, "grammar_root", "root")
    if not root:
        raise OptionError("grammar_root", f"expected a rule name, got {root!r}")
    return SamplerOptions(
        temperature=_float(opts, "temperature", 0.0, lo=0.0, hi=100.0),
        top_k=_int(opts, "top_k", 40, lo=0, hi=INT32_MAX),
        top_p=_float(opts, "top_p", 0.95, lo=0.0, hi=1.0),
        min_p=_float(opts, "min_p", 0.05, lo=0.0, hi=1.0),
        repetition_penalty=_float(opts, "repetition_penalty", 1.0, lo=0.01, hi=100.0),
        repeat_last_n=_int(opts, "repeat_last_n", 64, lo=-1, hi=INT32_MAX),
        seed=_int(opts, "seed", 0, lo=0, hi=2**32 - 1),
        grammar=grammar or None,
        grammar_root=root,
        logit_bias=parse_logit_bias(opts.get("logit_bias")),
    )
