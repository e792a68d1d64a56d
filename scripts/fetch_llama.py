"""Fetch the pinned llama.cpp source tree into vendor/llama.cpp.

The source rides inside the llama-cpp-python sdist on PyPI because that is a
registry every machine of ours can reach; GitHub is not. The sdist is checked
against a pinned sha256 before anything is extracted, so a changed upload can
never silently change the C code we build.

Idempotent: when vendor/llama.cpp already holds the pinned version (recorded in
vendor/llama.cpp/.llama-actors-version) nothing is downloaded, so it works
offline. To bump: change SDIST_VERSION, SDIST_SHA256 and LLAMA_COMMIT below,
delete vendor/llama.cpp and the build directory, and rerun.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

SDIST_NAME = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_COMMIT = "0c1e570"

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "vendor" / "llama.cpp"
STAMP = VENDOR / ".llama-actors-version"
CACHE = ROOT / ".cache" / "sdist"


def _stamp() -> dict[str, str]:
    return {"sdist": f"{SDIST_NAME}=={SDIST_VERSION}", "sha256": SDIST_SHA256, "llama_commit": LLAMA_COMMIT}


def is_current() -> bool:
    try:
        return json.loads(STAMP.read_text()) == _stamp()
    except (OSError, ValueError):
        return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    name = f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
    target = CACHE / name
    if target.exists() and _sha256(target) == SDIST_SHA256:
        return target
    print(f"[fetch] downloading {SDIST_NAME}=={SDIST_VERSION} sdist from PyPI", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         f"{SDIST_NAME}=={SDIST_VERSION}", "-d", str(CACHE)],
        check=True,
    )
    digest = _sha256(target)
    if digest != SDIST_SHA256:
        target.unlink()
        raise SystemExit(f"[fetch] sha256 mismatch for {name}: got {digest}, pinned {SDIST_SHA256}")
    return target


def _extract(sdist: Path) -> None:
    prefix = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/"
    staging = ROOT / "vendor" / ".llama.cpp.partial"
    if staging.exists():
        shutil.rmtree(staging)
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and not m.name.endswith("/.git")]
        for m in members:
            m.name = m.name[len(prefix):]
        print(f"[fetch] extracting {len(members)} files into {VENDOR}", flush=True)
        tar.extractall(staging, members=members, filter="data")
    # Swap in whole, so an interrupted fetch never leaves a half tree that looks current.
    (staging / STAMP.name).write_text(json.dumps(_stamp()))
    if VENDOR.exists():
        shutil.rmtree(VENDOR)
    staging.rename(VENDOR)


def main() -> int:
    if is_current():
        print(f"[fetch] vendor/llama.cpp is {SDIST_NAME}=={SDIST_VERSION} (llama.cpp {LLAMA_COMMIT}); nothing to do")
        return 0
    (ROOT / "vendor").mkdir(exist_ok=True)
    _extract(_download())
    print(f"[fetch] done: llama.cpp {LLAMA_COMMIT}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
