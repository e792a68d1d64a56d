"""The daemon: run an actor system in this (fresh) process until SIGTERM/SIGINT or until its admin dies.

``actors.supervisor.runtime.start`` runs ``python -m actors.supervisor.serve`` and
attaches to it; ``python -m actors serve`` gets there through ``actors.api.System``.
Everything about ports, loopback and process hygiene comes from ``runtime``; this
module only brings the system (and, unless ``--bare``, the supervision tree) up,
prints one ``READY {json}`` (or ``ERROR ...``) line, and takes it down again.
It never imports the client (``actors.api``).

    python -m actors.supervisor.serve --port 7700 [--cache-dir DIR] [--multi-host] [--bare]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from typing import Any

import psutil

from actors.supervisor import runtime
from actors.supervisor.root_watch import EXIT_ROOT_FAILED, RootWatch, Verdict


def serve(port: int, cache_config: Any = None, multi_host: bool = False, ready_fd: int | None = None,
          remove_run_dir: bool = False, tree_options: dict[str, Any] | None = None, tree: bool = True) -> int:
    """Run the system in this (fresh) process until SIGTERM/SIGINT or until the admin dies.

    ``remove_run_dir``: the cache's run directory (staging, counters, snapshots) was made for
    this run only; delete it on the way out. ``tree_options``: node-wide ``TreeStart`` fields
    (``thinking_key``, ``pressure``, ``cores``). ``tree=False``: a bare system, no supervision tree.
    """
    try:
        return _serve(port, cache_config, multi_host, ready_fd, tree_options or {}, tree)
    finally:
        if remove_run_dir and cache_config is not None:
            import shutil

            shutil.rmtree(cache_config.run_dir, ignore_errors=True)


def _serve(port: int, cache_config: Any, multi_host: bool, ready_fd: int | None, tree_options: dict[str, Any],
           tree: bool) -> int:
    def report(line: str) -> None:
        if ready_fd is not None:
            os.write(ready_fd, (line + "\n").encode())
        else:
            print(line, flush=True)

    runtime.enforce_loopback(multi_host)
    try:
        runtime.check_port(port)
    except runtime.RuntimeStartError as e:
        report(f"ERROR {e}")
        return 2
    if runtime.listener_pid(port) is not None:
        report(f"ERROR port_in_use {port}")
        return 2
    try:
        key = runtime.secure_transport(port)  # before the admin forks: every actor process inherits it
    except (runtime.RuntimeStartError, OSError) as e:
        report(f"ERROR {e}")
        return 2
    published: list[bool] = []
    try:
        return _serve_secured(port, cache_config=cache_config, tree=tree, tree_options=tree_options,
                              report=report, ready_fd=ready_fd, key=key, published=published)
    finally:
        if published:  # never the key file of another system that won this port, or took it since
            from actors import transport_auth

            with contextlib.suppress(OSError):
                transport_auth.remove_files(port, key)


def _serve_secured(port: int, cache_config: Any, tree: bool, tree_options: dict[str, Any],
                   report: Any, ready_fd: int | None, key: Any, published: list[bool]) -> int:
    """The system's life once its transport is secured: admin, tree, READY, wait, shut down."""
    from thespian.actors import ActorSystem

    from actors.cache.config import CacheConfig
    from actors.obs import ObsTable, obs_path
    from actors.supervisor import messages as sm

    config = (cache_config or CacheConfig.create()) if tree else None
    if tree:
        ObsTable(obs_path(port), create=True).close()
    try:
        asys = ActorSystem(runtime.SYSTEM_BASE, {"Admin Port": port}, transientUnique=True)
    except Exception as e:
        taken = "in use" in str(e).lower() or runtime.listener_pid(port) is not None
        report(f"ERROR port_in_use {e!r}" if taken else f"ERROR {e!r}")
        return 2
    # The admin answered a message signed with our fresh key, so it is ours: a system that won this
    # port between our check and the bind would have dropped it (and we report port_in_use above).
    runtime.publish_transport_key(port, key)
    published.append(True)
    admin_pid = runtime.wait_listener(port, 10.0)
    ready: dict[str, Any] = {"port": port, "admin_pid": admin_pid, "pid": os.getpid()}
    if tree:
        assert config is not None
        watch: RootWatch | None = None
        try:
            root = runtime.find_root(asys)
            start_msg = sm.TreeStart(req_id="start", cache_config=config, admin_port=port, obs_path=obs_path(port),
                                     **tree_options)
            started = runtime.ask(asys, root, start_msg, 60.0)
            if isinstance(started, sm.TreeFailed):
                raise runtime.RuntimeStartError(started.detail)
            watch = RootWatch(asys, start_msg, started.info)  # nothing else restarts a dead root
        except Exception as e:
            report(f"ERROR {e!r}")
            with contextlib.suppress(Exception):
                asys.shutdown()
            return 1
        ready.update(run_dir=config.run_dir, obs_path=obs_path(port))
    report("READY " + json.dumps(ready))
    if ready_fd is not None:
        os.close(ready_fd)
    stop_evt = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_evt.set())
    status = 0
    while not stop_evt.wait(0.5):
        if admin_pid is not None and not psutil.pid_exists(admin_pid):
            return 0  # stopped from elsewhere
        if watch is not None and watch.tick() is Verdict.GIVE_UP:
            status = EXIT_ROOT_FAILED  # stop everything; a process manager starts the system again
            break
    if admin_pid is not None and not psutil.pid_exists(admin_pid):
        return 0  # a client already shut it down and then signalled us
    if tree:
        with contextlib.suppress(Exception):
            runtime.graceful_stop(asys, 30.0)
    with contextlib.suppress(Exception):
        asys.shutdown()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(obs_path(port))
    return status


def main(argv: list[str] | None = None) -> int:
    import pickle

    from actors.cache.config import CacheConfig

    ap = argparse.ArgumentParser(prog="python -m actors.supervisor.serve",
                                 description="run an actor system in the foreground until SIGTERM/SIGINT")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cache-dir", help="disk tier directory (default: ram tier only)")
    ap.add_argument("--node-pickle", help=argparse.SUPPRESS)
    ap.add_argument("--multi-host", action="store_true", help="listen on all interfaces (trusted networks only)")
    ap.add_argument("--bare", action="store_true", help="no supervision tree: a system for your own actors")
    ap.add_argument("--ready-stdout", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--log", help="file for thespian and actor output (default: the run directory)")
    a = ap.parse_args(argv)
    # Everything this system writes (the run directory, staging files, rows, logs, every forked
    # actor's files) is private to the user, even where a creator forgets to say so.
    os.umask(0o077)
    config = None
    temporary = False
    node: dict[str, Any] = {}
    if a.node_pickle:
        with open(a.node_pickle, "rb") as f:
            node = pickle.load(f)  # written by runtime.start() in this user's temp dir, mode 0600
        config = node.get("cache_config")
    if a.bare:
        config = None
    elif config is not None:
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
    if a.log:
        log = a.log
    elif config is not None and not temporary:
        log = os.path.join(config.run_dir, f"serve-{a.port}.log")
    else:
        log = os.devnull
    if log != os.devnull:
        os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if a.ready_stdout:
        os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return serve(a.port, config, a.multi_host, ready_fd, remove_run_dir=temporary,
                 tree_options=node.get("tree_options"), tree=not a.bare)


if __name__ == "__main__":
    sys.exit(main())
