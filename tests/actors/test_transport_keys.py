"""Key files belong to the system that holds the port: a stale cleanup never removes a newer system's key."""

from __future__ import annotations

import os
import secrets

import pytest

from actors import transport_auth
from actors.secret import Secret


@pytest.fixture()
def free_key_port() -> int:
    # a port number no test system binds (below 1024), one per test process: only the key file's name matters
    return 1 + os.getpid() % 1000


def test_remove_files_leaves_a_newer_systems_key(free_key_port: int) -> None:
    old, new = Secret(secrets.token_bytes(32)), Secret(secrets.token_bytes(32))
    transport_auth.publish_key(free_key_port, new)  # the port's new owner wrote its key
    try:
        transport_auth.remove_files(free_key_port, old)  # the old system's late cleanup
        with open(transport_auth.key_path(free_key_port), "rb") as f:
            assert f.read() == new.reveal()
        transport_auth.remove_files(free_key_port, new)  # its owner's cleanup removes it
        assert not os.path.exists(transport_auth.key_path(free_key_port))
    finally:
        transport_auth.remove_files(free_key_port, new)


def test_a_published_key_is_private(free_key_port: int) -> None:
    key = Secret(secrets.token_bytes(32))
    transport_auth.publish_key(free_key_port, key)
    try:
        assert os.stat(transport_auth.key_path(free_key_port)).st_mode & 0o777 == 0o600
        assert transport_auth.client_key(free_key_port) == key
    finally:
        transport_auth.remove_files(free_key_port, key)
