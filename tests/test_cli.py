"""The command line, driven as a user would: subprocesses, exit codes, output."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from actors.supervisor.runtime import free_port, listener_pid, tree_pids

CLI = [sys.executable, "-m", "actors"]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def daemon() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while listener_pid(port) is None:
            assert proc.poll() is None, "serve exited early"
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.1)
        pids = tree_pids(listener_pid(port) or 0)
        yield port
    finally:
        cli("stop", "--port", str(port))
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        for pid in [proc.pid, *pids]:
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                psutil.Process(pid).kill()


@pytest.mark.slow
def test_serve_load_complete_status_stop(daemon: int) -> None:
    port = str(daemon)
    r = cli("load", "--port", port, "--id", "smol", "--context", '{"n_ctx": 1024}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n_ctx"] == 1024
    r = cli("complete", "--port", port, "--model", "smol", "--max-tokens", "12", "What is the capital of France?")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    assert "[cold," in r.stderr
    r = cli("status", "--port", port)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert [m["model_id"] for m in st["models"]] == ["smol"]
    assert st["observed"][0]["phase"] == "idle"
    assert st["cache"]["misses"] >= 1
    r = cli("complete", "--port", port, "--model", "nope", "hi")
    assert r.returncode == 1
    assert r.stderr.strip() == "llama-actors complete: no_such_model: no model 'nope' is loaded"
    r = cli("stop", "--port", port)
    assert r.returncode == 0
    deadline = time.monotonic() + 20
    while listener_pid(daemon) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert listener_pid(daemon) is None


def test_errors_are_one_line_and_nonzero() -> None:
    r = cli("status", "--port", str(free_port()))
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("llama-actors status: ")
    r = cli("frobnicate")
    assert r.returncode == 2
