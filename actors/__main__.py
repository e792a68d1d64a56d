"""Command line: `llama-actors` or `python -m actors`.

serve     run an actor system in the foreground (from a TOML config, or plain), until SIGTERM/SIGINT
stop      stop a running system gracefully
load      load a model into a running system
status    models, phases, queues, last cache hit and cache counters, read without asking the models
top       the same, refreshed every few seconds (shared memory and counter files: never waits on a model)
complete  stream a completion to the terminal
chat      an interactive chat with one model (a sticky session; works with piped stdin)
cache     ls | gc | evict: the cache index of a running system
shell     a Python console attached to a running system (`system` is ready)

Every failure is one line on stderr, `error: ...`, and a non-zero exit code
(1 for a failed command, 2 for a malformed command line).
"""

from __future__ import annotations

import argparse
import code
import contextlib
import json
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from actors.api import System
    from actors.config import Config, HttpSettings, ModelSettings

TIERS = ("ram", "ram_file", "disk")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one `error:` line like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class CliError(RuntimeError):
    """A failure already phrased for the user (printed as `error: <text>`)."""


def _attach(port: int) -> System:
    from actors.api import System

    return System.attach(port)


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- serve


class _Stop(BaseException):
    """Raised by the signal handler to leave whatever the serve loop is blocked in."""


def _serve_config(a: argparse.Namespace) -> Config:
    """The config file (if any) with the command-line overrides applied."""
    from actors.config import CacheSettings, Config, TierDir, load_config

    config = load_config(a.config) if a.config else Config()
    if a.cache_dir:
        if config.cache is not None:
            raise CliError("--cache-dir: the config already has a [cache] table; set its disk tier there")
        config = replace(config, cache=CacheSettings(disk=TierDir(os.path.abspath(a.cache_dir), 8 << 30),
                                                     default_tier="ram"))
    node = config.node
    if a.log:
        node = replace(node, log=os.path.abspath(a.log))
    if a.multi_host:
        node = replace(node, multi_host=True)
    return replace(config, node=node)


def _http_settings(config: Config, flag: str | None) -> HttpSettings | None:
    """The HTTP server's settings (``[http]`` with ``--http HOST:PORT`` over it), checked before anything starts;
    None when neither asks for a server."""
    if flag is None and config.http is None:
        return None
    from actors.config import HttpSettings
    from actors.http.server import BindRefused, check_bind, parse_host_port

    settings = config.http or HttpSettings()
    try:
        if flag is not None:
            host, port = parse_host_port(flag)
            settings = replace(settings, bind=host, port=port)
        check_bind(settings)
    except (ValueError, BindRefused) as e:
        raise CliError(str(e)) from None
    return settings


def _progress(model: ModelSettings, elapsed: float | None, info: dict[str, Any] | None) -> None:
    if elapsed is None:
        where = "the stub backend" if model.backend == "stub" else model.path or "the bundled model"
        _err(f"llama-actors: loading model {model.id!r} from {where} ...")
    else:
        facts = ", ".join(f"{k} {info[k]}" for k in ("n_ctx", "n_seq_max", "n_threads") if info and k in info)
        _err(f"llama-actors: model {model.id!r} loaded in {elapsed:.1f} s" + (f" ({facts})" if facts else ""))


def _serve(a: argparse.Namespace) -> int:
    """Start the system as its owner, load the config's models, then wait for a signal and stop it all."""
    import psutil

    from actors.api import System
    from actors.config import load_models, system_kwargs

    config = _serve_config(a)  # every config error is reported before anything starts
    http = _http_settings(config, a.http)
    kwargs = system_kwargs(config, a.port)
    state = {"defer": True, "signal": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        state["signal"] = signum
        if not state["defer"]:
            raise _Stop

    handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    system: System | None = None
    server: Any = None
    try:
        t0 = time.monotonic()
        # A signal during the start is held until System() returns: interrupting runtime.start could
        # orphan the serve process it has just spawned.
        system = System(**kwargs)
        state["defer"] = False
        if state["signal"]:
            raise _Stop
        _err(f"llama-actors: actor system up on port {system.port} in {time.monotonic() - t0:.1f} s")
        loading: list[str] = []

        def progress(model: ModelSettings, elapsed: float | None, info: dict[str, Any] | None) -> None:
            loading[:] = [model.id]
            _progress(model, elapsed, info)

        try:
            load_models(system, config, progress)
        except Exception as e:
            raise CliError(f"model {loading[0]!r}: {_describe(e, a)}") from e
        ids = ", ".join(m.id for m in config.models) or "none yet"
        if http is not None:
            from actors.http.server import HttpServer

            server = HttpServer(system, http).start()
            print(f"llama-actors: HTTP (OpenAI and Anthropic APIs) on {server.url}", flush=True)
        print(f"llama-actors serving on port {system.port} (models: {ids}); "
              f"stop with Ctrl-C or `llama-actors stop --port {system.port}`", flush=True)
        admin = system.admin_pid
        while admin is None or psutil.pid_exists(admin):
            time.sleep(0.5)
        _err(f"llama-actors: the system on port {system.port} was stopped from elsewhere")
    except _Stop:
        _err(f"llama-actors: {signal.Signals(state['signal']).name} received, stopping")
    finally:
        state["defer"] = True  # a second Ctrl-C must not cut the shutdown short
        try:
            if server is not None:
                server.stop()
            if system is not None:
                system.close()
                if config.cache is not None and config.cache.run_dir is None:
                    # A run directory made for this run only (counters, staging): nothing reuses it.
                    shutil.rmtree(system.tree.cache_config.run_dir, ignore_errors=True)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
    return 0


# --------------------------------------------------------------------------- one-shot commands


def _stop(port: int) -> int:
    from actors.supervisor import runtime

    if runtime.listener_pid(port) is None:
        raise CliError(f"no actor system listens on port {port}")
    runtime.stop(port)
    return 0


def _transport_rejections(port: int) -> int:
    from actors.supervisor import runtime

    return runtime.transport_rejections(port)


def _status(port: int) -> dict[str, Any]:
    with _attach(port) as system:
        return {
            "port": port,
            "models": system.list_models(),
            "observed": [r.__dict__ for r in system.observe_all()],
            "queue_depth": system.queue_depth(),
            "cache": {k: v for k, v in system.cache_counters().items() if v},
            "transport": {"rejected": _transport_rejections(port)},
        }


def _require_model(system: System, model: str) -> None:
    """Fail before reading any input when the model is not loaded (one line, the loaded ids named)."""
    ids = [m.get("model_id") for m in system.list_models()]
    if model not in ids:
        raise CliError(f"no model {model!r} is loaded (loaded: {', '.join(map(str, ids)) or 'none'})")


def _write_stream(stream: Any) -> None:
    """Answer and tool-call text to stdout as it arrives; thinking (when enabled) to stderr, so a pipe gets
    the answer only.  ``ThinkingEnd`` / ``ToolCallEnd`` events repeat what the chunks showed: skipped."""
    from actors.model.messages import TokenChunk

    for ev in stream:
        if isinstance(ev, TokenChunk) and ev.text:
            out = sys.stderr if ev.kind == "thinking" else sys.stdout
            out.write(ev.text)
            out.flush()


def _complete(a: argparse.Namespace) -> int:
    with _attach(a.port) as system:
        prompt = a.prompt
        if a.chat:
            prompt = system.apply_chat_template(a.model, [{"role": "user", "content": prompt}])
        stream = system.infer(a.model, prompt, max_tokens=a.max_tokens, parse_special=a.chat,
                              temperature=a.temperature, seed=a.seed, thinking=a.thinking)
        _write_stream(stream)
        r = stream.result
        assert r is not None
        sys.stdout.write("\n")
        _err(f"[{r.cache_hit_kind}, {r.finish_reason}, ttft {r.stats.get('ttft_ms')} ms, {len(r.generated)} tokens]")
    return 0


def _json_arg(text: str | None, flag: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"{flag}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(value, dict):
        raise CliError(f"{flag}: expected a JSON object")
    return value


def _load(a: argparse.Namespace) -> int:
    context = _json_arg(a.context, "--context")
    model_options = _json_arg(a.model_options, "--model-options")
    with _attach(a.port) as system:
        t0 = time.monotonic()
        info = system.load_model(a.id, a.path, backend=a.backend, context=context, model_options=model_options)
        _err(f"llama-actors: model {a.id!r} loaded in {time.monotonic() - t0:.1f} s")
    print(json.dumps(info, default=str))
    return 0


def _shell(port: int) -> int:
    system = _attach(port)
    banner = (f"llama-actors shell on port {port}: `system` is attached "
              "(system.list_models(), system.complete(model, prompt), system.observe_all(), system.cache_counters())")
    try:
        code.interact(banner=banner, local={"system": system})
    finally:
        system.close()
    return 0


# --------------------------------------------------------------------------- top


def _top_frame(system: System) -> str:
    """One screen: per-model rows from the shared-memory table, then the cache counters (no message sent)."""
    now_ns = time.time_ns()
    rows = [("MODEL", "PID", "PHASE", "PENDING", "QUEUE", "LAST HIT", "RESTARTS", "UPDATED")]
    for r in system.observe_all():
        hit = f"{r.last_cache_hit['kind']} {r.last_cache_hit['prefix_len']}" if r.last_cache_hit else "-"
        age = f"{max(0.0, (now_ns - r.updated_ns) / 1e9):.1f}s ago" if r.updated_ns else "-"
        rows.append((r.model_id, str(r.pid), r.phase, str(r.pending_len), str(r.queue_depth), hit,
                     str(r.restarts), age))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"llama-actors top: port {system.port}, {time.strftime('%H:%M:%S')}, "
             f"{len(rows) - 1} model(s), {system.queue_depth()} request(s) admitted"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if len(rows) == 1:
        lines.append("(no model loaded)")
    c = system.cache_counters()
    hits = c.get("hits_exact", 0) + c.get("hits_resume", 0) + c.get("hits_longest_prefix", 0)
    looked = hits + c.get("misses", 0)
    rate = f"{100 * hits / looked:.0f}%" if looked else "-"
    saves = sum(c.get(f"saves_{r}", 0) for r in ("cold", "continued", "finish", "evict", "shutdown"))
    lines.append(f"cache: hits {hits} (exact {c.get('hits_exact', 0)}, resume {c.get('hits_resume', 0)}, "
                 f"prefix {c.get('hits_longest_prefix', 0)}), misses {c.get('misses', 0)}, hit rate {rate}, "
                 f"saves {saves} (dropped {c.get('saves_dropped', 0)}), evictions {c.get('evictions', 0)}, "
                 f"demotions {c.get('demotions', 0)}, written behind {c.get('write_behind_written', 0)} "
                 f"(skipped {c.get('write_behind_skipped', 0)}), spilled {c.get('spilled', 0)}")
    configured = [t.name for t in system.tree.cache_config.tiers]
    tiers = ", ".join(f"{t} {_fmt_bytes(c.get(f'bytes_{t}', 0))} in {c.get(f'rows_{t}', 0)} rows"
                      for t in TIERS if t in configured)
    lines.append(f"tiers: {tiers or 'none'}; writers {c.get('writer_busy', 0)}/{c.get('writer_capacity', 0)} busy, "
                 f"{c.get('writer_queued', 0)} queued")
    return "\n".join(lines)


def _top(a: argparse.Namespace) -> int:
    clear = sys.stdout.isatty()
    with _attach(a.port) as system:
        n = 0
        while True:
            frame = _top_frame(system)
            sys.stdout.write(("\x1b[H\x1b[2J" if clear else ("\n" if n else "")) + frame + "\n")
            sys.stdout.flush()
            n += 1
            if a.iterations and n >= a.iterations:
                return 0
            time.sleep(a.interval)


# --------------------------------------------------------------------------- chat


def _chat(a: argparse.Namespace) -> int:
    """Read user lines, render the whole conversation with the model's chat template, stream each reply.

    Every turn goes to the same ``session_id``, so the model keeps the conversation's
    sequence live and prefills only the new turn (``cache_hit_kind="sticky"``).
    """
    with _attach(a.port) as system:
        _require_model(system, a.model)
        session = a.session or f"chat-{uuid.uuid4().hex[:12]}"
        interactive = sys.stdin.isatty()
        if interactive:
            _err(f"chatting with {a.model!r} (session {session}); /exit or Ctrl-D ends")
        messages: list[dict[str, str]] = []
        try:
            while True:
                if interactive:
                    sys.stderr.write("you> ")
                    sys.stderr.flush()
                line = sys.stdin.readline()
                if not line:
                    break
                text = line.rstrip("\r\n")
                if text.strip() == "/exit":
                    break
                if not text.strip():
                    continue
                messages.append({"role": "user", "content": text})
                prompt = system.apply_chat_template(a.model, messages, system=a.system)
                stream = system.infer(a.model, prompt, session_id=session, max_tokens=a.max_tokens,
                                      temperature=a.temperature, seed=a.seed, thinking=a.thinking)
                _write_stream(stream)
                r = stream.result
                assert r is not None
                sys.stdout.write("\n")
                sys.stdout.flush()
                messages.append({"role": "assistant", "content": r.reply})
                _err(f"[{r.cache_hit_kind}, {r.finish_reason}, ttft {r.stats.get('ttft_ms')} ms, "
                     f"{len(r.generated)} tokens]")
        finally:
            with contextlib.suppress(Exception):  # the session's sequence is freed even on Ctrl-C
                system.end_session(a.model, session)
    return 0


# --------------------------------------------------------------------------- cache


def _meta_ask(system: System, msg: Any, timeout: float = 60.0) -> Any:
    """One request/reply with the cache meta actor of an attached system."""
    from actors.cache import messages as cm
    from actors.supervisor import runtime

    reply = runtime.ask(system.asys, system.tree.meta, msg, timeout)
    if isinstance(reply, cm.ErrorReply):
        raise CliError(f"cache: {reply}")
    return reply


def _cache_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in tier order, most recently used first, each with ``last_use`` (1 = most recent in its tier)."""
    per_tier: dict[str, int] = {}
    for r in rows:
        if r.get("lru_rank") is not None:
            per_tier[r["tier"]] = per_tier.get(r["tier"], 0) + 1
    out = []
    for r in rows:
        rank = r.get("lru_rank")
        out.append({**r, "last_use": None if rank is None else per_tier[r["tier"]] - rank})
    order = {t: i for i, t in enumerate(TIERS)}
    return sorted(out, key=lambda r: (order.get(r["tier"], 9), r["last_use"] is None, r["last_use"] or 0))


def _cache(a: argparse.Namespace) -> int:
    from actors.cache import messages as cm

    with _attach(a.port) as system:
        rid = uuid.uuid4().hex
        if a.cache_cmd == "ls":
            rows = _cache_rows(_meta_ask(system, cm.Dump(rid)).rows)
            if a.tier:
                rows = [r for r in rows if r["tier"] == a.tier]
            if a.json:
                print(json.dumps(rows, default=str))
                return 0
            shown = rows[: a.limit] if a.limit else rows
            table = [("KEY", "TIER", "STATUS", "TOKENS", "BYTES", "HITS", "PINS", "LAST USE")]
            for r in shown:
                last = "-" if r["last_use"] is None else f"#{r['last_use']}"
                table.append((r["key"][:16], r["tier"], r["status"], str(r["n_tokens"]), _fmt_bytes(r["size"]),
                              str(r["hits"]), str(len(r["pins"])), last))
            widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
            for row in table:
                print("  ".join(cell.rjust(w) if 3 <= i <= 6 else cell.ljust(w)
                                for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
            more = f", {len(rows) - len(shown)} not shown" if len(shown) < len(rows) else ""
            print(f"{len(rows)} rows, {_fmt_bytes(sum(r['size'] for r in rows))}{more} "
                  "(LAST USE: place in the tier's LRU order, #1 = most recent)")
            return 0
        if a.cache_cmd == "gc":
            stats = _meta_ask(system, cm.Gc(rid)).stats
            print("gc: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))
            return 0
        from actors.config import parse_bytes

        n = parse_bytes(a.bytes, "--bytes")
        configured = tuple(t.name for t in system.tree.cache_config.tiers)
        tiers = tuple(a.tier) if a.tier else configured
        missing = [t for t in tiers if t not in configured]
        if missing:
            raise CliError(f"--tier: {', '.join(missing)} is not a tier of this cache "
                           f"(configured: {', '.join(configured)})")
        ev = _meta_ask(system, cm.EvictBytes(n, tiers, rid))
        print(f"evicted {len(ev.keys)} rows, freed {_fmt_bytes(ev.freed)} from {', '.join(tiers)}")
        return 0


# --------------------------------------------------------------------------- parser and main


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="llama-actors", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def port_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--port", type=int, required=True, help="admin port of the running system")

    s = sub.add_parser("serve", help="run an actor system in the foreground until SIGTERM/SIGINT")
    s.add_argument("--config", help="TOML configuration (docs/configuration.md)")
    s.add_argument("--port", type=int, help="admin port (default: node.admin_port of the config, else a free port)")
    s.add_argument("--cache-dir", help="add a disk tier in this directory (8 GiB) when the config has no [cache]")
    s.add_argument("--log", help="file for actor output (overrides node.log)")
    s.add_argument("--multi-host", action="store_true", help="listen on all interfaces (trusted networks only)")
    s.add_argument("--http", metavar="HOST:PORT",
                   help="also serve the OpenAI and Anthropic HTTP APIs here (docs/http.md; loopback unless API keys)")
    for name, text in (("stop", "stop a running system gracefully"),
                       ("status", "print models, phases, queues and cache counters as JSON"),
                       ("shell", "a Python console with `system` attached")):
        port_arg(sub.add_parser(name, help=text))
    ld = sub.add_parser("load", help="load a model into a running system")
    port_arg(ld)
    ld.add_argument("--id", required=True, help="model id to register")
    ld.add_argument("--path", help="GGUF file (default: the bundled SmolLM2-135M)")
    ld.add_argument("--backend", default="llama", choices=("llama", "stub"))
    ld.add_argument("--context", help='context options as JSON, e.g. \'{"n_ctx": 4096, "n_seq_max": 4}\'')
    ld.add_argument("--model-options", help='model options as JSON, e.g. \'{"n_gpu_layers": 0}\'')
    t = sub.add_parser("top", help="a live view of models, queues and cache counters")
    port_arg(t)
    t.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    t.add_argument("--iterations", type=int, default=0, help="stop after this many frames (default: run until ^C)")
    c = sub.add_parser("complete", help="stream a completion to the terminal")
    port_arg(c)
    c.add_argument("--model", required=True)
    c.add_argument("--max-tokens", type=int, default=128)
    c.add_argument("--temperature", type=float, default=0.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--raw", dest="chat", action="store_false", help="send the prompt as is (no chat template)")
    c.add_argument("--thinking", action="store_const", const="enabled", default="disabled",
                   help="route the model's thinking span (its thinking_markers) to stderr")
    c.add_argument("prompt")
    ch = sub.add_parser("chat", help="chat with a model: one line per turn from stdin, /exit or EOF ends")
    port_arg(ch)
    ch.add_argument("model")
    ch.add_argument("--system", help="system prompt")
    ch.add_argument("--session", help="session id (default: a fresh one)")
    ch.add_argument("--max-tokens", type=int, default=256)
    ch.add_argument("--temperature", type=float, default=0.0)
    ch.add_argument("--seed", type=int, default=0)
    ch.add_argument("--thinking", action="store_const", const="enabled", default="disabled",
                    help="route the model's thinking span (its thinking_markers) to stderr")
    k = sub.add_parser("cache", help="the cache index: ls, gc, evict")
    ksub = k.add_subparsers(dest="cache_cmd", required=True, metavar="ls|gc|evict")
    ls = ksub.add_parser("ls", help="one line per row: key prefix, tier, tokens, bytes, hits, last use")
    port_arg(ls)
    ls.add_argument("--tier", choices=TIERS)
    ls.add_argument("--limit", type=int, default=0, help="show at most this many rows")
    ls.add_argument("--json", action="store_true", help="the meta actor's rows as JSON")
    port_arg(ksub.add_parser("gc", help="sweep debris, forget vanished files, re-apply quotas"))
    ev = ksub.add_parser("evict", help="free at least N bytes, least recently used rows first")
    port_arg(ev)
    ev.add_argument("--bytes", required=True, help='how much to free: 1048576, "512MiB", "2GB"')
    ev.add_argument("--tier", action="append", choices=TIERS, help="evict only from this tier (repeatable)")
    return ap


def _describe(e: BaseException, a: argparse.Namespace) -> str:
    """The one line shown for a failure."""
    from actors.config import ConfigError

    text = str(e) or type(e).__name__
    config = getattr(a, "config", None)
    if isinstance(e, ConfigError):  # its text already names the key, for a person; no reason prefix
        return f"{config}: {text}" if config and config not in text else text
    reason = getattr(e, "reason", None)
    if isinstance(reason, str) and not text.startswith(reason):
        text = f"{reason}: {text}"
    return " ".join(text.split())  # one line, whatever the exception carried


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        if a.cmd == "serve":
            return _serve(a)
        if a.cmd == "stop":
            return _stop(a.port)
        if a.cmd == "status":
            print(json.dumps(_status(a.port), default=str, indent=2))
            return 0
        if a.cmd == "load":
            return _load(a)
        if a.cmd == "top":
            return _top(a)
        if a.cmd == "complete":
            return _complete(a)
        if a.cmd == "chat":
            return _chat(a)
        if a.cmd == "cache":
            return _cache(a)
        return _shell(a.port)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `llama-actors cache ls | head`
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except Exception as e:  # one clear line, not a traceback
        _err(f"error: {_describe(e, a)}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
