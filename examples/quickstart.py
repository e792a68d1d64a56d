"""Main job: spawn the actor system on the bundled model, complete, stream, and show cold vs warm.

The second identical request restores the saved KV state and the logits of the
last prompt position from the cache, so its first token needs no prefill and no
decode; its reply must be identical to the cold one. With --keep the system
stays up so another shell can inspect it (`python -m actors status --port N`).
"""

from __future__ import annotations

import argparse
import json
import time

from actors.api import System

SYSTEM = (
    "You are a support assistant for a hardware store. Answer in one or two sentences. "
    "Store hours are 8am to 6pm Monday to Saturday, closed on Sunday. We sell tools, paint, "
    "garden supplies, plumbing and electrical parts. Returns are accepted within 30 days with a receipt. "
    "Delivery is free for orders over 50 dollars within 20 miles of the store. "
    "Never invent products; if unsure, suggest calling the store."
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep", action="store_true", help="keep the system running until Ctrl-C")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with System() as system:
        info = system.load_model("smol", context={"n_ctx": 4096, "n_seq_max": 2})
        print(f"actor system on port {system.port}: model 'smol' loaded in {time.perf_counter() - t0:.1f} s "
              f"({info.get('path', 'bundled SmolLM2-135M-Instruct')})")
        prompt = system.apply_chat_template(
            "smol", [{"role": "user", "content": "Are you open on Sunday, and can I return a drill?"}], system=SYSTEM)

        cold = system.complete("smol", prompt, max_tokens=48, parse_special=True)
        warm = system.complete("smol", prompt, max_tokens=48, parse_special=True)
        print(f"\nreply: {cold.reply.strip()!r}")
        print(f"cold: {cold.cache_hit_kind:5}  time to first token {cold.stats['ttft_ms']:8.2f} ms  "
              f"cache_delta {cold.cache_delta}")
        print(f"warm: {warm.cache_hit_kind:5}  time to first token {warm.stats['ttft_ms']:8.2f} ms  "
              f"cache_delta {warm.cache_delta}")
        print(f"cold/warm time to first token: {cold.stats['ttft_ms'] / max(warm.stats['ttft_ms'], 1e-3):.0f}x; "
              f"identical replies: {cold.generated == warm.generated}")

        print("\nstreamed: ", end="", flush=True)
        sea = system.apply_chat_template("smol", [{"role": "user", "content": "Write one sentence about the sea."}])
        for chunk in system.infer("smol", sea, max_tokens=40, parse_special=True):
            print(chunk.text, end="", flush=True)
        print()

        counters = {k: v for k, v in system.cache_counters().items() if v}
        print(f"\ncache counters: {json.dumps(counters)}")
        print(f"observability (no message to the model): {system.observe('smol')}")
        if cold.generated != warm.generated:
            raise SystemExit("warm reply differs from cold reply")
        if args.keep:
            print("\nsystem kept running; from another shell:")
            print(f"  .venv/bin/python -m actors status --port {system.port}")
            print(f"  .venv/bin/python -m actors complete --port {system.port} --model smol 'Hello'")
            print("Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    print("\nsystem stopped, no process left behind")


if __name__ == "__main__":
    main()
