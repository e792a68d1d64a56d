"""The command line, driven as a user would: subprocesses, exit codes, output.

Every system is started on a free port and stopped in ``finally``; processes
are only ever killed by the pids these tests saw, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from actors.supervisor.runtime import alive, free_port, listener_pid, tree_pids
from tests.test_docs import table_keys

CLI = [sys.executable, "-m", "actors"]


def cli(*args: str, timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


def kill_left(pids: list[int] | set[int]) -> None:
    for pid in alive(pids):
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


def one_error_line(stderr: str) -> str:
    assert stderr.endswith("\n") and stderr.count("\n") == 1, repr(stderr)
    assert stderr.startswith("error: "), stderr
    return stderr.strip()


# --------------------------------------------------------------------------- serve --config


class Served:
    """A `serve --config` process: its port once ready, its stderr, and every pid of its tree."""

    def __init__(self, proc: subprocess.Popen[bytes], stderr_path: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.port = 0
        self.pids: set[int] = {proc.pid}

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_ready(self, timeout: float = 120) -> str:
        """Read stdout until the `serving on port N` line (printed once every model is loaded)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            assert time.monotonic() < deadline, f"serve did not come up: {self.stderr()}"
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                chunk = os.read(fd, 4096)
                assert chunk, f"serve exited: rc={self.proc.wait()} {self.stderr()}"
                buf += chunk
        line = buf.decode().splitlines()[0]
        m = re.search(r"serving on port (\d+)", line)
        assert m, line
        self.port = int(m.group(1))
        admin = listener_pid(self.port)
        assert admin is not None
        self.pids |= set(tree_pids(admin))
        return line


@contextlib.contextmanager
def serving(tmp_path: Path, config: str, *args: str) -> Iterator[Served]:
    cfg = tmp_path / "node.toml"
    cfg.write_text(config)
    err = tmp_path / "serve.err"
    with err.open("wb") as ef:
        proc = subprocess.Popen([*CLI, "serve", "--config", str(cfg), *args], stdout=subprocess.PIPE, stderr=ef,
                                stdin=subprocess.DEVNULL)
    served = Served(proc, err)
    try:
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        if served.port:
            served.pids |= set(tree_pids(listener_pid(served.port) or 0)) if listener_pid(served.port) else set()
        left = alive(served.pids)
        kill_left(left)
        assert not left, f"processes left behind: {left}"


def stub_config(tmp_path: Path, port: int) -> str:
    return f"""
[node]
admin_port = {port}
[cache]
run_dir = "{tmp_path / 'run'}"
ram = "64MiB"
disk = {{ dir = "{tmp_path / 'disk'}", bytes = "256MiB" }}
default_tier = "disk"
fsync = false
[cache.policy]
min_tokens = 8
cold_min_tokens = 8
boundary_trim_tokens = 0
boundary_align_tokens = 8
continued_interval = 0
[[models]]
id = "stub"
backend = "stub"
stub = {{ n_seq_max = 4, n_batch = 64 }}
"""


