"""The three HTTP servers ``http_compare.py`` drives, each a process started and stopped by pid on loopback.

Why a module of its own: starting a server is the part of the benchmark
that can leave processes behind, so it lives in one place with one rule:
whatever is started here is stopped here, by pid, in ``finally`` (SIGTERM,
then SIGKILL), and a process that outlives that is an error, never a
silent leftover.

* ours: ``python -m actors serve --config FILE --http`` (the TOML a user
  would write: a 1 GiB ram tier with the default save policy); its actor
  tree runs under its own daemonised admin, so its pids are read from the
  admin port once it is up and stopped after the serve process;
* ``llama-server``: ``llama_server_peer.LlamaServer`` (the vendored tree,
  our CMake flags, prompt cache on), seen through the same interface;
* llama-cpp-python: ``python -m llama_cpp.server`` from the peer venv that
  ``peers`` builds from the pinned sdist, with the sdist's own ``server``
  extra installed from PyPI, ``--cache true --cache_type ram``, and
  ``--interrupt_requests false`` (its default cancels a running stream when
  the next request arrives).  Two of its server defaults would slow its
  engine for nothing and are set as llama.cpp has them: ``--logits_all
  false`` (its default computes the vocabulary's logits for every prompt
  token) and ``--flash_attn true`` (llama-server's and our ``auto``
  resolves to on for the CPU backend).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench_util import log  # puts the repository on sys.path

MODEL = "smol"
LOOPBACK = "127.0.0.1"
# The sdist's own ``server`` extra (llama_cpp_python-0.3.36/pyproject.toml), installed from PyPI into its venv.
LCP_SERVER_DEPS = ("uvicorn>=0.22.0", "fastapi>=0.100.0", "pydantic-settings>=2.0.1", "sse-starlette>=1.6.1",
                   "starlette-context>=0.3.6,<0.4", "PyYAML>=5.1")
LCP_DEP_NAMES = ("llama_cpp_python", "uvicorn", "fastapi", "pydantic-settings", "sse-starlette", "starlette-context",
                 "starlette", "pydantic")

def free_port() -> int:
    from actors.supervisor.runtime import free_port as _free

    return int(_free())


def http_ok(port: int, path: str) -> bool:
    with contextlib.suppress(OSError, http.client.HTTPException):
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=2)
        try:
            conn.request("GET", path)
            return conn.getresponse().status == 200
        finally:
            conn.close()
    return False


def processes(pids: list[int]) -> list[Any]:
    """``psutil.Process`` handles, taken now: each remembers its start time, so a pid reused later is never touched."""
    import psutil

    out = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            out.append(psutil.Process(pid))
    return out


def stop_processes(procs: list[Any], timeout: float = 15.0) -> list[int]:
    """SIGTERM each, wait, SIGKILL whatever is left; returns the pids that outlived both."""
    import psutil

    def running() -> list[Any]:
        out = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
        return out

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in running():
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)
        deadline = time.monotonic() + timeout
        while running() and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting on a condition (exit), bounded by the deadline
    return [p.pid for p in running()]


class ServerProcess:
    """One server process for a ``with`` block: started, waited on until ``ready_path`` answers 200, stopped by pid.

    ``tree`` (called once it is ready) names processes that belong to it but are
    not its children (our actor tree runs under its own daemonised admin); they
    are stopped, by pid, after it.
    """

    def __init__(self, name: str, cmd: list[str], port: int, ready_path: str,
                 tree: Callable[[], list[int]] | None = None, config: str = "", start_timeout: float = 300.0,
                 cwd: Path | None = None) -> None:
        self.name, self.cmd, self.port, self.ready_path, self.config = name, cmd, port, ready_path, config
        self.tree_fn = tree
        self.tree: list[Any] = []  # psutil.Process handles
        self.start_timeout = start_timeout
        self.admin_port: int | None = None  # ours only: where a Python client attaches to its tree
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"http-compare-{name}-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    def pids(self) -> list[int]:
        import psutil

        out = [p.pid for p in self.tree]
        if self.proc is not None:
            out.append(self.proc.pid)
            with contextlib.suppress(psutil.Error):
                out += [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        return sorted(set(out))

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.cwd)
        try:
            deadline = time.monotonic() + self.start_timeout
            while not http_ok(self.port, self.ready_path):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not ready after {self.start_timeout:.0f} s: {self.tail()}")
                time.sleep(0.1)  # polling a condition (readiness), bounded by the deadline
            self.tree = processes(self.tree_fn()) if self.tree_fn else []
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return Path(self.log.name).read_text(errors="replace")[-n:]
        return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if not self.tree and self.tree_fn is not None and proc is not None:
            with contextlib.suppress(Exception):  # a failed start: whatever of the tree is up already
                self.tree = processes(self.tree_fn())
        procs = list(self.tree)
        if proc is not None:
            with contextlib.suppress(Exception):
                procs += processes([c.pid for c in processes([proc.pid])[0].children(recursive=True)])
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)  # ours stops its actor tree on SIGTERM
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        left = stop_processes(procs)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)
        if left:
            raise RuntimeError(f"{self.name}: processes left behind: {left}")


def llama_server(threads: int, n_ctx: int, slots: int) -> ServerProcess:
    """``llama_server_peer.LlamaServer``: its build, its flags, prompt cache on, ``slots`` slots."""
    from llama_server_peer import LlamaServer, ServerOptions

    from actors.model.llama import default_model_path

    return LlamaServer(ServerOptions(str(default_model_path()), threads, n_ctx, slots=slots))


def ours_config(threads: int, n_ctx: int, n_seq_max: int, port: int, admin_port: int, queue: int) -> str:
    """The TOML a user would write: a 1 GiB ram tier (the default policy), the model, the [http] table."""
    return (f"[node]\nadmin_port = {admin_port}\n\n"
            '[cache]\nram = "1GiB"\ndefault_tier = "ram"\nfsync = false\n\n'
            f'[http]\nbind = "{LOOPBACK}"\nport = {port}\nqueue_limit = {queue}\n\n'
            f'[[models]]\nid = "{MODEL}"\n'
            f"context = {{ n_ctx = {n_ctx}, n_seq_max = {n_seq_max}, n_batch = 512, n_threads = {threads} }}\n")


@contextlib.contextmanager
def ours(threads: int, n_ctx: int, n_seq_max: int, queue: int, checkout: Path | None = None) -> Iterator[ServerProcess]:
    """``serve --http`` on the bundled model; from ``checkout`` (another tree of this repository, its native
    module built) instead of this one when given: ``python -m actors`` finds the package in its working
    directory first."""
    from actors.supervisor import runtime

    with tempfile.TemporaryDirectory(prefix="http-compare-") as tmp:
        port, admin = free_port(), free_port()
        while admin == port:
            admin = free_port()
        cfg = Path(tmp) / "llama-actors.toml"
        cfg.write_text(ours_config(threads, n_ctx, n_seq_max, port, admin, queue))

        def tree() -> list[int]:
            pid = runtime.listener_pid(admin)
            return list(runtime.tree_pids(pid)) if pid else []

        cmd = [sys.executable, "-m", "actors", "serve", "--config", str(cfg), "--port", str(admin),
               "--http", f"{LOOPBACK}:{port}"]
        with ServerProcess("ours", cmd, port, "/health", tree, cfg.read_text(), cwd=checkout) as srv:
            srv.admin_port = admin
            yield srv


def llama_cpp_python_env() -> tuple[Path, dict[str, str]]:
    """The peer venv (``peers``: built once from the pinned sdist) with its server extra; versions installed."""
    import peers

    py = peers.ensure_llama_cpp_python()
    probe = "import fastapi, sse_starlette, starlette_context, pydantic_settings, uvicorn, yaml"
    if subprocess.run([str(py), "-c", probe], capture_output=True).returncode != 0:
        log("[http] installing llama-cpp-python's server extra into its venv (PyPI)")
        subprocess.run([str(py), "-m", "pip", "install", "-q", *LCP_SERVER_DEPS], check=True, stdout=sys.stderr)
    code = f"import importlib.metadata as m, json; print(json.dumps({{n: m.version(n) for n in {LCP_DEP_NAMES!r}}}))"
    versions = json.loads(subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True).stdout)
    return py, versions


def llama_cpp_python(py: Path, threads: int, n_ctx: int) -> ServerProcess:
    from actors.model.llama import default_model_path

    port = free_port()
    cmd = [str(py), "-m", "llama_cpp.server", "--model", str(default_model_path()), "--model_alias", MODEL,
           "--host", LOOPBACK, "--port", str(port), "--n_threads", str(threads), "--n_threads_batch", str(threads),
           "--n_ctx", str(n_ctx), "--n_batch", "512", "--n_ubatch", "512", "--cache", "true", "--cache_type", "ram",
           "--interrupt_requests", "false", "--logits_all", "false", "--flash_attn", "true", "--verbose", "false"]
    return ServerProcess("llama_cpp_python", cmd, port, "/v1/models")
