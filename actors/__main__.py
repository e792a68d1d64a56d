"""Command line: `llama-actors` or `python -m actors`.

serve     run an actor system in the foreground (a daemon other shells attach to)
stop      stop a running system gracefully
load      load a model into a running system
status    models, phases, queues, last cache hit and cache counters, read without asking the models
complete  stream a completion to the terminal
shell     a Python console attached to a running system (`system` is ready)

Errors are one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import code
import json
import sys
from typing import Any


def _attach(port: int) -> Any:
    from actors.api import System

    return System.attach(port)


def _status(port: int) -> dict[str, Any]:
    with _attach(port) as system:
        return {
            "port": port,
            "models": system.models(),
            "observed": [r.__dict__ for r in system.observe_all()],
            "queue_depth": system.queue_depth(),
            "cache": {k: v for k, v in system.cache_counters().items() if v},
        }


def _complete(a: argparse.Namespace) -> int:
    with _attach(a.port) as system:
        prompt = a.prompt
        if a.chat:
            prompt = system.apply_chat_template(a.model, [{"role": "user", "content": prompt}])
        stream = system.infer(a.model, prompt, max_tokens=a.max_tokens, parse_special=a.chat,
                              temperature=a.temperature, seed=a.seed)
        for chunk in stream:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
        r = stream.result
        sys.stdout.write("\n")
        print(f"[{r.cache_hit_kind}, {r.finish_reason}, ttft {r.stats.get('ttft_ms')} ms, "
              f"{len(r.generated)} tokens]", file=sys.stderr)
    return 0


def _load(a: argparse.Namespace) -> int:
    context = json.loads(a.context) if a.context else None
    with _attach(a.port) as system:
        info = system.load_model(a.id, a.path, context=context)
    print(json.dumps(info, default=str))
    return 0


def _shell(port: int) -> int:
    system = _attach(port)
    banner = (f"llama-actors shell on port {port}: `system` is attached "
              "(system.models(), system.complete(model, prompt), system.observe_all(), system.cache_counters())")
    try:
        code.interact(banner=banner, local={"system": system})
    finally:
        system.close()
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="llama-actors", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run an actor system in the foreground")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--cache-dir", help="disk tier directory (default: ram tier only)")
    s.add_argument("--log", help="file for actor output")
    for name in ("stop", "status", "shell"):
        p = sub.add_parser(name)
        p.add_argument("--port", type=int, required=True)
    ld = sub.add_parser("load", help="load a model into a running system")
    ld.add_argument("--port", type=int, required=True)
    ld.add_argument("--id", required=True, help="model id to register")
    ld.add_argument("--path", help="GGUF file (default: the bundled SmolLM2-135M)")
    ld.add_argument("--context", help='context options as JSON, e.g. \'{"n_ctx": 4096, "n_seq_max": 4}\'')
    c = sub.add_parser("complete", help="stream a completion to the terminal")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--model", required=True)
    c.add_argument("--max-tokens", type=int, default=128)
    c.add_argument("--temperature", type=float, default=0.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--raw", dest="chat", action="store_false", help="send the prompt as is (no chat template)")
    c.add_argument("prompt")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        if a.cmd == "serve":
            from actors.supervisor import runtime

            args = ["serve", "--port", str(a.port)]
            if a.cache_dir:
                args += ["--cache-dir", a.cache_dir]
            if a.log:
                args += ["--log", a.log]
            return runtime.main(args)
        if a.cmd == "stop":
            from actors.supervisor import runtime

            runtime.stop(a.port)
            return 0
        if a.cmd == "status":
            print(json.dumps(_status(a.port), default=str, indent=2))
            return 0
        if a.cmd == "load":
            return _load(a)
        if a.cmd == "complete":
            return _complete(a)
        return _shell(a.port)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one clear line, not a traceback
        reason = getattr(e, "reason", type(e).__name__)
        text = str(e) if str(e).startswith(reason) else f"{reason}: {e}"
        print(f"llama-actors {a.cmd}: {text}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