def test_serve_config_top_chat_cache_then_sigterm(tmp_path: Path) -> None:
    """The whole operator loop on the stub backend (fast): every command against one served config."""
    with serving(tmp_path, stub_config(tmp_path, free_port())) as served:
        line = served.wait_ready()
        assert "(models: stub)" in line
        err = served.stderr()
        assert re.search(r"loading model 'stub' from the stub backend", err)
        assert re.search(r"model 'stub' loaded in \d+\.\d s", err)
        port = str(served.port)

        prompt = "a prompt long enough to be saved by the test policy"
        for kind in ("cold", "exact"):
            r = cli("complete", "--port", port, "--model", "stub", "--raw", "--max-tokens", "8", prompt)
            assert r.returncode == 0, r.stderr
            assert r.stderr.startswith(f"[{kind}, length, ")

        r = cli("top", "--port", port, "--iterations", "2", "--interval", "0.1")
        assert r.returncode == 0, r.stderr
        frames = r.stdout.split("\n\n")
        assert len(frames) == 2
        assert re.search(r"^stub\s+\d+\s+idle\s+0\s+0\s+exact \d+\s+0\s", frames[0], re.M), frames[0]
        assert "hits 1 (exact 1," in frames[1] and "misses 1" in frames[1]
        assert re.search(r"tiers: ram .* in 0 rows, disk .* in \d+ rows", frames[1])

        r = cli("chat", "--port", port, "stub", "--max-tokens", "16", stdin="hello there\nand again\n/exit\nignored\n")
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.splitlines()) == 2  # two replies; the line after /exit is never sent
        kinds = re.findall(r"^\[(\w+), ", r.stderr, re.M)
        assert kinds == ["cold", "sticky"], r.stderr  # the second turn resumed the live session
        r = cli("status", "--port", port)
        assert json.loads(r.stdout)["cache"].get("hits_exact") == 1

        r = cli("cache", "ls", "--port", port)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split() == ["KEY", "TIER", "STATUS", "TOKENS", "BYTES", "HITS", "PINS", "LAST", "USE"]
        rows = [ln.split() for ln in lines[1:-1]]
        assert rows and all(len(x[0]) == 16 and x[1] == "disk" for x in rows)
        assert [x[-1] for x in rows] == [f"#{i}" for i in range(1, len(rows) + 1)]
        assert re.match(rf"{len(rows)} rows, ", lines[-1])
        listed = json.loads(cli("cache", "ls", "--port", port, "--json").stdout)
        assert len(listed) == len(rows) and {"key", "tier", "n_tokens", "size", "last_use"} <= set(listed[0])

        r = cli("cache", "gc", "--port", port)
        assert r.returncode == 0 and r.stdout.startswith("gc: ") and "vanished 0" in r.stdout

        r = cli("cache", "evict", "--port", port, "--bytes", "1B", "--tier", "disk")
        assert r.returncode == 0, r.stderr
        assert re.match(r"evicted 1 rows, freed \d+ B from disk", r.stdout), r.stdout
        assert len(json.loads(cli("cache", "ls", "--port", port, "--json").stdout)) == len(rows) - 1

        r = cli("cache", "evict", "--port", port, "--bytes", "1k", "--tier", "ram_file")
        assert r.returncode == 1
        assert one_error_line(r.stderr) == ("error: --tier: ram_file is not a tier of this cache "
                                            "(configured: ram, disk)")
        r = cli("chat", "--port", port, "nope", stdin="hi\n")
        assert r.returncode == 1
        assert one_error_line(r.stderr) == "error: no model 'nope' is loaded (loaded: stub)"

        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=60) == 0
        assert "SIGTERM received, stopping" in served.stderr()
        assert listener_pid(served.port) is None


def test_serve_stops_when_stopped_from_another_shell(tmp_path: Path) -> None:
    with serving(tmp_path, stub_config(tmp_path, free_port())) as served:
        served.wait_ready()
        r = cli("stop", "--port", str(served.port))
        assert r.returncode == 0, r.stderr
        assert served.proc.wait(timeout=60) == 0
        assert "stopped from elsewhere" in served.stderr()


