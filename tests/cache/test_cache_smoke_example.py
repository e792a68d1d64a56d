from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", [[], ["--actors"]])
def test_smoke_example_exits_zero_and_cleans_up(tmp_path: Path, mode: list[str]) -> None:
    env = {"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "cache_smoke.py"), *mode],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "one save, one miss, one exact hit" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # its temp dir is gone
