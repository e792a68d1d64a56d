"""A value that must never reach a log, a status dump or a traceback.

The thinking signing key travels from the configuration to every model
process inside actor messages; dataclass ``repr`` would print it wherever a
message is logged, so it is wrapped.
"""

from __future__ import annotations


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise TypeError("a Secret holds bytes")
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __getstate__(self) -> bytes:
        return self._value

    def __setstate__(self, state: bytes) -> None:
        self._value = state


def as_key(value: bytes | str | Secret | None) -> Secret | None:
    """Normalise a configured key: text is taken as UTF-8, empty means no key."""
    if value is None:
        return None
    if isinstance(value, Secret):
        return value if value.reveal() else None
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes):
        raise TypeError(f"thinking_key: expected bytes or text, got {type(value).__name__}")
    return Secret(value) if value else None
