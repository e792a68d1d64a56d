"""16. Lock-free observability: read a model's phase and queues while it is busy generating.

A router that sends work to the least loaded model must not wait behind the work it is measuring.
``observe`` (one model), ``observe_all`` and ``queue_depth`` (all models) read a shared-memory table
that every model process updates at each transition: no message is sent, nothing queues behind a
decode, and a read takes microseconds. Here two requests go to a model with one sequence: one
generates, the other waits in the pending queue, and the main thread watches both happen.

    .venv/bin/python examples/16_observability.py
"""

from __future__ import annotations

import threading
import time

from _common import MODEL, fact, parser, running_system


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL, context={"n_ctx": 1024, "n_seq_max": 1})
        prompts = ["Once upon a time, a young dragon", "In a city of robots, one small robot"]
        errors: list[BaseException] = []

        def request(prompt: str) -> None:
            try:
                system.complete(MODEL, prompt, max_tokens=64)
            except BaseException as e:  # reported below, never lost in the thread
                errors.append(e)

        threads = [threading.Thread(target=request, args=(p,)) for p in prompts]
        phases: list[str] = []
        max_pending = max_depth = max_global = 0
        reads_us: list[float] = []
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            t0 = time.perf_counter()
            rec = system.observe(MODEL)
            reads_us.append((time.perf_counter() - t0) * 1e6)
            if rec is not None:
                if not phases or phases[-1] != rec.phase:
                    phases.append(rec.phase)
                max_pending = max(max_pending, rec.pending_len)
                max_depth = max(max_depth, rec.queue_depth)
            max_global = max(max_global, system.queue_depth())
            time.sleep(0.002)
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        reads_us.sort()
        after = system.observe(MODEL)
        assert after is not None
        fact("phases seen", phases)
        fact("max pending_len", max_pending)
        fact("max queue_depth", max_depth)
        fact("max global queue_depth", max_global)
        fact("observe reads", len(reads_us))
        fact("observe p50_us", round(reads_us[len(reads_us) // 2], 1))
        fact("observe p99_us", round(reads_us[int(len(reads_us) * 0.99)], 1))
        fact("phase after", after.phase)
        fact("pending_len after", after.pending_len)
        fact("queue_depth after", system.queue_depth())
        fact("last_cache_hit", after.last_cache_hit)
        fact("observe_all", [r.model_id for r in system.observe_all()])


if __name__ == "__main__":
    main()
