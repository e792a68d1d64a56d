"""Every example script runs as a user would run it, and prints what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name: str, *args: str) -> str:
    r = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.slow
def test_quickstart_actor_system_cold_then_exact_warm() -> None:
    out = run("quickstart.py")
    assert re.search(r"^cold: cold ", out, re.M)
    assert re.search(r"^warm: exact ", out, re.M)
    assert "identical replies: True" in out
    assert re.search(r"^streamed: \S", out, re.M)
    assert '"hits_exact": 1' in out
    assert "no process left behind" in out


def test_native_quickstart() -> None:
    out = run("native_quickstart.py")
    assert "identical replies: True" in out
    ratio = int(re.search(r"cold/warm: (\d+)x", out).group(1))  # type: ignore[union-attr]
    assert ratio > 10
