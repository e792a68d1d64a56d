"""Us against llama.cpp's own llama-server, on its own ground (issue 12).

Same vendored llama.cpp and CMake flags (``llama_server_peer``), same model,
same threads, one sequence / one slot, greedy, identical token prompts from
``workloads``.  Every figure alternates the engines (the chats request by
request, in lockstep; the others run by run) and reports medians with
spreads; every measurement runs under a
``CompetitionMonitor`` and says whether another process used the cores
meanwhile (in a full run a contended figure is taken once more).

Sections (one JSON object on stdout, progress on stderr):

* ``chat``: 6 users x 6 turns interleaved, each user its own ~400-token
  system prompt, the whole conversation resent every turn, 16 new tokens per
  reply: llama-server (``--cache-ram`` default, 8 GiB), ours through the
  Python API with a ram-only cache and with ram + disk tiers, the same
  engine in this process with no actors (``engine_driver``: what hosting
  costs, apart from what the engine costs), and ours through our
  OpenAI-compatible HTTP server (or ``--ours-http URL``); total
  wall, prompt tokens evaluated, and the engine's own limit: the raw
  binding doing the least work for the same turns (``RawBindingChat``: one
  live sequence per conversation, only the new tokens prefilled);
* ``chat_small_ram``: the same chat with a 32 MiB RAM prompt cache for both
  (llama-server ``--cache-ram 32``; ours a 32 MiB ram quota plus a disk tier);
* ``decode``: 256 new tokens: llama-server, our ``complete`` and our
  streaming ``infer`` as its client sees it; and short replies (16 tokens,
  the chat's length, cache on as users run it) decoded per token against
  the long reply, on the same prompt for both engines (the chat's own
  per-token figure mixes in its longer contexts, whose attention costs
  more per token whoever decodes);
* ``restart``: a graceful restart halfway through the chat (llama-server:
  a new process; ours: unload with saves, a new tree on the same disk
  directory): prompt tokens evaluated against the same run without one;
* ``cores``: two models of one node decoding together against one model
  alone, and one model beside a process holding one core at 100% (started
  and stopped here, by pid) against the same model on a quiet host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench_util import (
    CompetitionMonitor,
    competing,
    log,
    rotated,
    running_system,
    spread,
    stop_cleanly_on_sigterm,
    tier_dirs,
)
from engine_driver import InProcessEngine, RawBindingChat
from llama_server_peer import JsonClient, LlamaServer, ServerOptions
from workloads import STORY, ChatScript, after_reply, chat_messages, next_prompt

from actors.cache.config import CacheConfig
from actors.model.llama import Model, default_model_path
from actors.supervisor.cores import node_cores

MODEL = "peer"
N_CTX = 4096
SHORT_REPLY = 16  # the chat's reply length
RAW_N_CTX_SEQ = 2048  # per conversation of the raw-binding driver (the chat's longest is ~600 tokens)
Reply = dict[str, Any]  # tokens, evaluated, prefill_s, decode_s, generated


# --------------------------------------------------------------------------- drivers


class Tokenizer:
    """The model's vocabulary in this process (no weights), so both engines get the same token ids."""

    def __init__(self, path: Path) -> None:
        self.model = Model(path, vocab_only=True)

    def system(self, text: str, n: int) -> list[int]:
        return self.model.tokenize(text)[:n]

    def message(self, text: str) -> list[int]:
        return self.model.tokenize(text, add_special=False)

    def close(self) -> None:
        self.model.close()


class ServerDriver:
    name = "llama_server"

    def __init__(self, server: LlamaServer) -> None:
        self.client = server.client()

    def complete(self, prompt: list[int], max_tokens: int) -> Reply:
        return self.client.complete(prompt, max_tokens)


class ActorsDriver:
    name = "ours"

    def __init__(self, system: Any, model: str = MODEL) -> None:
        self.system, self.model = system, model

    def complete(self, prompt: list[int], max_tokens: int) -> Reply:
        r = self.system.complete(self.model, prompt, max_tokens=max_tokens)
        st = r.stats
        return {"tokens": list(r.generated), "evaluated": st["prompt_tokens"] - r.cache_delta.read,
                "cached": r.cache_delta.read, "prefill_s": st["prefill_ms"] / 1e3, "decode_s": st["decode_ms"] / 1e3,
                "generated": len(r.generated), "decode_tok_s": st.get("tokens_per_s") or 0.0}


class OpenAIChatDriver:
    """``/v1/chat/completions`` on any OpenAI-compatible base URL (our HTTP server, or llama-server's)."""

    def __init__(self, base_url: str, model: str = MODEL) -> None:
        u = urllib.parse.urlsplit(base_url)
        self.prefix = u.path.rstrip("/")
        self.client = JsonClient(u.hostname or "127.0.0.1", u.port or 80)
        self.model = model

    def chat(self, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0,
                "stream": False, "cache_prompt": True}
        r = self.client.post(f"{self.prefix}/v1/chat/completions", body)
        usage = r.get("usage") or {}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        timings = r.get("timings") or {}
        evaluated = timings.get("prompt_n") if "prompt_n" in timings else (
            usage.get("prompt_tokens", 0) - cached if cached is not None else None)
        return {"text": r["choices"][0]["message"]["content"] or "", "prompt_tokens": usage.get("prompt_tokens"),
                "evaluated": evaluated, "generated": usage.get("completion_tokens")}

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------- workloads


def chat(driver: Any, tok: Tokenizer, script: ChatScript, variant: int, turns: list[Any] | None = None,
         conversations: dict[int, list[int]] | None = None) -> dict[str, Any]:
    """Drive ``script`` (or the given part of it) through ``driver``; returns totals and the conversations."""
    conv = conversations if conversations is not None else {}
    for u in range(script.users):
        if u not in conv:
            conv[u] = tok.system(f"Session {variant}. " + script.system_prompt(u), script.system_tokens)
    tot = {"wall_s": 0.0, "prompt_tokens": 0, "evaluated": 0, "generated": 0, "prefill_s": 0.0, "decode_s": 0.0}
    per_token: list[float] = []
    for t in (turns if turns is not None else list(script.order())):
        prompt = next_prompt(conv[t.user], tok.message(t.message))
        t0 = time.perf_counter()
        r = driver.complete(prompt, script.reply_tokens)
        tot["wall_s"] += time.perf_counter() - t0
        tot["prompt_tokens"] += len(prompt)
        for k in ("evaluated", "generated", "prefill_s", "decode_s"):
            tot[k] += r[k]
        if r["generated"] > 1 and r["decode_s"] > 0:
            per_token.append(r["decode_s"] / (r["generated"] - 1))  # both engines' decode_s: first to last token
        conv[t.user] = after_reply(prompt, r["tokens"])
    tot["decode_s_per_token"] = statistics.median(per_token) if per_token else float("nan")
    return {"totals": tot, "conversations": conv}


def chat_text(driver: OpenAIChatDriver, script: ChatScript, variant: int, turns: list[Any] | None = None,
              history: dict[int, list[tuple[str, str]]] | None = None) -> dict[str, Any]:
    """The same interleaved chat as text messages through ``/v1/chat/completions`` (or the given part of it)."""
    if history is None:
        history = {}
    for u in range(script.users):
        history.setdefault(u, [])
    tot = {"wall_s": 0.0, "prompt_tokens": 0, "evaluated": 0, "generated": 0}
    for t in (turns if turns is not None else list(script.order())):
        user_msg = script.question(t.user, t.turn)
        msgs = chat_messages(f"Session {variant}. " + script.system_prompt(t.user), history[t.user], user_msg)
        t0 = time.perf_counter()
        r = driver.chat(msgs, script.reply_tokens)
        tot["wall_s"] += time.perf_counter() - t0
        for k in ("prompt_tokens", "evaluated", "generated"):
            tot[k] += r[k] or 0
        history[t.user].append((user_msg, r["text"]))
    return {"totals": tot}


