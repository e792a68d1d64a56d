"""The authenticated transport: nothing unpickles a byte that does not carry the system's key.

What a user checks: a local process that connects to the admin's or a model's port and sends a
pickle that would create a file gets nothing done (no file), the system serves on and counts the
drop; another shell of the same user still attaches with no extra step; a wrong key is refused
with a clear, machine-readable reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import transport_auth as ta
from actors.api import System
from actors.private_files import is_private_file
from actors.secret import Secret
from actors.supervisor import runtime
from tests.actors.conftest import running_system
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


class _CreatesFile:
    """Unpickling this opens ``path`` for writing: the file appears if anyone unpickles it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (io.open, (self.path, "w"))


def _send_raw(port: int, body: bytes) -> bytes:
    """Send one thespian frame (``b"%d>" % len(body) + body``) and return what comes back until the peer closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"%d>" % len(body) + body)
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return got
            got += chunk


def test_the_payload_would_create_a_file_if_unpickled(tmp_path: Path) -> None:
    target = tmp_path / "proof"
    pickle.loads(pickle.dumps(_CreatesFile(str(target)))).close()
    assert target.exists()


@pytest.mark.timeout(120)
def test_raw_pickles_to_admin_and_model_ports_run_nothing(tmp_path: Path) -> None:
    with running_system(tmp_path / "sys") as s:
        s.load_model("m", backend="stub")
        match = re.search(r":(\d+)\)$", s.model_address("m"))
        assert match, s.model_address("m")
        model_port = int(match.group(1))
        before = runtime.transport_rejections(s.port)
        targets = {"admin": s.port, "model": model_port}
        for name, port in targets.items():
            marker = tmp_path / f"pwned-{name}"
            # unsigned, and signed with a key that is not the system's
            for body in (pickle.dumps(_CreatesFile(str(marker))),
                         ta.sign(Secret(b"w" * 32), pickle.dumps(_CreatesFile(str(marker))))):
                reply = _send_raw(port, body)
                assert b"ACK+DATAERR" in reply  # thespian's refusal, and the connection closed
            assert not marker.exists(), f"a pickle sent to the {name} port was unpickled"
        assert wait_until(lambda: runtime.transport_rejections(s.port) >= before + 4, 10)
        # The model process's other thespian endpoints (its outbox's) read only while the outbox
        # sends through thespian, through the same check: a pickle left on each must not run either.
        others = [port for _pid, _addr, port in runtime.listening_sockets([s.status("m")["pid"]])
                  if port != model_port]
        marker = tmp_path / "pwned-outbox"
        with contextlib.ExitStack() as stack:
            for port in others:
                conn = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
                body = pickle.dumps(_CreatesFile(str(marker)))
                conn.sendall(b"%d>" % len(body) + body)
            for _ in range(3):
                assert s.complete("m", "still serving", max_tokens=3).finish_reason == "length"
        assert not marker.exists()
        out = subprocess.run([sys.executable, "-m", "actors", "status", "--port", str(s.port)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["transport"]["rejected"] >= 4


@pytest.mark.timeout(120)
def test_another_process_attaches_with_no_extra_step_and_a_wrong_key_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_system(tmp_path) as s:
        s.load_model("m", backend="stub")
        key_file = ta.key_path(s.port)
        assert is_private_file(key_file) and oct(os.stat(os.path.dirname(key_file)).st_mode & 0o777) == "0o700"
        script = ("from actors.api import System\n"
                  f"with System.attach({s.port}) as t:\n"
                  "    print(t.complete('m', 'from another shell', max_tokens=2).finish_reason)\n")
        env = {k: v for k, v in os.environ.items() if k not in (ta.KEY_ENV, ta.KEY_FILE_ENV)}
        out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == "length", out.stderr
        monkeypatch.setenv(ta.KEY_ENV, "not the key of this system")
        with pytest.raises(runtime.TransportAuthError) as e:
            System.attach(s.port)
        assert e.value.reason == "key_mismatch"
        monkeypatch.setenv(ta.KEY_ENV, "short")
        with pytest.raises(runtime.TransportAuthError) as e:
            System.attach(s.port)
        assert e.value.reason == "weak_key"
        monkeypatch.delenv(ta.KEY_ENV)
        assert s.complete("m", "unharmed", max_tokens=2).finish_reason == "length"
        port = s.port
    assert not os.path.exists(ta.key_path(port))  # the key goes with the system


@pytest.mark.timeout(120)
def test_a_system_started_with_a_configured_key_admits_only_that_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "shared.key"
    key_file.write_bytes(os.urandom(24).hex().encode())
    key_file.chmod(0o644)
    monkeypatch.setenv(ta.KEY_FILE_ENV, str(key_file))
    with pytest.raises(runtime.RuntimeStartError, match="key_not_private"):
        System(port=runtime.free_port(), start_timeout=30)
    key_file.chmod(0o600)
    with running_system(tmp_path / "sys") as s:  # the serve process inherits the key from the environment
        assert ta.client_key(s.port) == Secret(key_file.read_bytes().strip())
        monkeypatch.delenv(ta.KEY_FILE_ENV)
        with System.attach(s.port) as other:  # the same user, no key configured: the key file still works
            assert other.list_models() == []


def test_no_key_for_a_port_is_a_clear_error() -> None:
    port = runtime.free_port()
    with pytest.raises(ta.TransportKeyError) as e:
        ta.client_key(port)
    assert e.value.reason == "no_key" and str(port) in str(e.value)


@given(key=st.binary(min_size=16, max_size=64), other=st.binary(min_size=16, max_size=64),
       body=st.binary(max_size=256), flip=st.integers(min_value=0))
def test_a_frame_verifies_only_under_its_own_key_and_only_untouched(key: bytes, other: bytes, body: bytes,
                                                                    flip: int) -> None:
    frame = ta.sign(Secret(key), body)
    assert ta.verify([Secret(key)], frame) == body
    assert ta.verify([Secret(other), Secret(key)], frame) == body
    if other != key:
        assert ta.verify([Secret(other)], frame) is None
    i = flip % len(frame)
    tampered = frame[:i] + bytes([frame[i] ^ 0x01]) + frame[i + 1:]
    assert ta.verify([Secret(key)], tampered) is None
    assert ta.verify([Secret(key)], body) is None  # an unsigned body never passes
