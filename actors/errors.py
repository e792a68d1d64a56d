"""The one error shape of the runtime: a machine-readable ``reason`` and a human ``detail``.

Actors answer a failed request with an :class:`ErrorReply` (``req_id``,
``reason``, ``detail``), whichever actor it is (model, supervisor, cache).
Python code raises a :class:`ReasonError` subclass carrying the same two
fields, so a client, the CLI and an HTTP front end branch on ``reason`` alone
and show ``detail`` to a person, without parsing messages.

This module imports nothing from the rest of the package, so every layer
(native binding, cache, actors, client, CLI) can use it.
"""

from __future__ import annotations

from dataclasses import dataclass


class ReasonError(Exception):
    """Base of every failure with a machine-readable ``reason`` and a human ``detail``.

    ``str()`` is ``"<reason>: <detail>"`` (just the reason when there is no detail).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ConfigError(ReasonError, ValueError):
    """A configuration value was rejected; ``key`` is its path (``models[1].context.n_ctx``).

    ``reason`` is ``bad_config``; ``str()`` is one line, ``<key>: <text>``,
    meant to be shown to a person as is. Raised by the TOML loader
    (``actors.config``) and by the cache's own checks (``actors.cache.config``).
    """

    def __init__(self, key: str, text: str) -> None:
        line = f"{key}: {text}" if key else text
        super().__init__("bad_config", line)
        self.args = (line,)
        self.key = key
        self.text = text


@dataclass(frozen=True)
class ErrorReply:
    """An actor's answer to a request it could not serve.

    ``reason`` is machine-readable. The model actor and its supervisor use,
    among others, ``model_crashed``, ``no_such_model``, ``model_failed``,
    ``model_stopping``, ``model_unloaded``, ``model_exists``, ``not_ready``,
    ``busy``, ``sticky_busy``, ``no_session``, ``session_pool_full``, ``seq_capacity`` (the pending queue
    is full), ``transcript_mismatch`` (``expect_committed``), ``decode_timeout`` / ``aborted`` / ``context_reset``
    (a decode stopped by its budget or ``abort``, and the others its reset failed),
    ``context_overflow``, ``batch_overflow``, ``bad_token``, ``bad_option``,
    ``bad_request``, ``debug_disabled``, ``embeddings_disabled``, the adapter
    reasons (``no_such_adapter``, ``adapter_exists``, ``no_such_file``), the
    native binding's reasons (``actors.model.errors.STATUS``) and
    ``internal_error``; the cache uses ``not_ready``, ``bad_request``,
    ``bad_option`` and ``bad_config``. ``detail`` says what happened, for a person.
    """

    req_id: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason
