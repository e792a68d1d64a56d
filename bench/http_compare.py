"""Our HTTP server against llama.cpp's ``llama-server`` and llama-cpp-python's server, through the ``openai`` client.

    .venv/bin/python bench/http_compare.py            # JSON on stdout and in bench/out/http_compare.json + .png
    .venv/bin/python bench/http_compare.py --smoke    # tiny sizes: proves the harness, figures not for quoting

Why: people who serve chat front ends point an OpenAI client at a server;
the two servers they would pick instead of ours are llama.cpp's own
``llama-server`` and ``python -m llama_cpp.server``.  All three run here as
separate processes on loopback, on the bundled model, with the same threads,
driven by the same client process with the official ``openai`` package,
greedy, the same prompts and the same ``max_tokens``, with every
end-of-generation token banned through ``logit_bias`` so that each reply is
``max_tokens`` long on every server (``Counter.end_bias``):

* ``llama-server``: built from the vendored tree with our CMake flags
  (``llama_server_peer``), prompt cache on (``--cache-ram``, its default);
* ``llama-cpp-python``: built from the same pinned sdist (``peers``), with
  the sdist's ``server`` extra installed from PyPI into its venv (versions
  in the report), its LlamaRAMCache on (``--cache true --cache_type ram``)
  and ``--interrupt_requests false`` (its default cancels a running stream
  when the next request arrives);
* ours: ``python -m actors serve --config FILE --http`` with a ram-tier cache.

How each is started and stopped, and every flag, is ``http_servers.py``; the
exact command lines are in the report.

Two sections, each one start of the three servers (every run on fresh
prompts, so no run is served from an earlier one):

* ``chat``: a 10-turn chat, the whole conversation resent every turn (one
  slot / one sequence each): per-turn TTFT (streamed: time to the first
  content delta) and wall time, the chat's total wall time (the sum of its
  turns).  The servers' chats run in lockstep, turn by turn, the order
  rotated every turn: this VM's speed drifts by a quarter within minutes
  (llama-server's own 10-turn chat took 17.1 s and then 13.4 s, runs
  alternated whole), and a turn lasts about a second, so a drift now falls
  on all three alike.  Goal: ours lower than both;
* ``concurrent``: 8 streaming clients at once (threads), each its own short
  conversation: aggregate generated tokens/s and p99 TTFT.  Each server gets
  the parallelism it supports: ours ``n_seq_max`` = ``--parallel``,
  llama-server ``-np`` = ``--parallel`` (same context per sequence), and
  llama-cpp-python one request at a time (its server holds one ``Llama``
  behind a lock: it serialises).

Every run is taken under a ``CompetitionMonitor``; a figure with another
process on the cores meanwhile is marked ``contended``.  The idle servers'
own CPU during each run is recorded too (they stay up between runs).  Every
server is stopped by pid in ``finally``; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench_util import (  # puts the repo on sys.path
    CompetitionMonitor,
    competing,
    context_for,
    log,
    pct,
    rotated,
    stop_cleanly_on_sigterm,
)
from http_report import chat_summary, concurrent_summary, goals, plot, ratios, same_replies
from http_servers import MODEL, llama_cpp_python, llama_cpp_python_env, llama_server, ours
from workloads import ChatScript, chat_messages

OUT = Path(__file__).resolve().parent / "out"


@dataclass(frozen=True)
class Sizes:
    """How much each section does (the smoke sizes only prove the harness)."""

    chat_turns: int = 10
    chat_max_tokens: int = 48
    chat_reps: int = 3
    system_tokens: int = 400  # past the cache's cold-save threshold (256): a system prompt worth keeping
    clients: int = 8
    client_turns: int = 3
    client_max_tokens: int = 32
    client_system_tokens: int = 200
    concurrent_reps: int = 3
    parallel: int = 4
    chat_n_ctx: int = 4096
    tokens_per_seq: int = 1024


SMOKE = Sizes(chat_turns=3, chat_max_tokens=8, chat_reps=1, system_tokens=300, clients=8, client_turns=1,
              client_max_tokens=8, client_system_tokens=64, concurrent_reps=1)


# --------------------------------------------------------------------------- the client side


class Counter:
    """Token counts from the reply text (the model's vocabulary, no weights) where a server gives no usage."""

    def __init__(self) -> None:
        from actors.model.llama import Model, default_model_path

        self.model = Model(default_model_path(), vocab_only=True)
        self.lock = threading.Lock()
        self.bias = self.end_bias()

    def count(self, text: str) -> int:
        with self.lock:
            return len(self.model.tokenize(text, add_special=False)) if text else 0

    def end_bias(self) -> dict[str, float]:
        """``logit_bias`` that bans every end-of-generation token: each reply runs to ``max_tokens``.

        Greedy replies still differ between servers (numerics depend on batch shape and cache
        restores), and so did their lengths (411, 447 and 314 tokens in one 10-turn chat), which made
        the total wall compare different work.  With the ends banned, all three generate the same
        number of tokens every turn."""
        with self.lock:
            ids = [t for t in range(self.model.info.n_vocab) if self.model.is_eog(t)]
        return {str(t): -100.0 for t in ids}

    def close(self) -> None:
        self.model.close()


def client(base_url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600.0)


def stream_turn(oa: Any, messages: list[dict[str, str]], max_tokens: int, counter: Counter) -> dict[str, Any]:
    """One streamed chat completion: TTFT to the first content delta, wall to the stream's end, tokens out."""
    t0 = time.perf_counter()
    first = None
    parts: list[str] = []
    usage = None
    stream = oa.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0.0,
                                        seed=0, stream=True, stream_options={"include_usage": True},
                                        logit_bias=counter.bias)
    for chunk in stream:
        if getattr(chunk, "usage", None):
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta is not None and choice.delta.content:
                if first is None:
                    first = time.perf_counter() - t0
                parts.append(choice.delta.content)
    end = time.perf_counter()
    text = "".join(parts)
    details = getattr(usage, "prompt_tokens_details", None) if usage else None
    return {"ttft_ms": round((first if first is not None else end - t0) * 1e3, 2),
            "wall_ms": round((end - t0) * 1e3, 2), "text": text,
            "completion_tokens": usage.completion_tokens if usage else counter.count(text),
            "tokens_from": "usage" if usage else "text",
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "cached_tokens": getattr(details, "cached_tokens", None), "t0": t0, "end": end}


def cpu_s(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def measured(fn: Callable[[], dict[str, Any]], idle: list[int], busy: list[int]) -> dict[str, Any]:
    """Run ``fn`` under a competition monitor; also the CPU the idle servers (``idle`` pids) used meanwhile.

    ``busy``: the processes of the server being measured, which are never counted as its competition."""
    c0 = cpu_s(idle)
    with CompetitionMonitor(exclude=set(busy)) as mon:
        out = fn()
    out["competition"] = mon.summary()
    out["idle_servers_cpu_s"] = round(cpu_s(idle) - c0, 3)
    return out


class Chat:
    """One server's conversation, one turn at a time, the whole history resent every turn."""

    def __init__(self, oa: Any, script: ChatScript, variant: int, counter: Counter, idle: list[int]) -> None:
        self.oa, self.script, self.counter, self.idle = oa, script, counter, idle
        self.system = f"Session {variant}. " + script.system_prompt(0)
        self.history: list[tuple[str, str]] = []
        self.turns: list[dict[str, Any]] = []
        self.idle_cpu_s = 0.0  # what the other servers used while this one's turns ran

    def turn(self) -> None:
        question = self.script.question(0, len(self.turns))
        c0 = cpu_s(self.idle)
        r = stream_turn(self.oa, chat_messages(self.system, self.history, question), self.script.reply_tokens,
                        self.counter)
        self.idle_cpu_s += cpu_s(self.idle) - c0
        self.history.append((question, r["text"]))
        r.pop("t0"), r.pop("end")
        self.turns.append(r)

    def result(self, competition: dict[str, Any]) -> dict[str, Any]:
        return {"total_wall_s": round(sum(t["wall_ms"] for t in self.turns) / 1e3, 4), "turns": self.turns,
                "competition": competition, "idle_servers_cpu_s": round(self.idle_cpu_s, 3)}


def lockstep_chats(servers: dict[str, Any], clients: dict[str, Any], script: ChatScript, reps: int,
                   counter: Counter) -> dict[str, list[dict[str, Any]]]:
    """``reps`` rounds of one chat per server, run turn by turn with the servers' order rotated every turn.

    The competition monitor covers the whole round and never counts any of the servers."""
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in servers}
    every_pid = {p for s in servers.values() for p in s.pids()}
    names = list(servers)
    for rep in range(reps):
        chats = {n: Chat(clients[n], script, rep * len(names) + i + 1, counter, idle_pids(servers, n))
                 for i, n in enumerate(names)}
        with CompetitionMonitor(exclude=every_pid) as mon:
            for t in range(script.turns):
                for n in rotated(names, rep + t):
                    chats[n].turn()
        competition = mon.summary()
        for n, chat in chats.items():
            runs[n].append(chat.result(competition))
        log(f"  chat round {rep + 1}/{reps} done")
    return runs


def concurrent_run(url: str, script: ChatScript, variant: int, counter: Counter) -> dict[str, Any]:
    """``script.users`` clients at once (a thread and a client each), each its own ``script.turns``-turn chat."""
    results: list[list[dict[str, Any]]] = [[] for _ in range(script.users)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(script.users)

    def one(u: int) -> None:
        try:
            oa = client(url)
            system = f"Session {variant}. " + script.system_prompt(u)
            history: list[tuple[str, str]] = []
            barrier.wait(60)
            for t in range(script.turns):
                question = script.question(u, t)
                r = stream_turn(oa, chat_messages(system, history, question), script.reply_tokens, counter)
                history.append((question, r.pop("text")))
                results[u].append(r)
            oa.close()
        except BaseException as e:  # reported after the join, never lost in the thread
            errors.append(e)
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.abort()

    threads = [threading.Thread(target=one, args=(u,), name=f"client-{u}") for u in range(script.users)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(1800)
    if errors:
        raise RuntimeError(f"a concurrent client failed: {errors[0]!r}") from errors[0]
    reqs = [r for rs in results for r in rs]
    wall = max(r["end"] for r in reqs) - min(r["t0"] for r in reqs)
    tokens = sum(r["completion_tokens"] for r in reqs)
    ttft = [r["ttft_ms"] for r in reqs]
    return {"wall_s": round(wall, 4), "requests": len(reqs), "completion_tokens": tokens,
            "aggregate_tok_s": round(tokens / wall, 2), "ttft_p50_ms": round(pct(ttft, 0.5), 2),
            "ttft_p99_ms": round(pct(ttft, 0.99), 2), "ttft_max_ms": round(max(ttft), 2),
            "tokens_from": sorted({r["tokens_from"] for r in reqs})}


def warm(srv: Any, counter: Counter) -> None:
    """A throwaway request on a fresh server: page faults, thread start-up, the client's connection."""
    oa = client(srv.base_url)
    stream_turn(oa, [{"role": "user", "content": "Warm-up: say hello."}], 4, counter)
    oa.close()


@contextlib.contextmanager
def started(sizes: Sizes, threads: int, lcp_py: Path | None, concurrent: bool) -> Iterator[dict[str, Any]]:
    """The three servers for one section (one slot each for the chat, ``sizes.parallel`` for the clients)."""
    if concurrent:
        ctx = context_for(sizes.parallel, sizes.tokens_per_seq)
        n_ctx, slots = ctx["n_ctx"], sizes.parallel
    else:
        n_ctx, slots = sizes.chat_n_ctx, 1
    with contextlib.ExitStack() as stack:
        servers: dict[str, Any] = {
            "ours": stack.enter_context(ours(threads, n_ctx, slots, queue=4 * sizes.clients)),
            "llama_server": stack.enter_context(llama_server(threads, n_ctx, slots)),
        }
        if lcp_py is not None:  # one Llama, serialised: its n_ctx is the whole context for one request
            servers["llama_cpp_python"] = stack.enter_context(llama_cpp_python(lcp_py, threads, sizes.tokens_per_seq
                                                                               if concurrent else n_ctx))
        yield servers


def idle_pids(servers: dict[str, Any], busy: str) -> list[int]:
    return [p for n, s in servers.items() if n != busy for p in s.pids()]


def alternated(servers: dict[str, Any], reps: int, what: str,
               one: Callable[[str, int], dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``reps`` rounds of ``one(server, variant)`` on every server, the order rotated each round, each measured.

    ``variant`` is new for every run, so its prompts match nothing an earlier run left in any cache.
    """
    runs: dict[str, list[dict[str, Any]]] = {}
    variant = 0
    for rep in range(reps):
        for name in rotated(list(servers), rep):
            variant += 1
            runs.setdefault(name, []).append(measured(lambda n=name, v=variant: one(n, v), idle_pids(servers, name),
                                                      servers[name].pids()))
        log(f"  {what} round {rep + 1}/{reps} done")
    return runs


def section_chat(sizes: Sizes, threads: int, lcp_py: Path | None, counter: Counter) -> dict[str, Any]:
    script = ChatScript(users=1, turns=sizes.chat_turns, system_tokens=sizes.system_tokens,
                        reply_tokens=sizes.chat_max_tokens)
    with started(sizes, threads, lcp_py, concurrent=False) as servers:
        cmds = {n: s.cmd for n, s in servers.items()}
        clients = {n: client(s.base_url) for n, s in servers.items()}
        for s in servers.values():
            warm(s, counter)
        runs = lockstep_chats(servers, clients, script, sizes.chat_reps, counter)
        for c in clients.values():
            c.close()
    out = {"turns": sizes.chat_turns, "max_tokens": sizes.chat_max_tokens, "slots": 1, "commands": cmds,
           "servers": {n: chat_summary(r) for n, r in runs.items()}, "runs": runs}
    out["same_replies_as_ours"] = same_replies(out)
    return out


def section_concurrent(sizes: Sizes, threads: int, lcp_py: Path | None, counter: Counter) -> dict[str, Any]:
    script = ChatScript(users=sizes.clients, turns=sizes.client_turns, system_tokens=sizes.client_system_tokens,
                        reply_tokens=sizes.client_max_tokens)
    with started(sizes, threads, lcp_py, concurrent=True) as servers:
        cmds = {n: s.cmd for n, s in servers.items()}
        for s in servers.values():
            warm(s, counter)
        runs = alternated(servers, sizes.concurrent_reps, "concurrent",
                          lambda n, v: concurrent_run(servers[n].base_url, script, 1000 + v, counter))
    parallelism = {"ours": f"n_seq_max={sizes.parallel}", "llama_server": f"-np {sizes.parallel}",
                   "llama_cpp_python": "1 (its server serialises every request behind one lock)"}
    return {"clients": sizes.clients, "turns_per_client": sizes.client_turns, "max_tokens": sizes.client_max_tokens,
            "parallelism": {n: parallelism[n] for n in runs}, "commands": cmds,
            "servers": {n: concurrent_summary(r) for n, r in runs.items()}, "runs": runs}


# --------------------------------------------------------------------------- main


def run(sizes: Sizes, smoke: bool, with_lcp: bool, only: set[str]) -> dict[str, Any]:
    import openai

    from actors.model.llama import default_model_path
    from actors.model.options import default_threads

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import fetch_llama

    threads = default_threads()
    report: dict[str, Any] = {"smoke": smoke, "sizes": asdict(sizes), "threads": threads,
                              "model": str(default_model_path()), "model_name": default_model_path().name,
                              "versions": {"openai": openai.__version__, "llama_cpp_commit": fetch_llama.LLAMA_COMMIT},
                              "competition_at_start": competing()}
    lcp_py = None
    if with_lcp:
        lcp_py, report["versions"]["llama_cpp_python_server"] = llama_cpp_python_env()
    counter = Counter()
    try:
        if "chat" in only:
            log(f"[http] {sizes.chat_turns}-turn chat through the openai client, servers in lockstep turn by turn")
            report["chat"] = section_chat(sizes, threads, lcp_py, counter)
        if "concurrent" in only:
            log(f"[http] {sizes.clients} concurrent streaming clients")
            report["concurrent"] = section_concurrent(sizes, threads, lcp_py, counter)
    finally:
        counter.close()
    report["competition_at_end"] = competing()
    report["ratios"] = ratios(report)
    report["goals"] = goals(report)
    return report


def main() -> None:
    stop_cleanly_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: proves the harness, figures not for quoting")
    ap.add_argument("--no-llama-cpp-python", action="store_true", help="skip llama-cpp-python (builds for minutes)")
    ap.add_argument("--parallel", type=int, default=None, help="ours: n_seq_max, llama-server: -np (default 4)")
    ap.add_argument("--reps", type=int, default=None, help="runs per server in each section")
    ap.add_argument("--only", default="chat,concurrent", help="comma-separated: chat,concurrent")
    a = ap.parse_args()
    sizes = SMOKE if a.smoke else Sizes()
    if a.parallel:
        sizes = Sizes(**{**asdict(sizes), "parallel": a.parallel})
    if a.reps:
        sizes = Sizes(**{**asdict(sizes), "chat_reps": a.reps, "concurrent_reps": a.reps})
    t0 = time.perf_counter()
    report = run(sizes, a.smoke, not a.no_llama_cpp_python, {x.strip() for x in a.only.split(",")})
    report["total_s"] = round(time.perf_counter() - t0, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "http_compare.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, OUT / "http_compare.png")
    print(json.dumps(report, indent=2))
    for g in report["goals"]:
        mark = "info" if g["met"] is None else "ok  " if g["met"] else "MISS"
        log(f"  {mark} {g['goal']}: {g['value']:.3g} (goal {g['target']})"
            + (" [contended]" if g["contended"] else ""))


if __name__ == "__main__":
    main()
