"""The one bootstrap: starting, attaching to and stopping an actor system, loopback only.

Every way to get a system goes through here: ``actors.api.System`` (a whole
supervision tree), ``actors.system.start_system`` (a bare system for your own
actors) and the CLI. The daemon itself (``python -m actors.supervisor.serve``)
lives in ``serve.py``; this module never imports the client (``actors.api``).

Facts this module is built around (thespian 4.0.1, ``multiprocTCPBase``):

* **Authenticated.** Thespian unpickles whatever reaches an actor's port;
  :func:`secure_transport` (the serve process, before the admin forks, so
  every actor process inherits it) and :func:`attach_system` (every client)
  install ``actors.transport_auth``: each message carries an HMAC of the
  system's key, checked before a byte is unpickled. The key is made per
  system in a 0600 file of the per-user root, so another shell of the same
  user attaches with no extra step.
* **Loopback only.** Thespian binds every actor socket, the admin's
  included, to all interfaces; ``THESPIAN_BASE_IPADDR`` changes the *advertised* address but
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
  actors.supervisor.serve``) and the caller attaches to it. That is also
  the daemon mode: other shells attach by port. The new interpreter gets
  the caller's own import path, so actor classes from the caller's
  modules can be created in the system.
* **Explicit admin port.** Never 1900 (thespian's default, also SSDP):
  :func:`check_port` is the one guard.
* **No process left behind.** The admin daemonises (``setsid``) and
  outlives its starter; :func:`stop` shuts the tree down gracefully
  (sessions saved), shuts thespian down, then checks by the admin's
  session id that nothing survived, and kills (by pid) and reports
  anything that did.

Daemon mode: ``python -m actors serve`` (or ``python -m actors.supervisor.serve
--port 7700``), then ``python -m actors status|stop --port 7700`` from any shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

LOOPBACK = "127.0.0.1"
SYSTEM_BASE = "multiprocTCPBase"
ROOT_NAME = "llama-actors-root"
THESPIAN_DEFAULT_PORT = 1900
_PATCH_FLAG = "_llama_actors_loopback"


class RuntimeStartError(RuntimeError):
    """The system could not be started or attached to (the text says why)."""


class TransportAuthError(RuntimeStartError):
    """The transport key needed to attach is missing, unreadable or not the system's (``reason`` says which)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"transport key refused ({reason}): {detail}")
        self.reason = reason


class LeftoverProcesses(RuntimeError):
    """Processes of the actor system outlived its shutdown (they were killed)."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(f"actor-system processes left after shutdown (killed): {pids}")
        self.pids = pids


# --------------------------------------------------------------------------- loopback


def enforce_loopback(multi_host: bool = False) -> None:
    """Make every thespian socket of this process (and its forks) bind to 127.0.0.1.

    ``multi_host=True`` leaves thespian's binding alone (reachable from other
    hosts; messages are still authenticated, but not encrypted: trusted networks only).
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


def port_refusal(port: int) -> str | None:
    """Why ``port`` must not be an admin port, or None when it may (the one rule, also used by the config)."""
    if port == THESPIAN_DEFAULT_PORT:
        return f"{port} is thespian's default admin port (and SSDP's); pick another port"
    return None


def check_port(port: int) -> None:
    """Refuse an admin port that :func:`port_refusal` rejects (RuntimeStartError)."""
    reason = port_refusal(port)
    if reason is not None:
        raise RuntimeStartError(f"refusing admin port {port}: {reason}")


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


