"""The sanitizer flavour of the native build never touches the release build."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import build_llama  # noqa: E402


def test_the_asan_flavour_builds_elsewhere_with_both_sanitizers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(build_llama.SANITIZE_ENV, raising=False)
    monkeypatch.delenv("LLAMA_ACTORS_BUILD_DIR", raising=False)
    release = build_llama.cmake_args()
    assert build_llama.flavour() == "release" and build_llama.build_dir() == ROOT / "build" / "llama"
    assert not any("SANITIZE" in a for a in release) and "-DCMAKE_BUILD_TYPE=Release" in release
    monkeypatch.setenv(build_llama.SANITIZE_ENV, "1")
    asan = build_llama.cmake_args()
    assert build_llama.flavour() == "asan" and build_llama.build_dir() == ROOT / "build" / "llama-asan"
    for flag in ("-DLLAMA_SANITIZE_ADDRESS=ON", "-DGGML_SANITIZE_ADDRESS=ON", "-DLLAMA_SANITIZE_UNDEFINED=ON",
                 "-DGGML_SANITIZE_UNDEFINED=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"):
        assert flag in asan
    assert "-DCMAKE_BUILD_TYPE=Release" not in asan
    # an explicit flavour wins over the environment: pip's build of the extension is always release
    assert build_llama.cmake_args(flavour_name="release") == release
    assert build_llama.build_dir("release") == ROOT / "build" / "llama"
    monkeypatch.setenv("LLAMA_ACTORS_BUILD_DIR", "/somewhere/else")
    assert build_llama.build_dir() == ROOT / "build" / "llama-asan"  # that variable moves the release tree only
    with pytest.raises(SystemExit):
        build_llama.flavour("tsan")
