"""Typed errors for the native binding.

Every native call returns a status code; this module turns a code into an
exception whose `reason` is a short machine-readable string (the same strings
travel in `{"error": reason}` replies from actors), so callers can branch on
the reason without parsing messages.
"""

from __future__ import annotations

from enum import IntEnum

from actors.errors import ReasonError


class LlamaError(ReasonError):
    """Base of every error raised by the binding; `reason` is machine-readable."""


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


class DecodeStopped(LlamaError):
    """A decode was stopped part way (its budget ran out, or it was aborted): reset the context's KV."""


class Status(IntEnum):
    """The shim's la_status codes under the shim's own names (csrc/la_shim.h).

    tests/native/test_model_load.py checks this against the enum the compiled
    shim exports, so the two cannot drift apart. Code outside the binding (the
    stub backend) names a status through this enum, never by its number.
    """

    LA_OK = 0
    LA_E_EXCEPTION = 1
    LA_E_RELEASED = 2
    LA_E_BAD_ARG = 3
    LA_E_MALFORMED_GGUF = 4
    LA_E_LOAD_FAILED = 5
    LA_E_CONTEXT_FAILED = 6
    LA_E_CONTEXT_OVERFLOW = 7
    LA_E_BATCH_OVERFLOW = 8
    LA_E_NO_LOGITS = 9
    LA_E_BAD_TOKEN = 10
    LA_E_BAD_SEQ = 11
    LA_E_DECODE_FAILED = 12
    LA_E_KV_FULL = 13
    LA_E_GRAMMAR = 14
    LA_E_BUFFER_TOO_SMALL = 15
    LA_E_UNPACK_FAILED = 16
    LA_E_TEMPLATE = 17
    LA_E_NO_TEMPLATE = 18
    LA_E_NOT_EMBEDDINGS = 19
    LA_E_ADAPTER_FAILED = 20
    LA_E_NO_GPU = 21
    LA_E_NO_MEMORY = 22
    LA_E_SAMPLER_FAILED = 23
    LA_E_NOT_FOUND = 24
    LA_E_DECODE_TIMEOUT = 25
    LA_E_ABORTED = 26


# status -> (reason, exception class)
STATUS: dict[Status, tuple[str, type[LlamaError]]] = {
    Status.LA_E_EXCEPTION: ("exception", NativeFailure),
    Status.LA_E_RELEASED: ("released", ReleasedError),
    Status.LA_E_BAD_ARG: ("bad_arg", InvalidInputError),
    Status.LA_E_MALFORMED_GGUF: ("malformed_gguf", LoadError),
    Status.LA_E_LOAD_FAILED: ("load_failed", LoadError),
    Status.LA_E_CONTEXT_FAILED: ("context_failed", NativeFailure),
    Status.LA_E_CONTEXT_OVERFLOW: ("context_overflow", CapacityError),
    Status.LA_E_BATCH_OVERFLOW: ("batch_overflow", CapacityError),
    Status.LA_E_NO_LOGITS: ("no_logits", StateError),
    Status.LA_E_BAD_TOKEN: ("bad_token", InvalidInputError),
    Status.LA_E_BAD_SEQ: ("bad_seq", InvalidInputError),
    Status.LA_E_DECODE_FAILED: ("decode_failed", NativeFailure),
    Status.LA_E_KV_FULL: ("kv_full", CapacityError),
    Status.LA_E_GRAMMAR: ("bad_grammar", InvalidInputError),
    Status.LA_E_BUFFER_TOO_SMALL: ("buffer_too_small", NativeFailure),
    Status.LA_E_UNPACK_FAILED: ("unpack_failed", InvalidInputError),
    Status.LA_E_TEMPLATE: ("template_failed", InvalidInputError),
    Status.LA_E_NO_TEMPLATE: ("no_template", StateError),
    Status.LA_E_NOT_EMBEDDINGS: ("not_embeddings", StateError),
    Status.LA_E_ADAPTER_FAILED: ("adapter_failed", LoadError),
    Status.LA_E_NO_GPU: ("no_gpu", StateError),
    Status.LA_E_NO_MEMORY: ("no_memory", NativeFailure),
    Status.LA_E_SAMPLER_FAILED: ("sampler_failed", NativeFailure),
    Status.LA_E_NOT_FOUND: ("not_found", LoadError),
    Status.LA_E_DECODE_TIMEOUT: ("decode_timeout", DecodeStopped),
    Status.LA_E_ABORTED: ("aborted", DecodeStopped),
}


def error_for(code: int, detail: str = "") -> LlamaError:
    """The exception for a non-zero status (a Status member or the shim's raw int)."""
    try:
        reason, cls = STATUS[Status(code)]
    except (ValueError, KeyError):  # LA_OK or a code this table does not know
        reason, cls = f"status_{int(code)}", NativeFailure
    return cls(reason, detail)
