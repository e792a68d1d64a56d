"""Loaded at interpreter start under ``./run.sh test-asan``: use the sanitizer build of the extension.

Why a sitecustomize: the test runs start many interpreters (pytest, each actor system's serve
process and every actor forked from it, CLI subprocesses), and all of them must load the
AddressSanitizer + UBSan build of ``actors.model._native`` instead of the normal one, without a
line of the package knowing. The runner puts this folder on PYTHONPATH (which
``actors.supervisor.runtime`` passes on to the serve process) and names the built extension in
LLAMA_ACTORS_NATIVE_SO; a finder then answers the import of ``actors.model._native`` with that
file. Without LLAMA_ACTORS_NATIVE_SO this module does nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from typing import Any

_MODULE = "actors.model._native"


class _SanitizedNative(importlib.abc.MetaPathFinder):
    def __init__(self, path: str) -> None:
        self.path = path

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != _MODULE:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, self.path)
        return importlib.util.spec_from_file_location(fullname, self.path, loader=loader)


def _install() -> None:
    path = os.environ.get("LLAMA_ACTORS_NATIVE_SO")
    if not path:
        return
    if not os.path.isfile(path):
        raise SystemExit(f"LLAMA_ACTORS_NATIVE_SO={path}: no such file (build it: LLAMA_ACTORS_SANITIZE=1 "
                         "python build_ffi.py)")
    sys.meta_path.insert(0, _SanitizedNative(path))


_install()
