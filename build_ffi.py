"""cffi build script for the native shim (out-of-line API mode).

Run by setuptools (`cffi_modules` in setup.py) during `pip install .` or
`pip install -e .`: it first makes sure vendor/llama.cpp is fetched and the
static llama.cpp libraries are built (both steps are cached and incremental),
then compiles csrc/la_shim.cpp together with cffi's glue into
actors.model._native and links the static archives into it, so the installed
package needs no shared llama.cpp library at run time.

API mode (not ABI mode) because cffi then releases the GIL around every C call,
so a long prefill in one thread never stalls the Python threads beside it.

Flavour: with LLAMA_ACTORS_SANITIZE=1, ``python build_ffi.py`` builds the
AddressSanitizer + UBSan flavour instead: llama.cpp from build/llama-asan (see
scripts/build_llama.py), the shim compiled with the same sanitizers, and the
extension written to build/asan/native/ (never into actors/model/, so the normal
build is untouched). scripts/asan_site/sitecustomize.py loads it in place of the
normal one when LLAMA_ACTORS_NATIVE_SO names it; ``./run.sh test-asan`` does all this.
"""

from __future__ import annotations

import os
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


SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
ASAN_OUT = ROOT / "build" / "asan"


def make_builder(absolute_sources: bool = False, flavour: str = "release") -> FFI:
    """The cffi builder of one flavour; pip (``cffi_modules``) always gets the release one."""
    fetch_llama.main()
    asan = build_llama.flavour(flavour) == "asan"
    bdir = build_llama.build(["llama", "ggml"], flavour_name=flavour)
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
        extra_compile_args=["-std=c++17", "-fvisibility=hidden",
                            *(["-O1", "-g", *SANITIZE_FLAGS] if asan else ["-O2"])],
        extra_objects=[str(p) for p in libs],
        libraries=link,
        extra_link_args=["-Wl,--exclude-libs,ALL", *(SANITIZE_FLAGS if asan else [])],
    )
    return ffi


def build_asan() -> Path:
    """Build the sanitizer flavour of the extension into build/asan/native/ and return its path."""
    work = ASAN_OUT / "cffi"
    make_builder(absolute_sources=True, flavour="asan").compile(tmpdir=str(work), verbose=True)
    built = sorted(work.rglob("_native*.so"), key=lambda p: p.stat().st_mtime)
    if not built:
        raise SystemExit(f"[ffi] no extension was built in {work}")
    target = ASAN_OUT / "native" / "_native.so"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".so.tmp")
    tmp.write_bytes(built[-1].read_bytes())
    os.replace(tmp, target)
    print(f"[ffi] installed the asan flavour at {target}", file=sys.stderr)
    return target


if __name__ == "__main__" and build_llama.flavour() == "asan":
    build_asan()
    raise SystemExit(0)

ffibuilder = make_builder()

if __name__ == "__main__":
    # Build in place for development: python build_ffi.py
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
