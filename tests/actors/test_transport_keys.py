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
    old, new = Secret(secrets.token_hex(32).encode()), Secret(secrets.token_hex(32).encode())
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
    key = Secret(secrets.token_hex(32).encode())
    transport_auth.publish_key(free_key_port, key)
    try:
        assert os.stat(transport_auth.key_path(free_key_port)).st_mode & 0o777 == 0o600
        assert transport_auth.client_key(free_key_port) == key
    finally:
        transport_auth.remove_files(free_key_port, key)


def test_every_fresh_key_reads_back_as_itself(free_key_port: int) -> None:
    # A raw random key that began or ended with a whitespace byte came back shorter from its file
    # (about one system in twenty), and every client of that system was then refused.
    for _ in range(200):
        key = transport_auth.server_key()
        transport_auth.publish_key(free_key_port, key)
        try:
            assert transport_auth.client_key(free_key_port) == key
        finally:
            transport_auth.remove_files(free_key_port, key)
        assert not os.path.exists(transport_auth.key_path(free_key_port))


def test_a_key_that_would_not_read_back_is_refused(free_key_port: int) -> None:
    with pytest.raises(transport_auth.TransportKeyError) as e:
        transport_auth.publish_key(free_key_port, Secret(b"\n" + secrets.token_hex(32).encode()))
    assert e.value.reason == "key_not_text"
    assert not os.path.exists(transport_auth.key_path(free_key_port))
