"""Run the HTTP front door: uvicorn on its own thread and event loop, beside a ``System`` client.

``llama-actors serve --http HOST:PORT`` runs it in the serve process, on
the ``System`` that process already holds: the server is one more client
of the tree (one inbox thread, messages to the model supervisor), it
stops with the node, and no extra process has to be supervised.  It is
never inside a model process, so a model crash cannot take it down; it
answers that model's requests with an error and serves the others.

The socket is bound here, before the thread starts, so a taken port or
a refused address is an exception in the caller, and port 0 picks a
free port (``HttpServer.port``).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import TYPE_CHECKING

from actors.api import System
from actors.config import HttpSettings

if TYPE_CHECKING:
    from actors.http.service import Gateway


class BindRefused(ValueError):
    """A non-loopback address without an API key."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: HttpSettings) -> None:
    if not is_loopback(settings.bind) and not settings.api_keys:
        raise BindRefused(f"refusing to serve HTTP on {settings.bind}: a non-loopback address needs at least one "
                          "API key ([http] api_keys in the config); bind 127.0.0.1 to serve this host only")


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--http: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class HttpServer:
    """``start()`` binds and serves in a thread; ``stop()`` ends it (idempotent)."""

    def __init__(self, system: System, settings: HttpSettings) -> None:
        check_bind(settings)
        self.system = system
        self.settings = settings
        self.port = 0
        self._server = None
        self._thread: threading.Thread | None = None
        self._gateway = None

    def start(self, timeout: float = 30.0) -> HttpServer:
        import uvicorn

        from actors.http.app import create_app
        from actors.http.service import Gateway

        family = socket.AF_INET6 if ":" in self.settings.bind else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose ``proto`` says
        # TCP, and accepted sockets inherit it.  With proto 0 every streamed event after the headers
        # waited for the client's delayed ACK (~40 ms on Linux) before it left this host.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.settings.bind, self.settings.port))
        except OSError as e:
            sock.close()
            where = f"{self.settings.bind}:{self.settings.port}"
            raise OSError(e.errno, f"cannot bind HTTP {where}: {e.strerror}") from None
        self.port = sock.getsockname()[1]
        gw = Gateway(self.system, self.settings)
        self._gateway = gw
        config = uvicorn.Config(create_app(gw, self.settings), log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=2, timeout_keep_alive=30)
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="llama-actors-http",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)
        return self

    @property
    def gateway(self) -> Gateway | None:
        """The running server's ``Gateway`` (None when stopped): its bridge, metrics and queue places."""
        return self._gateway

    @property
    def url(self) -> str:
        host = f"[{self.settings.bind}]" if ":" in self.settings.bind else self.settings.bind
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._gateway is not None:
            self._gateway.close()
            self._gateway = None

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["BindRefused", "HttpServer", "check_bind", "is_loopback", "parse_host_port"]
