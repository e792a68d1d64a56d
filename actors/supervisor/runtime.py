"""Starting, attaching to and stopping the actor system, loopback only.

Facts this module is built around (thespian 4.0.1, ``multiprocTCPBase``):

* **Loopback only.** Thespian binds every actor socket, the admin's
  included, to all interfaces, and the admin speaks unauthenticated
  pickle; ``THESPIAN_BASE_IPADDR`` changes the *advertised* address but
  not the bind (``IPActorAddress``: ``bindname = ('', port) if external
  else sa``).  :func:`enforce_loopback` patches that constructor so a
  bind to ``''``/``0.0.0.0`` becomes ``127.0.0.1``, and exports
  ``THESPIAN_BASE_IPADDR=127.0.0.1``.  It must run before the admin
  forks (every actor process is forked from the admin, so they inherit
  the patch) and in every process that attaches (an attaching client
  listens for replies too).  Multi-host mode is an explicit opt-in.
* **A fresh process starts the system.** llama.cpp's OpenMP runtime does
  not survive ``fork``: a process forked from one that already ran a
  decode hangs on its first parallel region.  Thespian forks the admin
  from the process that creates the system, so :func:`start` runs the
  admin's parent in a new interpreter (``python -m
  actors.supervisor.runtime serve``) and the caller attaches to it.
  That is also the daemon mode: other shells attach by port.
* **Explicit admin port.** Never 1900 (thespian's default, also SSDP).
* **No process left behind.** The admin daemonises (``setsid``) and
  outlives its starter; :func:`stop` shuts the tree down gracefully
  (sessions saved), shuts thespian down, then checks by the admin's
  session id that nothing survived, and kills (by pid) and reports
  anything that did.

CLI (daemon mode)::

    python -m actors.supervisor.runtime serve --port 7700 [--cache-dir DIR] [--multi-host]
    python -m actors.supervisor.runtime status --port 7700
    python -m actors.supervisor.runtime stop --port 7700
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

LOOPBACK = "127.0.0.1"
SYSTEM_BASE = "multiprocTCPBase"
ROOT_NAME = "llama-actors-root"
_PATCH_FLAG = "_llama_actors_loopback"


class RuntimeStartError(RuntimeError):
    pass


class LeftoverProcesses(RuntimeError):
    """Processes of the actor system outlived its shutdown (they were killed)."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(f"actor-system processes left after shutdown (killed): {pids}")
        self.pids = pids


# --------------------------------------------------------------------------- loopback


def enforce_loopback(multi_host: bool = False) -> None:
    """Make every thespian socket of this process (and its forks) bind to 127.0.0.1.

    ``multi_host=True`` leaves thespian's binding alone (reachable from other
    hosts: only on a trusted network, the admin speaks unauthenticated pickle).
    """
    if multi_host:
        return
    os.environ["THESPIAN_BASE_IPADDR"] = LOOPBACK
    from thespian.system.transport import IPBase

    cls = IPBase.IPActorAddress
    if getattr(cls.__init__, _PATCH_FLAG, False):
        return
    original = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        host = self.bindname[0]
        if host in ("", "0.0.0.0"):
            self.bindname = (LOOPBACK, *tuple(self.bindname[1:]))

    setattr(__init__, _PATCH_FLAG, True)
    cls.__init__ = __init__  # type: ignore[method-assign]


def free_port() -> int:
    """A currently free loopback TCP port (racy by nature; start() retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def listener_pid(port: int) -> int | None:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    return None


def alive(pids: Iterable[int]) -> list[int]:
    """Those of ``pids`` still running (a zombie has exited): how every caller checks for leftovers."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            continue
    return out


def session_members(sid: int) -> list[int]:
    out = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getsid(proc.pid) == sid:
                out.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return out


def tree_pids(admin_pid: int) -> list[int]:
    """The admin and every process of its session (all actor processes)."""
    try:
        sid = os.getsid(admin_pid)
    except ProcessLookupError:
        return []
    if sid == os.getsid(0):
        return [admin_pid]
    return session_members(sid)


