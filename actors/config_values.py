"""Checks for single configuration values: pure functions, each raising ``ConfigError`` naming the key.

Kept apart from ``actors.config`` (which knows the tables and their keys) so
the rules for one value (an integer in range, a byte size like ``"512MiB"``,
a path relative to the file) read in one place.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from actors.errors import ConfigError

# Byte-size units: SI units are powers of 1000, IEC units and the one-letter
# shorthands (as in "512M") are powers of 1024.
_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
    "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")



def show_value(v: Any) -> str:
    """A value as the file would spell it: strings in double quotes, true/false, tables by name."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, Mapping):
        return "a table"
    if isinstance(v, (list, tuple)):
        return "an array"
    return str(v)


def as_table(v: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ConfigError(key, f"expected a table, got {show_value(v)}")
    for k in v:
        if not isinstance(k, str):
            raise ConfigError(key, f"keys must be strings, got {k!r}")
    return v


def check_keys(v: Mapping[str, Any], known: tuple[str, ...] | set[str], key: str) -> None:
    for k in v:
        if k not in known:
            where = f"{key}.{k}" if key else k
            raise ConfigError(where, f"unknown key (known: {', '.join(sorted(known))})")


def as_int(v: Any, key: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(key, f"expected an integer, got {show_value(v)}")
    if lo is not None and v < lo:
        raise ConfigError(key, f"must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ConfigError(key, f"must be <= {hi}, got {v}")
    return v


def as_number(v: Any, key: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise ConfigError(key, f"expected a number, got {show_value(v)}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ConfigError(key, f"must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise ConfigError(key, f"must be <= {hi}, got {v}")
    return float(v)


def as_bool(v: Any, key: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(key, f"expected true or false, got {show_value(v)}")
    return v


def as_str(v: Any, key: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str):
        raise ConfigError(key, f"expected a string, got {show_value(v)}")
    if choices is not None and v not in choices:
        raise ConfigError(key, f"expected one of {', '.join(choices)}, got {show_value(v)}")
    if not v or "\x00" in v:
        raise ConfigError(key, "must be a non-empty string without NUL")
    return v


def as_path(v: Any, key: str, base: Path | None) -> str:
    p = Path(os.path.expanduser(as_str(v, key)))
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p)


def parse_bytes(v: Any, key: str = "bytes") -> int:
    """A byte count: an integer, or a string such as ``"512MiB"``, ``"1.5 GB"``, ``"64k"``.

    SI units (kB, MB, GB, TB) are powers of 1000; IEC units (KiB, MiB, GiB, TiB)
    and the one-letter forms (k, M, G, T) are powers of 1024.  Case is ignored.
    """
    if isinstance(v, bool):
        raise ConfigError(key, f"expected a byte size, got {show_value(v)}")
    if isinstance(v, int):
        if v < 0:
            raise ConfigError(key, f"must be >= 0, got {v}")
        return v
    if isinstance(v, str):
        m = _SIZE_RE.match(v)
        unit = _UNITS.get(m.group(2).lower()) if m else None
        if m is not None and unit is not None:
            try:
                n = Decimal(m.group(1)) * unit
            except InvalidOperation:  # pragma: no cover - the regex admits only decimal digits
                n = None
            if n is not None and n == n.to_integral_value():
                return int(n)
            if n is not None:
                raise ConfigError(key, f"{show_value(v)} is not a whole number of bytes")
    raise ConfigError(key, f"expected a byte size (an integer or a string like \"512MiB\"), got {show_value(v)}")


__all__ = ["as_bool", "as_int", "as_number", "as_path", "as_str", "as_table", "check_keys", "parse_bytes", "show_value"]
