"""Set up and drive peer runtimes for side-by-side figures.

llama-cpp-python is what a Python user would pick instead of us. It is built
here from the same pinned sdist our llama.cpp tree comes from (same llama.cpp
commit), into its own virtualenv (bench/.peers-venv) so it never touches ours,
with the same explicit CPU flags (GGML_NATIVE=OFF, no AMX). Measurements run
in a subprocess inside that venv (bench/peer_llama_cpp_python.py) and come back
as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import build_llama  # noqa: E402
import fetch_llama  # noqa: E402

PEER_VENV = ROOT / "bench" / ".peers-venv"
PEER_PY = PEER_VENV / "bin" / "python"


def peer_cmake_args() -> str:
    flags = build_llama.feature_options(build_llama.cpu_flags())
    args = ["-DGGML_NATIVE=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF",
            "-DLLAMA_OPENSSL=OFF"]
    args += [f"-D{k}={'ON' if v else 'OFF'}" for k, v in flags.items()]
    return " ".join(args)


def ensure_llama_cpp_python() -> Path:
    """Build llama-cpp-python==SDIST_VERSION from the sha256-checked sdist (cached venv)."""
    stamp = PEER_VENV / "llama-actors-peer.json"
    want = {"sdist": fetch_llama.SDIST_VERSION, "cmake": peer_cmake_args()}
    if PEER_PY.exists() and stamp.exists() and json.loads(stamp.read_text()) == want:
        return PEER_PY
    sdist = fetch_llama._download()
    if not PEER_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True, stdout=sys.stderr)
    env = dict(os.environ, CMAKE_ARGS=want["cmake"], CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
    print(f"[peers] building llama-cpp-python {fetch_llama.SDIST_VERSION} from {sdist.name} (several minutes)",
          file=sys.stderr, flush=True)
    subprocess.run([str(PEER_PY), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True, env=env,
                   stdout=sys.stderr)
    subprocess.run([str(PEER_PY), "-m", "pip", "install", "-q", str(sdist)], check=True, env=env, stdout=sys.stderr)
    stamp.write_text(json.dumps(want))
    return PEER_PY


def run_llama_cpp_python(task: dict[str, Any]) -> dict[str, Any]:
    py = ensure_llama_cpp_python()
    script = ROOT / "bench" / "peer_llama_cpp_python.py"
    out = subprocess.run([str(py), str(script)], input=json.dumps(task), check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


if __name__ == "__main__":
    from actors.model.llama import default_model_path
    from actors.model.options import default_threads

    print(json.dumps(run_llama_cpp_python({"model": str(default_model_path()), "threads": default_threads(),
                                           "n_gen": 64, "prompt_lengths": [128], "reps": 2}), indent=2))