def add_totals(into: dict[str, float], part: dict[str, float]) -> None:
    for k, v in part.items():
        if k != "decode_s_per_token":
            into[k] = into.get(k, 0.0) + v


def lockstep_round(drivers: dict[str, Any], tok: Tokenizer, script: ChatScript, variants: dict[str, int],
                   rep: int) -> dict[str, dict[str, Any]]:
    """One interleaved chat per engine, run request by request with the engines' order rotated every request.

    This VM's speed drifts by a quarter within minutes; a request lasts about a second, so a drift
    falls on every engine alike (whole chats alternated gave one engine 17.1 s and then 13.4 s)."""
    names = list(drivers)
    totals: dict[str, dict[str, float]] = {n: {} for n in names}
    per_token: dict[str, list[float]] = {n: [] for n in names}
    state: dict[str, dict[int, Any]] = {n: {} for n in names}
    for i, turn in enumerate(script.order()):
        for name in rotated(names, rep + i):
            d = drivers[name]
            if isinstance(d, OpenAIChatDriver):
                part = chat_text(d, script, variants[name], [turn], state[name])["totals"]
            else:
                part = chat(d, tok, script, variants[name], [turn], state[name])["totals"]
                if not math.isnan(part["decode_s_per_token"]):  # chat()'s own figure for this one request
                    per_token[name].append(part["decode_s_per_token"])
            add_totals(totals[name], part)
    for name in names:
        if per_token[name]:
            totals[name]["decode_s_per_token"] = statistics.median(per_token[name])
    return {n: {"totals": totals[n]} for n in names}


RETAKE = 10_000  # a retake's prompt variant: a set of system prompts no earlier run used

# Processes of the engines this bench started: they are what is measured, never "competition".
ENGINE_PIDS: set[int] = set()


def own_engines(*pids: int | None) -> None:
    ENGINE_PIDS.update(p for p in pids if p)