def test_bad_config_fails_before_anything_starts(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[node]\nadmin_port = {port}\n[[models]]\nid = "a"\ncontext = {{ n_ctx = "big" }}\n')
    r = cli("serve", "--config", str(cfg))
    assert r.returncode == 1
    assert one_error_line(r.stderr) == f'error: {cfg}: models[0].context.n_ctx: expected an integer, got "big"'
    assert listener_pid(port) is None
    cfg.write_text('[[models]]\nid = "a"\npath = "missing.gguf"\n')
    r = cli("serve", "--config", str(cfg))
    assert one_error_line(r.stderr) == (f'error: {cfg}: models[0].path: no such model file: '
                                        f'"{tmp_path / "missing.gguf"}"')
    cfg.write_text('[cache]\nram = "1MiB"\n')
    r = cli("serve", "--config", str(cfg), "--cache-dir", str(tmp_path / "kv"))
    assert one_error_line(r.stderr) == ("error: --cache-dir: the config already has a [cache] table; "
                                        "set its disk tier there")
    r = cli("serve", "--config", str(tmp_path / "none.toml"))
    assert r.returncode == 1
    assert one_error_line(r.stderr) == f"error: no such config file: {tmp_path / 'none.toml'}"


def test_a_model_that_fails_to_load_stops_the_system(tmp_path: Path) -> None:
    bad = tmp_path / "junk.gguf"
    bad.write_bytes(b"not a gguf file at all")
    port = free_port()
    with serving(tmp_path, f'[node]\nadmin_port = {port}\n[[models]]\nid = "junk"\npath = "{bad}"\n') as served:
        assert served.proc.wait(timeout=120) == 1
        err = served.stderr().splitlines()
        assert err[-1].startswith("error: model 'junk': malformed_gguf"), err
        assert listener_pid(port) is None


def test_errors_are_one_line_and_nonzero() -> None:
    port = str(free_port())
    for args in (("status", "--port", port), ("stop", "--port", port), ("top", "--port", port),
                 ("cache", "ls", "--port", port), ("chat", "--port", port, "smol")):
        r = cli(*args)
        assert r.returncode == 1, args
        assert one_error_line(r.stderr) == f"error: no actor system listens on port {port}"
    r = cli("frobnicate")
    assert r.returncode == 2
    assert one_error_line(r.stderr).startswith("error: argument COMMAND: invalid choice: 'frobnicate'")
    r = cli("cache", "evict", "--port", port)
    assert r.returncode == 2
    assert one_error_line(r.stderr).startswith("error: the following arguments are required: --bytes")


# --------------------------------------------------------------------------- the real model


@pytest.fixture
def daemon() -> Iterator[int]:
    """`serve --port` with no config: the plain daemon other shells load models into."""
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    pids: set[int] = {proc.pid}
    try:
        deadline = time.monotonic() + 60
        while listener_pid(port) is None:
            assert proc.poll() is None, "serve exited early"
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.1)
        pids |= set(tree_pids(listener_pid(port) or 0))
        yield port
    finally:
        cli("stop", "--port", str(port))
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        left = alive(pids)
        kill_left(left)
        assert not left, f"processes left behind: {left}"


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
    assert sorted(st) == sorted(table_keys("cli.md", "`status --port N` prints"))  # the documented keys
    assert sorted(st["models"][0]) == sorted(table_keys("cli.md", "Each entry of `models`"))
    assert sorted(st["observed"][0]) == sorted(table_keys("cli.md", "Each entry of `observed`"))
    assert [m["model_id"] for m in st["models"]] == ["smol"]
    assert st["observed"][0]["phase"] == "idle"
    assert st["cache"]["misses"] >= 1
    r = cli("complete", "--port", port, "--model", "nope", "hi")
    assert r.returncode == 1
    assert one_error_line(r.stderr) == "error: no_such_model: no model 'nope' is loaded"
    r = cli("load", "--port", port, "--id", "bad", "--context", '{"n_ctx": "big"}')
    assert r.returncode == 1
    assert one_error_line(r.stderr) == "error: bad_option: n_ctx: expected an integer, got 'big'"
    r = cli("load", "--port", port, "--id", "bad", "--context", "{n_ctx: 1}")
    assert one_error_line(r.stderr).startswith("error: --context: not valid JSON")
    r = cli("stop", "--port", port)
    assert r.returncode == 0
    deadline = time.monotonic() + 20
    while listener_pid(daemon) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert listener_pid(daemon) is None


@pytest.mark.slow
def test_chat_with_the_bundled_model_keeps_a_sticky_session(tmp_path: Path) -> None:
    config = f"""
[node]
admin_port = {free_port()}
[[models]]
id = "smol"
context = {{ n_ctx = 2048, n_seq_max = 2 }}
"""
    with serving(tmp_path, config) as served:
        served.wait_ready()
        r = cli("chat", "--port", str(served.port), "smol", "--max-tokens", "24",
                stdin="What is the capital of France?\nAnd of Italy?\n")
        assert r.returncode == 0, r.stderr
        replies = r.stdout.splitlines()
        assert "Paris" in replies[0], replies
        kinds = re.findall(r"^\[(\w+), ", r.stderr, re.M)
        assert kinds == ["cold", "sticky"], r.stderr
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(timeout=60) == 0
        assert "SIGINT received, stopping" in served.stderr()
