"""Configure and build static llama.cpp libraries into a cached build directory.

Why a script and not a bare cmake line: the CPU feature flags must be chosen for
the machine that installs us. GGML_NATIVE=ON is off limits because on some of our
hosts the CPU reports AMX tiles the hypervisor does not grant, and the native
build compiles AMX kernels that segfault at the first matmul. So we read the
CPU's flags ourselves, enable every x86 extension ggml can use that the CPU
reports, and never enable AMX.

Extra CMake arguments (GPU backends, e.g. "-DGGML_CUDA=ON") come from the
LLAMA_ACTORS_CMAKE_ARGS environment variable. The build directory defaults to
build/llama (override: LLAMA_ACTORS_BUILD_DIR); a rebuild only recompiles what
changed.

Flavours: LLAMA_ACTORS_SANITIZE=1 selects the "asan" flavour, llama.cpp and ggml
compiled with AddressSanitizer + UndefinedBehaviorSanitizer (-O1 -g, frame
pointers kept) into build/llama-asan, so a sanitizer build never overwrites the
release archives the normal extension links. It exists for the native safety net
(./run.sh test-asan), not for serving: it runs several times slower.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "vendor" / "llama.cpp"

# ggml option -> the /proc/cpuinfo flags that must all be present.
X86_FEATURES: dict[str, tuple[str, ...]] = {
    "GGML_SSE42": ("sse4_2",),
    "GGML_AVX": ("avx",),
    "GGML_AVX2": ("avx2",),
    "GGML_FMA": ("fma",),
    "GGML_F16C": ("f16c",),
    "GGML_BMI2": ("bmi2",),
    "GGML_AVX_VNNI": ("avx_vnni",),
    "GGML_AVX512": ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"),
    "GGML_AVX512_VBMI": ("avx512vbmi",),
    "GGML_AVX512_VNNI": ("avx512_vnni",),
    "GGML_AVX512_BF16": ("avx512_bf16",),
}
NEVER = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")


SANITIZE_ENV = "LLAMA_ACTORS_SANITIZE"


FLAVOURS = ("release", "asan")


def flavour(explicit: str | None = None) -> str:
    """``explicit`` when given, else "asan" when LLAMA_ACTORS_SANITIZE asks for the sanitizer build,
    else "release"."""
    if explicit is not None:
        if explicit not in FLAVOURS:
            raise SystemExit(f"[build] unknown flavour {explicit!r} (known: {', '.join(FLAVOURS)})")
        return explicit
    value = os.environ.get(SANITIZE_ENV, "").strip().lower()
    return "asan" if value not in ("", "0", "no", "off", "false") else "release"


def build_dir(flavour_name: str | None = None) -> Path:
    if flavour(flavour_name) == "asan":
        return ROOT / "build" / "llama-asan"  # never LLAMA_ACTORS_BUILD_DIR: that one is the release tree
    return Path(os.environ.get("LLAMA_ACTORS_BUILD_DIR", ROOT / "build" / "llama"))


def sanitize_args() -> list[str]:
    """CMake arguments of the asan flavour: llama.cpp's and ggml's own sanitizer switches
    (they add -fsanitize to compile and link), with debug info so a report names lines."""
    args = ["-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g -DNDEBUG",
            "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g -DNDEBUG"]
    for prefix in ("LLAMA", "GGML"):
        args += [f"-D{prefix}_SANITIZE_ADDRESS=ON", f"-D{prefix}_SANITIZE_UNDEFINED=ON"]
    return args


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def feature_options(flags: set[str], ceiling: str | None = None) -> dict[str, bool]:
    """Map CPU flags to ggml options. ceiling="avx2" caps the set (for comparisons)."""
    opts = {name: all(f in flags for f in need) for name, need in X86_FEATURES.items()}
    if ceiling == "avx2":
        for name in list(opts):
            if "AVX512" in name:
                opts[name] = False
    if opts["GGML_AVX512"] is False:
        for name in ("GGML_AVX512_VBMI", "GGML_AVX512_VNNI", "GGML_AVX512_BF16"):
            opts[name] = False
    for name in NEVER:
        opts[name] = False
    return opts


def cmake_args(ceiling: str | None = None, flavour_name: str | None = None) -> list[str]:
    args = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DGGML_NATIVE=OFF",
        "-DGGML_BACKEND_DL=OFF",
        "-DGGML_CPU_ALL_VARIANTS=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        # The server is configured (not built by default) so bench/ can build llama-server
        # from the same tree with the same flags; its web UI is neither built nor fetched.
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_BUILD_UI=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_BUILD_APP=OFF",
        # Tools are configured so bench/ can build llama-bench and llama-server on demand;
        # the default target list below never compiles them.
        "-DLLAMA_BUILD_TOOLS=ON",
        "-DLLAMA_BUILD_COMMON=ON",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DGGML_OPENMP=ON",
    ]
    if platform.machine() in ("x86_64", "AMD64"):
        for name, on in feature_options(cpu_flags(), ceiling).items():
            args.append(f"-D{name}={'ON' if on else 'OFF'}")
    if flavour(flavour_name) == "asan":
        args = [a for a in args if not a.startswith("-DCMAKE_BUILD_TYPE=")] + sanitize_args()
    args += shlex.split(os.environ.get("LLAMA_ACTORS_CMAKE_ARGS", ""))
    return args


def _tool_output() -> Any:
    """Where cmake's chatter goes: never stdout, because the bench scripts that build on demand
    print their JSON report there (a build inside one once broke the report)."""
    return subprocess.DEVNULL if os.environ.get("LLAMA_ACTORS_QUIET") else sys.stderr


def configure(bdir: Path, ceiling: str | None = None, flavour_name: str | None = None) -> None:
    args = cmake_args(ceiling, flavour_name)
    stamp = bdir / "llama-actors-cmake-args.json"
    if (bdir / "CMakeCache.txt").exists() and stamp.exists() and json.loads(stamp.read_text()) == args:
        return
    bdir.mkdir(parents=True, exist_ok=True)
    print(f"[build] cmake configure in {bdir}", file=sys.stderr, flush=True)
    flags = " ".join(a for a in args if a.startswith("-DGGML_") or "CMAKE_ARGS" in a)
    print(f"[build]   {flags}", file=sys.stderr, flush=True)
    subprocess.run(["cmake", "-S", str(VENDOR), "-B", str(bdir), *args], check=True, stdout=_tool_output())
    stamp.write_text(json.dumps(args))


def build(targets: list[str], bdir: Path | None = None, ceiling: str | None = None,
          flavour_name: str | None = None) -> Path:
    """Build ``targets`` of the ``flavour_name`` flavour (None: from LLAMA_ACTORS_SANITIZE)."""
    bdir = bdir or build_dir(flavour_name)
    if not (VENDOR / "CMakeLists.txt").exists():
        raise SystemExit("[build] vendor/llama.cpp is missing: run scripts/fetch_llama.py first")
    configure(bdir, ceiling, flavour_name)
    jobs = str(os.cpu_count() or 2)
    print(f"[build] cmake --build {bdir} --target {' '.join(targets)} -j{jobs} (first build takes minutes)",
          file=sys.stderr, flush=True)
    config = "RelWithDebInfo" if flavour(flavour_name) == "asan" else "Release"
    subprocess.run(["cmake", "--build", str(bdir), "--config", config, "-j", jobs, "--target", *targets],
                   check=True, stdout=sys.stderr)
    return bdir


def static_libs(bdir: Path | None = None) -> list[Path]:
    """The archives to link, in dependency order (llama before ggml)."""
    bdir = bdir or build_dir()
    order = ["libllama.a", "libggml.a", "libggml-cpu.a", "libggml-base.a"]
    found: dict[str, Path] = {}
    for p in bdir.rglob("*.a"):
        found.setdefault(p.name, p)
    missing = [n for n in order if n not in found]
    if missing:
        raise SystemExit(f"[build] missing static libraries {missing} in {bdir}")
    extra = sorted(p for n, p in found.items() if n.startswith("libggml-") and n not in order)
    # GPU backends (libggml-cuda.a, ...) sit between ggml and ggml-base.
    return [found["libllama.a"], found["libggml.a"], *extra, found["libggml-cpu.a"], found["libggml-base.a"]]


def main(argv: list[str]) -> int:
    targets = argv or ["llama", "ggml"]
    build(targets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