def listening_sockets(pids: list[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP/UDP socket these processes listen on."""
    out = []
    for pid in pids:
        try:
            for conn in psutil.Process(pid).net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM and not conn.raddr):
                    out.append((pid, conn.laddr.ip, conn.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


# --------------------------------------------------------------------------- attach / start / stop


def attach_system(port: int, multi_host: bool = False) -> Any:
    """An external ``ActorSystem`` handle on the system whose admin listens on ``port``."""
    if port == 1900:
        raise RuntimeStartError("refusing thespian's default admin port 1900; pick an explicit port")
    enforce_loopback(multi_host)
    from thespian.actors import ActorSystem

    if listener_pid(port) is None:
        raise RuntimeStartError(f"no actor system listens on port {port}")
    return ActorSystem(SYSTEM_BASE, {"Admin Port": port}, transientUnique=True)


def ask(asys: Any, addr: Any, msg: Any, timeout: float) -> Any:
    """Ask through a private context and return the reply with the same req_id (TimeoutError if none)."""
    req_id = getattr(msg, "req_id", None)
    deadline = time.monotonic() + timeout
    with asys.private() as ctx:
        reply = ctx.ask(addr, msg, timeout)
        while True:
            if reply is None:
                raise TimeoutError(f"no reply to {type(msg).__name__} within {timeout}s")
            if not req_id or getattr(reply, "req_id", None) == req_id:
                return reply
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching reply to {type(msg).__name__} within {timeout}s")
            reply = ctx.listen(left)


def find_root(asys: Any) -> Any:
    from actors.supervisor.tree import RootSupervisor

    return asys.createActor(RootSupervisor, globalName=ROOT_NAME)


@dataclass
class Started:
    """What ``start`` hands back: the port, the serve process and the admin's pid/session."""

    port: int
    serve: subprocess.Popen[bytes] | None
    admin_pid: int | None
    info: dict[str, Any] = field(default_factory=dict)


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def start(port: int | None = None, cache_config: Any = None, multi_host: bool = False, timeout: float = 60.0,
          log_path: str | None = None, *, thinking_key: Any = None, pressure: dict[str, Any] | None = None) -> Started:
    """Start a new actor system + supervision tree in a fresh ``serve`` process and wait until it is ready.

    ``thinking_key`` (``actors.secret.Secret``) and ``pressure`` (PressureStart fields) travel
    with the cache configuration in a private temporary file, never on the command line.
    """
    import pickle
    import tempfile

    attempts = 3 if port is None else 1
    last = ""
    for _ in range(attempts):
        p = free_port() if port is None else port
        if p == 1900:
            raise RuntimeStartError("refusing thespian's default admin port 1900; pick an explicit port")
        env = dict(os.environ)
        root = _package_root()
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if not multi_host:
            env["THESPIAN_BASE_IPADDR"] = LOOPBACK
        args = [sys.executable, "-m", "actors.supervisor.runtime", "serve", "--port", str(p), "--ready-stdout"]
        if multi_host:
            args.append("--multi-host")
        cfg_file = None
        if cache_config is not None or thinking_key is not None or pressure:
            fd, cfg_file = tempfile.mkstemp(prefix="llama-actors-node-", suffix=".pickle")  # mode 0600
            with os.fdopen(fd, "wb") as f:
                pickle.dump({"cache_config": cache_config, "thinking_key": thinking_key, "pressure": pressure}, f)
            args += ["--node-pickle", cfg_file]
        if log_path:
            args += ["--log", log_path]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, cwd=os.getcwd(),
                                start_new_session=True)
        try:
            line = _read_line(proc, timeout)
        finally:
            if cfg_file:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(cfg_file)
        if line.startswith("READY "):
            info = json.loads(line[6:])
            return Started(p, proc, info.get("admin_pid"), info)
        last = line
        _reap(proc)
        if "port_in_use" not in line:
            break
    raise RuntimeStartError(f"actor system did not start: {last or 'no output'}")


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return "ERROR timeout waiting for the serve process"
        r, _, _ = select.select([fd], [], [], min(left, 0.5))
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
        elif proc.poll() is not None:
            break
    proc.stdout.close()
    return buf.split(b"\n", 1)[0].decode("utf-8", "replace").strip()


def _reap(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def graceful_stop(asys: Any, timeout: float = 30.0) -> None:
    """Ask the root to stop the tree gracefully (models unloaded with shutdown saves, writes flushed)."""
    from actors.supervisor import messages as sm

    root = find_root(asys)
    ask(asys, root, sm.StopTree(req_id=os.urandom(6).hex()), timeout)


def stop(port: int, serve: subprocess.Popen[bytes] | None = None, admin_pid: int | None = None,
         graceful: bool = True, timeout: float = 30.0) -> None:
    """Stop the system on ``port`` and prove no process of it is left (LeftoverProcesses otherwise)."""
    admin_pid = admin_pid or listener_pid(port)
    sid = None
    if admin_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            sid = os.getsid(admin_pid)
    if sid is not None and sid == os.getsid(0):
        sid = None  # never sweep our own session
    try:
        if admin_pid is not None:
            asys = attach_system(port)
            if graceful:
                with contextlib.suppress(Exception):
                    graceful_stop(asys, timeout)
            asys.shutdown()
    except Exception:
        pass
    finally:
        if serve is not None:
            _reap(serve)
        with contextlib.suppress(FileNotFoundError):
            from actors.obs import obs_path

            os.unlink(obs_path(port))
        leftovers = _wait_gone(sid, timeout=10.0)
        if leftovers:
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise LeftoverProcesses(leftovers)


def _wait_gone(sid: int | None, timeout: float) -> list[int]:
    if sid is None:
        return []
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in session_members(sid) if p != os.getpid()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


# --------------------------------------------------------------------------- serve (the daemon)


def serve(port: int, cache_config: Any = None, multi_host: bool = False, ready_fd: int | None = None,
          remove_run_dir: bool = False, thinking_key: Any = None, pressure: dict[str, Any] | None = None) -> int:
    """Run the system in this (fresh) process until SIGTERM/SIGINT or until the admin dies.

    ``remove_run_dir``: the cache's run directory (staging, counters, snapshots) was made for
    this run only; delete it on the way out.
    """
    try:
        return _serve(port, cache_config, multi_host, ready_fd, thinking_key, pressure)
    finally:
        if remove_run_dir and cache_config is not None:
            import shutil

            shutil.rmtree(cache_config.run_dir, ignore_errors=True)


def _serve(port: int, cache_config: Any, multi_host: bool, ready_fd: int | None, thinking_key: Any = None,
           pressure: dict[str, Any] | None = None) -> int:
    from actors.cache.config import CacheConfig
    from actors.obs import ObsTable, obs_path
    from actors.supervisor import messages as sm

    def report(line: str) -> None:
        if ready_fd is not None:
            os.write(ready_fd, (line + "\n").encode())
        else:
            print(line, flush=True)

    enforce_loopback(multi_host)
    if port == 1900:
        report("ERROR refusing thespian's default admin port 1900")
        return 2
    if listener_pid(port) is not None:
        report(f"ERROR port_in_use {port}")
        return 2
    from thespian.actors import ActorSystem

    config = cache_config or CacheConfig.create()
    obs = ObsTable(obs_path(port), create=True)
    obs.close()
    try:
        asys = ActorSystem(SYSTEM_BASE, {"Admin Port": port}, transientUnique=True)
    except Exception as e:
        report(f"ERROR port_in_use {e!r}" if "in use" in str(e).lower() else f"ERROR {e!r}")
        return 2
    admin_pid = None
    deadline = time.monotonic() + 10
    while admin_pid is None and time.monotonic() < deadline:
        admin_pid = listener_pid(port)
        if admin_pid is None:
            time.sleep(0.02)
    try:
        root = find_root(asys)
        ready = ask(asys, root, sm.TreeStart(req_id="start", cache_config=config, admin_port=port,
                                              obs_path=obs_path(port), pressure=pressure or None,
                                              thinking_key=thinking_key), 60.0)
        if isinstance(ready, sm.TreeFailed):
            raise RuntimeStartError(ready.detail)
    except Exception as e:
        report(f"ERROR {e!r}")
        with contextlib.suppress(Exception):
            asys.shutdown()
        return 1
    report("READY " + json.dumps({"port": port, "admin_pid": admin_pid, "pid": os.getpid(),
                                  "run_dir": config.run_dir, "obs_path": obs_path(port)}))
    if ready_fd is not None:
        os.close(ready_fd)
    stop_evt = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_evt.set())
    while not stop_evt.wait(0.5):
        if admin_pid is not None and not psutil.pid_exists(admin_pid):
            return 0  # stopped from elsewhere
    if admin_pid is not None and not psutil.pid_exists(admin_pid):
        return 0  # a client already shut it down and then signalled us
    with contextlib.suppress(Exception):
        graceful_stop(asys, 30.0)
    with contextlib.suppress(Exception):
        asys.shutdown()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(obs_path(port))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m actors.supervisor.runtime")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run an actor system in the foreground")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--cache-dir", help="disk tier directory (default: ram tier only)")
    s.add_argument("--node-pickle", help=argparse.SUPPRESS)
    s.add_argument("--multi-host", action="store_true", help="listen on all interfaces (trusted networks only)")
    s.add_argument("--ready-stdout", action="store_true", help=argparse.SUPPRESS)
    s.add_argument("--log", help="file for thespian and actor output (default: the run directory)")
    st = sub.add_parser("status", help="print the models of a running system")
    st.add_argument("--port", type=int, required=True)
    sp = sub.add_parser("stop", help="stop a running system gracefully")
    sp.add_argument("--port", type=int, required=True)
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        return _serve_cli(a)
    if a.cmd == "status":
        from actors.api import System

        with System.attach(a.port) as system:
            print(json.dumps({"models": system.models(), "obs": [r.__dict__ for r in system.observe_all()]},
                             default=str, indent=2))
        return 0
    stop(a.port)
    return 0


