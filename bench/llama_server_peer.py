"""llama.cpp's own ``llama-server`` as a peer: built from the vendored tree, started and stopped by the bench.

Why this peer: it is what a user would run instead of us.  It keeps a
host-memory prompt cache (``--cache-ram``) and swaps conversations in by
prefix similarity, so it is the fair opponent for warm prompts.  It is
built by ``scripts/build_llama.py`` in the same build directory as our
static libraries, so it is compiled with exactly our CMake arguments
(``GGML_NATIVE=OFF``, the CPU's x86 features named one by one, never AMX)
and from the same commit.  It binds loopback only and needs no network at
run time (the web UI is not embedded: no assets are fetched at build time).

``LlamaServer`` is an ``http_servers.ServerProcess`` (the one way the bench
starts and stops a server process): started with one slot, the given
threads and prompt cache, waited on through ``/health``, and stopped by its
pid in ``finally`` (SIGTERM, then SIGKILL), whatever happened in between.
``ServerClient`` speaks the native ``/completion`` endpoint with token ids
(so both engines see identical prompts) and keeps one persistent HTTP
connection, as a real client would.
"""

from __future__ import annotations

import http.client
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import build_llama  # noqa: E402
from http_servers import LOOPBACK, ServerProcess, free_port  # noqa: E402


def server_binary() -> Path:
    """The llama-server executable, built once (cached by CMake) from the vendored tree with our flags."""
    bdir = build_llama.build_dir()
    exe = bdir / "bin" / "llama-server"
    if not exe.exists():
        build_llama.build(["llama-server"], bdir)
    return exe


@dataclass(frozen=True)
class ServerOptions:
    model: str
    threads: int
    n_ctx: int
    cache_ram_mib: int = 8192  # llama-server's own default; 0 disables, -1 unlimited
    slots: int = 1
    n_batch: int = 512


def server_args(exe: Path, opts: ServerOptions, port: int) -> list[str]:
    return [str(exe), "-m", opts.model, "--host", LOOPBACK, "--port", str(port), "-t", str(opts.threads),
            "-tb", str(opts.threads), "-c", str(opts.n_ctx), "-np", str(opts.slots), "-b", str(opts.n_batch),
            "-ub", str(opts.n_batch), "--cache-ram", str(opts.cache_ram_mib), "--no-webui", "--no-warmup",
            "--metrics"]


class LlamaServer(ServerProcess):
    """One llama-server process for the duration of a ``with`` block (waited on through ``/health``)."""

    def __init__(self, opts: ServerOptions, start_timeout: float = 120.0) -> None:
        super().__init__("llama-server", [], free_port(), "/health", start_timeout=start_timeout)
        self.opts = opts

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def __enter__(self) -> LlamaServer:
        self.cmd = server_args(server_binary(), self.opts, self.port)  # built here, on first use
        super().__enter__()
        return self

    def client(self) -> ServerClient:
        return ServerClient(LOOPBACK, self.port)


class JsonClient:
    """JSON POSTs over one keep-alive connection, as a real client keeps one.

    A server may close a connection that sat idle (llama-server after a few
    seconds); the request is then sent once more on a new connection.
    """

    def __init__(self, host: str, port: int, timeout: float = 600.0) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        for attempt in (0, 1):
            try:
                self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                payload = resp.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest):
                self.conn.close()
                if attempt:
                    raise
        if resp.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {resp.status}: {payload[:500]!r}")
        return dict(json.loads(payload))

    def close(self) -> None:
        self.conn.close()


class ServerClient(JsonClient):
    """llama-server's native ``/completion`` with token ids."""

    def complete(self, prompt: list[int], max_tokens: int) -> dict[str, Any]:
        """Greedy, prompt cache on; returns the reply tokens and the server's own timings."""
        r = self.post("/completion", {"prompt": prompt, "n_predict": max_tokens, "cache_prompt": True,
                                      "temperature": 0.0, "top_k": 1, "return_tokens": True, "stream": False})
        t = r.get("timings", {})
        n, decode_s = int(t.get("predicted_n", 0)), float(t.get("predicted_ms", 0.0)) / 1e3
        # predicted_ms runs from the first token (sampled from the prompt's logits, no decode) to the
        # last, so it covers n - 1 decodes; the server's predicted_per_second divides by n. Ours and
        # this figure both divide by the decodes done.
        return {"tokens": list(r.get("tokens") or []), "evaluated": int(t.get("prompt_n", 0)),
                "cached": int(t.get("cache_n", 0)), "prefill_s": float(t.get("prompt_ms", 0.0)) / 1e3,
                "decode_s": decode_s, "generated": n,
                "decode_tok_s": (n - 1) / decode_s if n > 1 and decode_s > 0 else 0.0}


__all__ = ["JsonClient", "LlamaServer", "ServerClient", "ServerOptions", "server_binary"]
