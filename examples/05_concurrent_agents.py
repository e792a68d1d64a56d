"""05. Concurrent agents on a shared system prompt.

Agents built on one model usually share a long system prompt and differ only in their task. With
``n_seq_max=4`` the model decodes up to four requests together, one ``llama_decode`` per step. The first
agent's request saves the shared prompt to the cache; the agents that then run concurrently each find
the longest saved prefix (the shared part, block-aligned), restore it into their own sequence and
prefill only their own question.

    .venv/bin/python examples/05_concurrent_agents.py
"""

from __future__ import annotations

import threading
import time

from _common import MODEL, fact, parser, running_system

from actors.model.messages import Completion

SHARED = (
    "You are a helpful assistant working for a travel agency. You answer customer questions in one short "
    "sentence. The agency sells train tickets, hotel rooms and guided tours in Italy, France and Spain. "
    "Prices are in euros. Refunds are possible up to two days before departure. Office hours are 9 to 17.\n"
)
QUESTIONS = ["Do you sell tickets for trains in Spain?", "Can I get a refund one day before I leave?",
             "Which countries do your tours cover?", "What currency are the prices in?"]


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL, context={"n_ctx": 2048, "n_seq_max": 4})
        first = system.complete(MODEL, SHARED + "Question: Hello, who are you?\nAnswer:", max_tokens=12)
        results: dict[int, Completion] = {}
        errors: list[BaseException] = []

        def agent(n: int) -> None:
            try:
                results[n] = system.complete(MODEL, f"{SHARED}Question: {QUESTIONS[n]}\nAnswer:", max_tokens=16)
            except BaseException as e:  # reported below, never lost in the thread
                errors.append(e)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=agent, args=(n,)) for n in range(len(QUESTIONS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        if errors:
            raise errors[0]
        fact("first agent cache_hit_kind", first.cache_hit_kind)
        for n in sorted(results):
            r = results[n]
            fact(f"agent {n}", f"{r.cache_hit_kind} read={r.cache_delta.read} seq={r.stats['seq']} "
                               f"ttft_ms={r.stats['ttft_ms']:.1f} "
                               f"reply={r.reply.strip()!r}")
        fact("agents", len(QUESTIONS))
        fact("replies", sum(1 for r in results.values() if r.reply.strip()))
        fact("cache_hit_kinds", sorted(r.cache_hit_kind for r in results.values()))
        fact("sequences used", len({r.stats["seq"] for r in results.values()}))
        fact("concurrent wall_s", round(wall, 2))


if __name__ == "__main__":
    main()