def _serve_cli(a: argparse.Namespace) -> int:
    import pickle

    from actors.cache.config import CacheConfig

    config = None
    temporary = False
    node: dict[str, Any] = {}
    if a.node_pickle:
        with open(a.node_pickle, "rb") as f:
            node = pickle.load(f)  # written by start() in this user's temp dir, mode 0600
        config = node.get("cache_config")
    if config is not None:
        pass
    elif a.cache_dir:
        config = CacheConfig.create(disk=(a.cache_dir, 8 << 30), default_tier="ram")
    else:
        config = CacheConfig.create()
        temporary = True
    ready_fd = None
    if a.ready_stdout:
        # Keep the pipe for the READY line only; everything else (and every
        # forked actor's stdout/stderr) goes to the log file.
        ready_fd = os.dup(1)
    log = a.log or os.path.join(config.run_dir, f"serve-{a.port}.log")
    if temporary and not a.log:
        log = os.devnull
    if log != os.devnull:
        os.makedirs(os.path.dirname(log), exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if a.ready_stdout:
        os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return serve(a.port, config, a.multi_host, ready_fd, remove_run_dir=temporary,
                 thinking_key=node.get("thinking_key"), pressure=node.get("pressure"))


if __name__ == "__main__":
    sys.exit(main())