def measured(fn: Callable[[], dict[str, Any]], retry: bool,
             fresh: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run ``fn`` under a competition monitor; once more if another process competed (``retry``).

    ``fresh``: what to run for the retake when ``fn`` cannot be repeated as it is (a chat whose
    prompts the first try left in the cache would be measured warm the second time)."""
    with CompetitionMonitor(exclude=set(ENGINE_PIDS)) as mon:
        out = fn()
    out["competition"] = mon.summary()
    if retry and out["competition"]["contended"]:
        log("  another process competed for the cores: taking this figure again")
        with CompetitionMonitor(exclude=set(ENGINE_PIDS)) as mon:
            again = (fresh or fn)()
        again["competition"] = {**mon.summary(), "retaken": True}
        return again
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("wall_s", "prompt_tokens", "evaluated", "generated", "prefill_s", "decode_s", "decode_s_per_token")
    out = {k: spread([r["totals"][k] for r in runs if k in r["totals"]]) for k in keys if k in runs[0]["totals"]}
    out["contended_runs"] = sum(1 for r in runs if r["competition"]["contended"])
    out["competition"] = [r["competition"] for r in runs]
    return out


def ram_cache(tmp: Path, ram: int = 1 << 30, disk: bool = False) -> CacheConfig:
    return CacheConfig.create(tmp / "run", ram=ram, disk=(tmp / "disk", 4 << 30) if disk else None,
                              default_tier="ram", fsync=False)


@contextlib.contextmanager
def ours(cache: CacheConfig, threads: int, n_ctx: int = N_CTX) -> Iterator[Any]:
    with running_system(cache) as system:
        system.load_model(MODEL, context={"n_ctx": n_ctx, "n_seq_max": 1, "n_threads": threads})
        system.complete(MODEL, STORY, max_tokens=4, cache=False)  # page faults and thread start-up
        yield system


def server(threads: int, cache_ram_mib: int = 8192) -> LlamaServer:
    return LlamaServer(ServerOptions(str(default_model_path()), threads, N_CTX, cache_ram_mib))


def warm_server(srv: LlamaServer, tok: Tokenizer) -> ServerDriver:
    d = ServerDriver(srv)
    d.complete(tok.message(STORY), 4)
    return d


# --------------------------------------------------------------------------- sections


def our_http(stack: contextlib.ExitStack, system: Any) -> str | None:
    """Our OpenAI-compatible server (``actors.http``) on ``system``, on a free loopback port; None without it."""
    try:
        from actors.config import HttpSettings
        from actors.http.server import HttpServer
    except ImportError:  # the http extra (uvicorn, ...) is not installed
        return None
    return str(stack.enter_context(HttpServer(system, HttpSettings(bind="127.0.0.1", port=0))).url)


def section_chat(tok: Tokenizer, script: ChatScript, reps: int, threads: int, retry: bool, ram_mib: int | None,
                 http_url: str | None) -> dict[str, Any]:
    """The interleaved chat through every engine in lockstep (:func:`lockstep_round`); ``ram_mib`` caps both
    RAM prompt caches.

    Token ids through llama-server's ``/completion`` and our Python API; with the unlimited cache
    also text through both ``/v1/chat/completions`` (each applies the model's chat template).
    """
    drivers: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(server(threads, ram_mib if ram_mib is not None else 8192))
        own_engines(srv.pid)
        drivers["llama_server"] = warm_server(srv, tok)
        tmp, _ = stack.enter_context(tier_dirs())
        if ram_mib is None:
            system = stack.enter_context(ours(ram_cache(tmp / "a"), threads))
            drivers["ours"] = ActorsDriver(system)
            disk_system = stack.enter_context(ours(ram_cache(tmp / "b", disk=True), threads))
            drivers["ours_disk"] = ActorsDriver(disk_system)
            own_engines(*system.pids(), *disk_system.pids())
            engine = InProcessEngine(ram_cache(tmp / "e"), {"n_ctx": N_CTX, "n_seq_max": 1, "n_threads": threads})
            stack.callback(engine.close)
            engine.complete(tok.system(STORY, 64), 4)  # page faults and thread start-up, as ours() does
            drivers["engine_in_process"] = engine
            raw = RawBindingChat(script.users, RAW_N_CTX_SEQ, threads)
            stack.callback(raw.close)
            drivers["raw_binding"] = raw
            url = http_url or our_http(stack, system)
            drivers["llama_server_http"] = OpenAIChatDriver(f"http://127.0.0.1:{srv.port}")
            if url:
                drivers["ours_http"] = OpenAIChatDriver(url)
        else:
            small = stack.enter_context(ours(ram_cache(tmp / "a", ram_mib << 20, True), threads))
            own_engines(*small.pids())
            drivers["ours"] = ActorsDriver(small)
        names = list(drivers)
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for rep in range(reps):
            # a fresh set of system prompts per engine and round: nothing cached by an earlier run matches
            variants = {n: rep * len(names) + i + 1 for i, n in enumerate(names)}
            got = measured(lambda r=rep, v=variants: {"round": lockstep_round(drivers, tok, script, v, r)}, retry,
                           lambda r=rep, v=variants: {"round": lockstep_round(
                               drivers, tok, script, {n: x + RETAKE for n, x in v.items()}, r)})
            for name, one in got["round"].items():
                runs[name].append({**one, "competition": got["competition"]})
            log(f"  chat repeat {rep + 1}/{reps} done")
        for d in drivers.values():
            if isinstance(d, OpenAIChatDriver):
                d.close()
    out = {n: summarize(r) for n, r in runs.items()}
    ls, us = out["llama_server"]["wall_s"]["median"], out["ours"]["wall_s"]["median"]
    out["ours_over_llama_server_wall"] = round(us / ls, 3)
    if "engine_in_process" in out:  # what hosting the engine in the tree costs, and what the engine itself does
        eng = out["engine_in_process"]["wall_s"]["median"]
        out["ours_over_in_process_wall"] = round(us / eng, 3)
        out["in_process_over_llama_server_wall"] = round(eng / ls, 3)
    if "raw_binding" in out:  # the engine's own limit: the least work for the same turns, at the binding's speed
        out["ours_over_raw_binding_wall"] = round(us / out["raw_binding"]["wall_s"]["median"], 3)
    if "ours_disk" in out:
        out["disk_over_ram_wall"] = round(out["ours_disk"]["wall_s"]["median"] / us, 3)
    if "ours_http" in out:
        out["http_ours_over_llama_server_wall"] = round(
            out["ours_http"]["wall_s"]["median"] / out["llama_server_http"]["wall_s"]["median"], 3)
    return out


def section_decode(tok: Tokenizer, n: int, reps: int, threads: int, retry: bool) -> dict[str, Any]:
    prompt = tok.system(STORY, 64)
    rates: dict[str, list[float]] = {"llama_server": [], "ours_complete": [], "ours_streaming": []}
    short: dict[str, list[float]] = {"llama_server": [], "ours": []}  # seconds per token of 16-token replies
    with contextlib.ExitStack() as stack:
        tmp, _ = stack.enter_context(tier_dirs())
        srv = stack.enter_context(server(threads))
        drv = warm_server(srv, tok)
        system = stack.enter_context(ours(ram_cache(tmp), threads))
        own_engines(srv.pid, *system.pids())  # the engines measured here are not competitors

        def short_replies(name: str, k: int = 6) -> float:
            per: list[float] = []
            for i in range(k):  # each reply on its own prompt: a cold prefill, then 16 tokens, then saves
                p = [*prompt, *tok.message(f" Part {rep}-{i}.")]
                if name == "llama_server":
                    r = drv.complete(p, SHORT_REPLY)
                    per.append(r["decode_s"] / max(1, r["generated"] - 1))  # as ours: per decode done
                else:
                    st = system.complete(MODEL, p, max_tokens=SHORT_REPLY).stats
                    per.append(st["decode_ms"] / 1e3 / max(1, st["completion_tokens"] - 1))
            return statistics.median(per)

        def one(name: str) -> dict[str, Any]:
            if name == "llama_server":
                return {"tok_s": drv.complete(prompt, n)["decode_tok_s"]}
            if name == "ours_complete":
                r = system.complete(MODEL, prompt, max_tokens=n, cache=False)
                return {"tok_s": r.stats["tokens_per_s"]}
            stream = system.infer(MODEL, prompt, max_tokens=n, cache=False)
            count, last = 0, 0.0
            for chunk in stream:  # the client's view: first token to last token received
                count += len(chunk.token_ids)
                last = time.perf_counter()
            first = stream.first_token_at or last
            return {"tok_s": (count - 1) / (last - first) if count > 1 and last > first else 0.0}

        competition = []
        for rep in range(reps):
            names = list(rates)
            for name in names[rep % 3:] + names[: rep % 3]:
                got = measured(lambda nm=name: one(nm), retry)
                rates[name].append(got["tok_s"])
                competition.append(got["competition"])
            for name in ("llama_server", "ours") if rep % 2 == 0 else ("ours", "llama_server"):
                got = measured(lambda nm=name: {"s": short_replies(nm)}, retry)
                short[name].append(got["s"])
                competition.append(got["competition"])
    out: dict[str, Any] = {k: spread(v, nd=1) for k, v in rates.items()}
    ref = out["llama_server"]["median"]
    out["complete_over_llama_server"] = round(out["ours_complete"]["median"] / ref, 3)
    out["streaming_over_llama_server"] = round(out["ours_streaming"]["median"] / ref, 3)
    out["short_reply_s_per_token"] = {k: spread(v, nd=5) for k, v in short.items()}
    for name, long_rate in (("llama_server", ref), ("ours", out["ours_complete"]["median"])):
        out.setdefault("short_over_long_per_token", {})[name] = round(
            out["short_reply_s_per_token"][name]["median"] * long_rate, 3)
    out["n_tokens"] = n
    out["contended_runs"] = sum(1 for c in competition if c["contended"])
    return out


def section_restart(tok: Tokenizer, script: ChatScript, threads: int, retry: bool) -> dict[str, Any]:
    """Prompt tokens evaluated with a graceful restart halfway vs the same run without one, per engine."""
    first, second = script.halves()
    out: dict[str, Any] = {}

    def server_run(restart: bool) -> dict[str, Any]:
        conv: dict[int, list[int]] = {}
        with server(threads) as srv:
            a = chat(warm_server(srv, tok), tok, script, 1, first, conv)
            if not restart:
                b = chat(ServerDriver(srv), tok, script, 1, second, conv)
        if restart:
            with server(threads) as srv:
                b = chat(warm_server(srv, tok), tok, script, 1, second, conv)
        return {"evaluated": a["totals"]["evaluated"] + b["totals"]["evaluated"],
                "wall_s": a["totals"]["wall_s"] + b["totals"]["wall_s"]}

    def ours_run(restart: bool) -> dict[str, Any]:
        conv: dict[int, list[int]] = {}
        with tier_dirs() as (tmp, _):
            cfg = ram_cache(tmp, disk=True)
            with ours(cfg, threads) as system:
                a = chat(ActorsDriver(system), tok, script, 1, first, conv)
                if not restart:
                    b = chat(ActorsDriver(system), tok, script, 1, second, conv)
                else:
                    system.unload_model(MODEL, save=True)  # graceful: shutdown saves published before it returns
            if restart:
                with ours(cfg.with_run_dir(str(tmp / "run2")), threads) as system:
                    b = chat(ActorsDriver(system), tok, script, 1, second, conv)
        return {"evaluated": a["totals"]["evaluated"] + b["totals"]["evaluated"],
                "wall_s": a["totals"]["wall_s"] + b["totals"]["wall_s"]}

    for name, fn in (("llama_server", server_run), ("ours", ours_run)):
        plain = measured(lambda f=fn: f(False), retry)
        again = measured(lambda f=fn: f(True), retry)
        out[name] = {"no_restart": plain, "restart": again,
                     "evaluated_restart_over_none": round(again["evaluated"] / max(1, plain["evaluated"]), 3)}
    return out


@contextlib.contextmanager
def busy_core() -> Iterator[int]:
    """A process holding one core at 100% (a Python busy loop), stopped by its pid.

    Yields once the loop has run for a second of CPU: the figure is a model beside a process that
    holds a core, not the instant such a process starts."""
    import psutil

    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
    try:
        p = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        while sum(p.cpu_times()[:2]) < 1.0 and time.monotonic() < deadline:
            time.sleep(0.05)  # waits on the loop's own CPU time, a condition
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def decode_rate(system: Any, model: str, n: int) -> float:
    r = system.complete(model, STORY, max_tokens=n, cache=False)
    return float(r.stats["tokens_per_s"] or 0.0)


def section_cores(n: int, reps: int, retry: bool) -> dict[str, Any]:
    """Two models of one node decoding together vs one alone; one model beside a busy core vs quiet.

    No model asks for threads: the node's core budget decides (that is what is measured).
    """
    out: dict[str, Any] = {"node_cores": node_cores()}
    alone: list[float] = []
    beside: list[float] = []
    together: list[float] = []
    with tier_dirs() as (tmp, _):
        with running_system(ram_cache(tmp / "one")) as system:
            info = system.load_model("solo", context={"n_ctx": 1024})
            own_engines(*system.pids())  # the model measured is no competitor of itself
            out["solo_threads"] = info.get("n_threads")
            decode_rate(system, "solo", 4)
            for _ in range(reps):
                alone.append(measured(lambda: {"v": decode_rate(system, "solo", n)}, retry)["v"])
                with busy_core() as pid:
                    # the busy loop is the competitor here: the monitor leaves it out, anything else counts
                    with CompetitionMonitor(exclude={pid, *ENGINE_PIDS}) as mon:
                        beside.append(decode_rate(system, "solo", n))
                    out.setdefault("busy_competition", []).append(mon.summary())
        with running_system(ram_cache(tmp / "two")) as system:
            infos = [system.load_model(m, context={"n_ctx": 1024}) for m in ("a", "b")]
            own_engines(*system.pids())
            out["pair_threads"] = [i.get("n_threads") for i in infos]
            out["pair_models"] = [{k: m.get(k) for k in ("model_id", "threads")} for m in system.list_models()]
            for m in ("a", "b"):
                decode_rate(system, m, 4)

            def pair() -> dict[str, Any]:
                got: dict[str, float] = {}
                threads = [threading.Thread(target=lambda m=m: got.__setitem__(m, decode_rate(system, m, n)))
                           for m in ("a", "b")]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                return {"v": sum(got.values()), "each": got}

            for _ in range(reps):
                together.append(measured(pair, retry)["v"])
    out["alone_tok_s"] = spread(alone, nd=1)
    out["beside_busy_core_tok_s"] = spread(beside, nd=1)
    out["two_models_aggregate_tok_s"] = spread(together, nd=1)
    out["two_over_alone"] = round(out["two_models_aggregate_tok_s"]["median"] / out["alone_tok_s"]["median"], 3)
    out["busy_over_quiet"] = round(out["beside_busy_core_tok_s"]["median"] / out["alone_tok_s"]["median"], 3)
    return out


# --------------------------------------------------------------------------- main


DECODE_MIN_REPS = 6


def run(smoke: bool, reps: int, http_url: str | None, only: set[str] | None) -> dict[str, Any]:
    # smoke: one thread each, so a busy CI host cannot collapse either engine's spinning barriers
    threads = 1 if smoke else node_cores()
    script = ChatScript(users=2, turns=2, system_tokens=64, reply_tokens=8) if smoke else \
        ChatScript(users=6, turns=6, system_tokens=400, reply_tokens=16)
    n_decode = 32 if smoke else 256
    retry = not smoke
    report: dict[str, Any] = {"smoke": smoke, "threads": threads, "reps": reps, "model": default_model_path().name,
                              "script": {"users": script.users, "turns": script.turns,
                                         "system_tokens": script.system_tokens, "reply_tokens": script.reply_tokens},
                              "competition_at_start": competing()}
    tok = Tokenizer(default_model_path())

    def want(name: str) -> bool:
        return only is None or name in only

    try:
        if want("chat"):
            log("[server] interleaved chat: llama-server vs ours")
            report["chat"] = section_chat(tok, script, reps, threads, retry, None, http_url)
        if want("chat_small_ram"):
            log("[server] interleaved chat, 32 MiB RAM prompt cache for both")
            report["chat_small_ram"] = section_chat(tok, script, reps, threads, retry, 32, None)
        if want("decode"):
            log(f"[server] decode {n_decode} tokens")
            # Decode rates on this VM move +-6% run to run; one rep is ~30 s, so take at least six.
            report["decode"] = section_decode(tok, n_decode, reps if smoke else max(reps, DECODE_MIN_REPS), threads,
                                              retry)
        if want("restart"):
            log("[server] graceful restart halfway through the chat")
            report["restart"] = section_restart(tok, script, threads, retry)
        if want("cores"):
            log("[server] shared cores: two models together, one beside a busy core")
            report["cores"] = section_cores(16 if smoke else 128, reps, retry)
    finally:
        tok.close()
    report["competition_at_end"] = competing()
    return report


def main() -> None:
    stop_cleanly_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: proves the harness, figures not for quoting")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--ours-http", default=os.environ.get("LLAMA_ACTORS_HTTP_URL"),
                    help="base URL of our OpenAI-compatible server (also $LLAMA_ACTORS_HTTP_URL)")
    ap.add_argument("--only", default=None, help="comma-separated: chat,chat_small_ram,decode,restart,cores")
    a = ap.parse_args()
    only = {x.strip() for x in a.only.split(",")} if a.only else None
    print(json.dumps(run(a.smoke, a.reps or (1 if a.smoke else 3), a.ours_http, only), indent=2))


if __name__ == "__main__":
    main()