def wait_listener(port: int, timeout: float) -> int | None:
    """The pid listening on ``port`` once one does (the admin coming up), or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        pid = listener_pid(port)
        if pid is not None or time.monotonic() > deadline:
            return pid
        time.sleep(0.02)


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


def admin_session(admin_pid: int | None) -> int | None:
    """The session id of the admin's daemonised session, or None when unknown or when it is our own
    (a leftover sweep must never reach the caller's own session)."""
    if admin_pid is None:
        return None
    try:
        sid = os.getsid(admin_pid)
    except ProcessLookupError:
        return None
    return None if sid == os.getsid(0) else sid


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


# --------------------------------------------------------------------------- transport key


def secure_transport(port: int) -> Any:
    """In the process that will serve ``port``, before its admin forks: make the system's key
    (``transport_auth.server_key``), sign and check every message, count what is dropped.
    Returns the key, for :func:`publish_transport_key` once the admin is known to be ours."""
    from actors import transport_auth

    try:
        key = transport_auth.server_key()
        transport_auth.install(port, key, count_drops=True)
    except transport_auth.TransportKeyError as e:
        raise TransportAuthError(e.reason, e.detail) from None
    return key


def publish_transport_key(port: int, key: Any) -> None:
    """Write the serving system's key where attaching processes of this user look for it."""
    from actors import transport_auth

    transport_auth.publish_key(port, key)


def _install_client_key(port: int, wait_s: float = 10.0) -> None:
    """Install the key of the system on ``port``. A system publishes its key file just after its admin
    binds the port, so a client that saw the port listening may wait that moment for the file."""
    from actors import transport_auth

    deadline = time.monotonic() + wait_s
    while (not os.path.exists(transport_auth.key_path(port)) and transport_auth.configured_key() is None
           and time.monotonic() < deadline and listener_pid(port) is not None):
        time.sleep(0.02)  # waits on the file's appearance (a condition), bounded
    try:
        transport_auth.install(port, transport_auth.client_key(port))
    except transport_auth.TransportKeyError as e:
        raise TransportAuthError(e.reason, e.detail) from None


def transport_rejections(port: int) -> int:
    """Messages the system on ``port`` dropped because they failed authentication (this host)."""
    from actors import transport_auth

    return transport_auth.rejected_count(port)


# --------------------------------------------------------------------------- attach / start / stop


def attach_system(port: int, multi_host: bool = False) -> Any:
    """An external ``ActorSystem`` handle on the system whose admin listens on ``port``.

    TransportAuthError when this process has no usable key for it; RuntimeStartError when
    the admin does not answer (a key given in the environment that differs from the remote
    system's ends here too: its admin drops every message of ours).
    """
    check_port(port)
    enforce_loopback(multi_host)
    from thespian.actors import ActorSystem

    if listener_pid(port) is None:
        raise RuntimeStartError(f"no actor system listens on port {port}")
    from actors import transport_auth

    error: Exception | None = None
    for _ in range(2):
        _install_client_key(port)
        used = transport_auth.installed_key(port)
        dropped = transport_auth.rejected_count(port)
        try:
            return ActorSystem(SYSTEM_BASE, {"Admin Port": port}, transientUnique=True)
        except Exception as e:
            error = e
        # Once more only when the port's key file changed meanwhile (a system that had this port before
        # left its file, and the new one's replaced it): a key read a moment too early, not a wrong one.
        try:
            changed = transport_auth.client_key(port) != used
        except transport_auth.TransportKeyError:
            changed = False
        if not changed:
            break
    raise RuntimeStartError(f"the actor system on port {port} did not answer ({error!r}; it dropped "
                            f"{transport_auth.rejected_count(port) - dropped} unauthenticated messages meanwhile); "
                            "if it runs on another host or was started with its own transport key, set the same "
                            "key in LLAMA_ACTORS_TRANSPORT_KEY or LLAMA_ACTORS_TRANSPORT_KEY_FILE") from None


def detach(asys: Any) -> None:
    """Close this process's own endpoint of an attached system (the system itself keeps running)."""
    with contextlib.suppress(Exception):
        asys._systemBase.transport.close()


def ask(asys: Any, addr: Any, msg: Any, timeout: float) -> Any:
    """Send ``msg`` through a private context and return the reply with the same ``req_id``.

    ``ActorSystem.ask`` returns whatever reaches the asking context first, so
    replies to other requests are skipped. A message with an empty ``req_id``
    gets a fresh one; a message without the field takes the first reply.
    Raises TimeoutError rather than hanging or returning None.
    """
    req_id = getattr(msg, "req_id", None)
    if req_id == "":
        req_id = uuid.uuid4().hex
        msg = replace(msg, req_id=req_id)
    deadline = time.monotonic() + timeout
    with asys.private() as ctx:
        reply = ctx.ask(addr, msg, timeout)
        while True:
            if reply is None:
                raise TimeoutError(f"no reply to {type(msg).__name__} within {timeout}s")
            if req_id is None or getattr(reply, "req_id", None) == req_id:
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


def _import_path() -> str:
    """PYTHONPATH for the serve process: the package root, then the caller's own entries
    (its script's folder, test folders, PYTHONPATH), so actors defined there can be created."""
    installed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    own = [os.path.abspath(p) for p in sys.path if p and os.path.isdir(p)
           and not any(os.path.realpath(p).startswith(root + os.sep) for root in installed)]
    return os.pathsep.join(dict.fromkeys([_package_root(), *own]))


def start(port: int | None = None, cache_config: Any = None, multi_host: bool = False, timeout: float = 60.0,
          log_path: str | None = None, *, thinking_key: Any = None, pressure: dict[str, Any] | None = None,
          cores: int | None = None, tree: bool = True) -> Started:
    """Start a new actor system in a fresh ``serve`` process and wait until it is ready.

    ``tree=True``: with the supervision tree (root, cache, model supervisor);
    ``tree=False``: a bare system for the caller's own actors (``actors.system``).
    The node options ``thinking_key`` (``actors.secret.Secret``), ``pressure`` (PressureStart
    fields) and ``cores`` (the node's core budget) are ``TreeStart`` fields; they travel with the
    cache configuration in a private temporary file, never on the command line (an option left
    at None is not sent, so the tree's own default applies).
    """
    import pickle
    import tempfile

    attempts = 3 if port is None else 1
    last = ""
    for _ in range(attempts):
        p = free_port() if port is None else port
        check_port(p)
        env = dict(os.environ)
        env["PYTHONPATH"] = _import_path()
        if not multi_host:
            env["THESPIAN_BASE_IPADDR"] = LOOPBACK
        args = [sys.executable, "-m", "actors.supervisor.serve", "--port", str(p), "--ready-stdout"]
        if multi_host:
            args.append("--multi-host")
        if not tree:
            args.append("--bare")
        cfg_file = None
        options = {k: v for k, v in (("thinking_key", thinking_key), ("pressure", pressure or None),
                                     ("cores", cores)) if v is not None}
        if cache_config is not None or options:
            fd, cfg_file = tempfile.mkstemp(prefix="llama-actors-node-", suffix=".pickle")  # mode 0600
            with os.fdopen(fd, "wb") as f:
                pickle.dump({"cache_config": cache_config, "tree_options": options}, f)
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
         graceful: bool = True, timeout: float = 30.0, asys: Any = None) -> None:
    """Stop the system on ``port`` and prove no process of it is left (LeftoverProcesses otherwise).

    ``graceful``: ask the tree to stop first (sessions saved); a bare system has no tree to ask.
    ``asys``: an attached handle to shut down with (default: attach anew).
    """
    admin_pid = admin_pid or listener_pid(port)
    sid = admin_session(admin_pid)
    try:
        if admin_pid is not None:
            asys = asys if asys is not None else attach_system(port)
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
        with contextlib.suppress(OSError):
            from actors import transport_auth

            transport_auth.remove_files(port, transport_auth.installed_key(port))
            transport_auth.forget(port)
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


