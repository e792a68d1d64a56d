"""Operations and faults: health, metrics, backpressure, disconnects, crashes, keys, loopback, the CLI flag."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.config import HttpSettings
from actors.http.server import BindRefused, HttpServer
from actors.secret import Secret
from actors.supervisor.runtime import alive
from tests.http.conftest import Served

LONG = {"max_tokens": 4000, "temperature": 0}


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def idle(served: Served, model: str) -> bool:
    rec = served.system.observe(model)
    return rec is not None and rec.phase == "idle" and rec.pending_len == 0 and rec.queue_depth == 0


@contextlib.contextmanager
def open_stream(served: Served, path: str, body: dict[str, Any]) -> Iterator[httpx.Response]:
    """A streaming request whose first bytes have arrived (so the server has admitted it)."""
    with httpx.Client(timeout=60) as c, c.stream("POST", served.url + path, json=body) as r:
        assert r.status_code == 200
        chunks = r.iter_raw()  # kept: a dropped iterator closes the response (a disconnect)
        next(chunks)
        yield r


def test_health_reports_every_model(served: Served) -> None:
    r = httpx.get(served.url + "/health", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    models = r.json()["models"]
    assert set(models) == {"smol", "stub", "crashy"}
    assert all(m["state"] == "ready" and m["phase"] in ("idle", "generating", "prefilling") for m in models.values())


def test_metrics_in_prometheus_text(served: Served) -> None:
    c = openai.OpenAI(base_url=served.url + "/v1", api_key="x", max_retries=0)
    c.chat.completions.create(model="stub", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    r = httpx.get(served.url + "/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(r.text) for s in fam.samples}
    names = {name for name, _ in samples}
    assert samples[("llama_actors_http_requests_total", (("endpoint", "chat.completions"), ("status", "200")))] >= 1
    assert samples[("llama_actors_tokens_total", (("direction", "out"), ("model", "stub")))] >= 4
    assert {"llama_actors_http_ttft_seconds_bucket", "llama_actors_decode_tokens_per_second_bucket",
            "llama_actors_request_cache_hits_total", "llama_actors_cache_lookups_total", "llama_actors_cache_bytes",
            "llama_actors_queue_depth", "llama_actors_model_restarts", "llama_actors_model_phase"} <= names
    assert ("llama_actors_cache_bytes", (("tier", "ram"),)) in samples


def test_full_queue_answers_429_and_529(served: Served) -> None:
    body = {"model": "stub", "messages": [{"role": "user", "content": "go"}], "stream": True, **LONG}
    oa = openai.OpenAI(base_url=served.url + "/v1", api_key="x", max_retries=0)
    an = anthropic.Anthropic(base_url=served.url, api_key="x", max_retries=0)
    with open_stream(served, "/v1/chat/completions", body), open_stream(served, "/v1/chat/completions", body):
        with pytest.raises(openai.RateLimitError) as e:
            oa.chat.completions.create(model="stub", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert e.value.response.headers["retry-after"] == "1"
        assert e.value.body["code"] == "overloaded"
        with pytest.raises(anthropic.APIStatusError) as e2:
            an.messages.create(model="stub", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert e2.value.status_code == 529 and e2.value.body["error"]["type"] == "overloaded_error"
        # Other models are not affected by the stub's full queue.
        assert oa.completions.create(model="smol", prompt="Hi", max_tokens=1, temperature=0).choices
    # Both streams were dropped by their clients: the places come back and the model goes idle.
    wait_for(lambda: idle(served, "stub"), what="stub idle")
    r = oa.chat.completions.create(model="stub", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert r.choices[0].message.content


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_client_disconnect_cancels_the_request(served: Served, path: str) -> None:
    body = {"model": "stub", "messages": [{"role": "user", "content": "go"}], "stream": True, **LONG}
    with open_stream(served, path, body):
        wait_for(lambda: served.system.observe("stub").phase == "generating", what="stub generating")
    # 4000 tokens at 20 ms a step would take 80 s: idle now means the disconnect cancelled it.
    wait_for(lambda: idle(served, "stub"), timeout=10.0, what="stub idle after the disconnect")


def test_a_plain_request_whose_client_gives_up_is_cancelled(served: Served) -> None:
    body = {"model": "stub", "messages": [{"role": "user", "content": "go"}], **LONG}
    with pytest.raises(httpx.ReadTimeout):  # the client stops waiting and closes its connection
        httpx.post(served.url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(30, read=0.5))
    wait_for(lambda: idle(served, "stub"), timeout=10.0, what="stub idle after the client gave up")


def test_killed_model_ends_the_stream_with_an_error(served: Served) -> None:
    c = openai.OpenAI(base_url=served.url + "/v1", api_key="x", max_retries=0, timeout=60)
    entry = next(m for m in served.system.list_models() if m["model_id"] == "crashy")
    stream = c.chat.completions.create(model="crashy", messages=[{"role": "user", "content": "go"}], stream=True,
                                       **LONG)
    it = iter(stream)
    next(it)
    os.kill(entry["pid"], signal.SIGKILL)
    with pytest.raises(openai.APIError) as e:
        for _ in it:
            pass
    assert not isinstance(e.value, openai.APIConnectionError)  # an error event, not a timeout or a cut connection
    assert e.value.body["code"] == "model_crashed"
    # The supervisor restarts it; health says so.
    wait_for(lambda: httpx.get(served.url + "/health", timeout=30).json()["models"]["crashy"]["restarts"] >= 1
             and httpx.get(served.url + "/health", timeout=30).status_code == 200, timeout=90, what="crashy restarted")
    r = c.chat.completions.create(model="crashy", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert r.choices[0].message.content
    # The Anthropic stream ends with its documented ``error`` event.
    body = {"model": "crashy", "messages": [{"role": "user", "content": "go"}], "stream": True, **LONG}
    pid = next(m for m in served.system.list_models() if m["model_id"] == "crashy")["pid"]
    with httpx.Client(timeout=60) as hc, hc.stream("POST", served.url + "/v1/messages", json=body) as resp:
        events = []
        for line in resp.iter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
                if events[-1] == "content_block_delta" and len(events) == 4:
                    os.kill(pid, signal.SIGKILL)
    assert events[-1] == "error" and "message_stop" not in events


def listening(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            out += [c.laddr.ip for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    return out


def test_no_socket_off_loopback(served: Served) -> None:
    ips = listening([os.getpid(), *served.system.pids()])
    assert ips and all(ip.startswith("127.") for ip in ips), ips
    with pytest.raises(BindRefused, match="API key"):
        HttpServer(served.system, HttpSettings(bind="0.0.0.0", port=0))


def test_api_keys_and_cors_guard_both_apis(served: Served) -> None:
    settings = HttpSettings(port=0, api_keys=(Secret(b"sk-test"),), cors_origins=("http://app.example",))
    with HttpServer(served.system, settings) as guarded:
        pre = httpx.options(guarded.url + "/v1/chat/completions", timeout=30, headers={
            "Origin": "http://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://app.example"
        other = httpx.options(guarded.url + "/v1/chat/completions", timeout=30, headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers
        r = httpx.post(guarded.url + "/v1/chat/completions", json={}, timeout=30)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = httpx.post(guarded.url + "/v1/messages", json={}, timeout=30)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert httpx.get(guarded.url + "/health", timeout=30).status_code == 200
        oa = openai.OpenAI(base_url=guarded.url + "/v1", api_key="sk-test", max_retries=0)
        assert oa.completions.create(model="stub", prompt="x", max_tokens=2).choices
        an = anthropic.Anthropic(base_url=guarded.url, api_key="sk-test", max_retries=0)
        assert an.messages.create(model="stub", messages=[{"role": "user", "content": "x"}], max_tokens=2).content


def test_cli_serve_http_flag(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('[[models]]\nid = "stub"\nbackend = "stub"\nstub = { n_seq_max = 1 }\n')
    refused = subprocess.run([sys.executable, "-m", "actors", "serve", "--config", str(cfg), "--http", "0.0.0.0:0"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "needs at least one API key" in refused.stderr
    proc = subprocess.Popen([sys.executable, "-m", "actors", "serve", "--config", str(cfg), "--http", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    pids = [proc.pid]
    try:
        url = None
        for line in proc.stdout:
            m = re.search(r"HTTP .* on (http://127\.0\.0\.1:\d+)", line)
            if m:
                url = m.group(1)
                break
        assert url, "serve printed no HTTP address"
        assert httpx.get(url + "/health", timeout=30).json()["models"]["stub"]["state"] == "ready"
        pids += [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        ips = listening(pids)
        assert ips and all(ip.startswith("127.") for ip in ips), ips
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        wait_for(lambda: not alive(pids), what="serve's processes gone")


def test_streamed_events_leave_without_waiting_for_acks(served: Served) -> None:
    """Each connection the server accepted has Nagle off: without TCP_NODELAY every SSE event after the
    headers waited for the client's delayed ACK (about 40 ms on Linux) before it was sent."""
    import socket

    body = {"model": "stub", "messages": [{"role": "user", "content": "hi"}], "stream": True, **LONG}
    with open_stream(served, "/v1/chat/completions", body):
        conns = served.server._server.server_state.connections  # uvicorn's live protocols
        socks = [p.transport.get_extra_info("socket") for p in conns]
        assert socks
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in socks)
