"""Typed errors for the native binding.

Every native call returns a status code; this module turns a code into an
exception whose `reason` is a short machine-readable string (the same strings
travel in `{"error": reason}` replies from actors), so callers can branch on
the reason without parsing messages.
"""

from __future__ import annotations


class LlamaError(Exception):
    """Base of every error raised by the binding; `reason` is machine-readable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class OptionError(LlamaError, ValueError):
    """An option name or value was rejected before anything native ran."""

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        super().__init__("bad_option", f"{key}: {detail}")


class ReleasedError(LlamaError):
    """The handle (or the model under it) was closed."""


class LoadError(LlamaError):
    """The model or adapter file could not be loaded."""


class CapacityError(LlamaError):
    """The request does not fit: context, batch or KV slots are exhausted."""


class StateError(LlamaError):
    """The call is not valid in the sequence's current state (e.g. no logits yet)."""


class InvalidInputError(LlamaError, ValueError):
    """An argument was rejected by the native layer (token id, sequence id, grammar...)."""


class NativeFailure(LlamaError):
    """llama.cpp itself failed (a C++ exception or a failed decode)."""


# status code -> (reason, exception class); must match la_status in csrc/la_shim.h
STATUS: dict[int, tuple[str, type[LlamaError]]] = {
    1: ("exception", NativeFailure),
    2: ("released", ReleasedError),
    3: ("bad_arg", InvalidInputError),
    4: ("malformed_gguf", LoadError),
    5: ("load_failed", LoadError),
    6: ("context_failed", NativeFailure),
    7: ("context_overflow", CapacityError),
    8: ("batch_overflow", CapacityError),
    9: ("no_logits", StateError),
    10: ("bad_token", InvalidInputError),
    11: ("bad_seq", InvalidInputError),
    12: ("decode_failed", NativeFailure),
    13: ("kv_full", CapacityError),
    14: ("bad_grammar", InvalidInputError),
    15: ("buffer_too_small", NativeFailure),
    16: ("unpack_failed", InvalidInputError),
    17: ("template_failed", InvalidInputError),
    18: ("no_template", StateError),
    19: ("not_embeddings", StateError),
    20: ("adapter_failed", LoadError),
    21: ("no_gpu", StateError),
    22: ("no_memory", NativeFailure),
    23: ("sampler_failed", NativeFailure),
    24: ("not_found", LoadError),
}


def error_for(code: int, detail: str = "") -> LlamaError:
    reason, cls = STATUS.get(code, (f"status_{code}", NativeFailure))
    return cls(reason, detail)
