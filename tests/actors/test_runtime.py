"""Bootstrap: loopback-only sockets, daemon mode with attach from another process, clean stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from actors.api import System
from actors.obs import obs_path
from actors.supervisor import runtime
from actors.supervisor.runtime import alive
from tests.actors.conftest import cache_config, running_system

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_every_listening_socket_is_loopback_and_stop_leaves_nothing(tmp_path: Path) -> None:
    with running_system(tmp_path) as system:
        system.load_model("stub", backend="stub")
        assert system.complete("stub", "hello", max_tokens=3).finish_reason == "length"
        pids = system.pids()
        assert len(pids) >= 8  # admin, logger, root, cache sup, meta, 2 writers, model sup, model
        socks = runtime.listening_sockets(pids)
        assert socks and {addr for _pid, addr, _port in socks} == {"127.0.0.1"}, socks
        assert any(port == system.port for _pid, _addr, port in socks)
        # this client's own thespian endpoints listen on loopback too
        mine = runtime.listening_sockets([os.getpid()])
        assert mine and {addr for _pid, addr, _port in mine} == {"127.0.0.1"}, mine
        table = obs_path(system.port)
        assert os.path.exists(table)
    assert not alive(pids)
    assert not os.path.exists(table)
    assert runtime.listener_pid(system.port) is None


def test_refuses_default_admin_port() -> None:
    with pytest.raises(runtime.RuntimeStartError):
        System(port=1900)
    with pytest.raises(runtime.RuntimeStartError):
        System.attach(1900)


def test_attach_to_nothing_is_clear_error() -> None:
    with pytest.raises(runtime.RuntimeStartError):
        System.attach(runtime.free_port())


@pytest.mark.timeout(180)
def test_daemon_other_shells_attach_and_stop(tmp_path: Path) -> None:
    import pickle

    port = runtime.free_port()
    cfg_file = tmp_path / "node.pickle"
    cfg_file.write_bytes(pickle.dumps({"cache_config": cache_config(tmp_path)}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    serve = subprocess.Popen([sys.executable, "-m", "actors.supervisor.serve", "--port", str(port),
                              "--node-pickle", str(cfg_file), "--log", str(tmp_path / "serve.log")],
                             env=env, cwd=ROOT, start_new_session=True)
    pids: list[int] = []
    try:
        assert runtime.wait_listener(port, 60) is not None  # the admin is up
        with System.attach(port) as system:  # attach waits until the tree reports it is running
            system.load_model("stub", backend="stub")
            pids = system.pids()
        # attaching and detaching did not stop anything; another shell uses it, and reads obs without messages
        script = textwrap.dedent(f"""
            import json
            from actors.api import System
            with System.attach({port}) as s:
                r = s.complete("stub", "hi there", max_tokens=4)
                o = s.observe("stub")
                print(json.dumps({{"reply": r.reply, "phase": o.phase, "hit": o.last_cache_hit,
                                   "depth": s.queue_depth()}}))
        """)
        out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert len(got["reply"]) == 4 and got["phase"] == "idle" and got["hit"]["kind"] == "cold"
        assert got["depth"] == 0
        stop = subprocess.run([sys.executable, "-m", "actors", "stop", "--port", str(port)],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr
        serve.wait(30)
    finally:
        if serve.poll() is None:
            serve.terminate()
            serve.wait(30)
        if runtime.listener_pid(port) is not None:
            runtime.stop(port)
    assert not alive(pids)
    assert runtime.listener_pid(port) is None
    assert not psutil.pid_exists(serve.pid) or psutil.Process(serve.pid).status() == psutil.STATUS_ZOMBIE


def test_bootstrap_never_imports_the_client() -> None:
    """One bootstrap, no import circle: runtime and the serve entry stand without actors.api."""
    script = ("import sys, actors.supervisor.runtime, actors.supervisor.serve, actors.system; "
              "print(sorted(m for m in sys.modules if m == 'actors.api' or m.startswith('actors.http')))")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
