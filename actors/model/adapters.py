"""LoRA adapters of one model: which are loaded, at what scale, and the queue of changes.

A change is applied only while no request is in flight (the engine calls
``apply_pending`` between requests and holds admissions while changes
wait), so every KV row is computed under one adapter set from start to
end.  The backend folds the active set into the model's effective
fingerprint, which names the cache namespace.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.errors import ReasonError
from actors.model import messages as mm
from actors.model.errors import LlamaError


class AdapterError(ReasonError):
    """A LoRA adapter command was refused (``no_such_adapter``, ``adapter_busy``, ...)."""


@dataclass
class AdapterEntry:
    adapter: Any
    path: str
    sha256: bytes
    scale: float

    def describe(self, adapter_id: str) -> dict[str, Any]:
        return {"adapter_id": adapter_id, "path": self.path, "sha256": self.sha256.hex(), "scale": self.scale}


def check_scale(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AdapterError("bad_option", f"scale: expected a finite number, got {value!r}")
    return float(value)


class AdapterSet:
    """``release_sessions`` is called before the set changes: sessions hold KV of the old set."""

    def __init__(self, backend: Any, release_sessions: Callable[[], None]) -> None:
        self.backend = backend
        self.release_sessions = release_sessions
        self.entries: dict[str, AdapterEntry] = {}
        self.waiting: deque[Any] = deque()

    def describe(self) -> list[dict[str, Any]]:
        return [e.describe(aid) for aid, e in self.entries.items()]

    def specs(self) -> tuple[tuple[str, str, float], ...]:
        """What a restarted model needs to rebuild this set: (adapter_id, path, scale)."""
        return tuple((aid, e.path, e.scale) for aid, e in self.entries.items())

    def apply(self, msg: Any) -> Any:
        """Apply one change message; returns the reply value or raises AdapterError / LlamaError."""
        if isinstance(msg, mm.LoadAdapter):
            return self._load(msg)
        entry = self.entries.get(msg.adapter_id)
        if entry is None:
            raise AdapterError("no_such_adapter", f"adapter {msg.adapter_id!r} is not loaded")
        if isinstance(msg, mm.SetAdapterScale):
            old, entry.scale = entry.scale, check_scale(msg.scale)
            try:
                self._reapply()
            except BaseException:
                entry.scale = old
                raise
            return entry.describe(msg.adapter_id)
        del self.entries[msg.adapter_id]
        self._reapply()
        self.backend.close_adapter(entry.adapter)
        return True

    def _load(self, msg: mm.LoadAdapter) -> dict[str, Any]:
        scale = check_scale(msg.scale)
        if not isinstance(msg.path, str) or not os.path.isfile(msg.path):
            raise AdapterError("no_such_file", f"adapter file {msg.path!r} does not exist")
        aid = msg.adapter_id or os.path.splitext(os.path.basename(msg.path))[0]
        if not isinstance(aid, str) or not aid:
            raise AdapterError("bad_option", "adapter_id: expected a non-empty string")
        if aid in self.entries:
            raise AdapterError("adapter_exists", f"adapter {aid!r} is already loaded")
        adapter = self.backend.load_adapter(msg.path)
        self.entries[aid] = AdapterEntry(adapter, msg.path, adapter.sha256, scale)
        try:
            self._reapply()
        except BaseException:
            self.backend.close_adapter(self.entries.pop(aid).adapter)
            raise
        return self.entries[aid].describe(aid)

    def _reapply(self) -> None:
        self.release_sessions()
        self.backend.set_adapters([(e.adapter, e.scale) for e in self.entries.values() if e.scale != 0.0])

    def close(self) -> None:
        for entry in self.entries.values():
            try:
                self.backend.close_adapter(entry.adapter)
            except (LlamaError, OSError):
                continue
        self.entries.clear()
