"""cffi build script for the native shim (out-of-line API mode).

Run by setuptools (`cffi_modules` in setup.py) during `pip install .` or
`pip install -e .`: it first makes sure vendor/llama.cpp is fetched and the
static llama.cpp libraries are built (both steps are cached and incremental),
then compiles csrc/la_shim.cpp together with cffi's glue into
actors.model._native and links the static archives into it, so the installed
package needs no shared llama.cpp library at run time.

API mode (not ABI mode) because cffi then releases the GIL around every C call,
so a long prefill in one thread never stalls the Python threads beside it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "scripts"))

import build_llama  # noqa: E402
import fetch_llama  # noqa: E402

HEADER = ROOT / "csrc" / "la_shim.h"


def cdef_text() -> str:
    text = HEADER.read_text()
    match = re.search(r"/\* CDEF BEGIN \*/(.*)/\* CDEF END \*/", text, re.S)
    if match is None:
        raise SystemExit("csrc/la_shim.h has no CDEF BEGIN/END block")
    return match.group(1)


def make_builder(absolute_sources: bool = False) -> FFI:
    fetch_llama.main()
    bdir = build_llama.build(["llama", "ggml"])
    libs = build_llama.static_libs(bdir)
    vendor = build_llama.VENDOR
    cmake_cache = (bdir / "CMakeCache.txt").read_text()
    link = ["stdc++", "m", "pthread", "dl"]
    if "GGML_OPENMP:BOOL=ON" in cmake_cache:
        link.append("gomp")
    if "GGML_CUDA:BOOL=ON" in cmake_cache:
        link += ["cudart", "cublas", "cublasLt", "cuda"]

    ffi = FFI()
    ffi.cdef(cdef_text())
    ffi.set_source(
        "actors.model._native",
        '#include "la_shim.h"',
        # setuptools insists on paths relative to setup.py; cffi's own compile() runs in a tmpdir
        sources=[str(ROOT / "csrc" / "la_shim.cpp") if absolute_sources else "csrc/la_shim.cpp"],
        source_extension=".cpp",
        include_dirs=[str(ROOT / "csrc"), str(vendor / "include"), str(vendor / "ggml" / "include")],
        extra_compile_args=["-std=c++17", "-O2", "-fvisibility=hidden"],
        extra_objects=[str(p) for p in libs],
        libraries=link,
        extra_link_args=["-Wl,--exclude-libs,ALL"],
    )
    return ffi


ffibuilder = make_builder()

if __name__ == "__main__":
    # Build in place for development: python build_ffi.py
    import os

    os.chdir(ROOT)
    make_builder(absolute_sources=True).compile(tmpdir=str(ROOT / "build" / "cffi"), verbose=True)
    built = sorted((ROOT / "build" / "cffi").rglob("_native*.so"))
    target = ROOT / "actors" / "model"
    for so in built:
        # Replace atomically: a running process keeps its mapped copy intact.
        tmp = target / (so.name + ".tmp")
        tmp.write_bytes(so.read_bytes())
        os.replace(tmp, target / so.name)
        for stale in target.glob("_native*.so"):
            if stale.name != so.name:
                stale.unlink()  # an older build under another ABI tag would shadow or confuse
        print(f"[ffi] installed {target / so.name}")
