"""15. Multi-tenant decoding: several sessions at once on one model with ``n_seq_max > 1``.

A model loaded with ``n_seq_max=N`` holds N sequences; up to N requests prefill and decode together in
one ``llama_decode`` per step, each with its own sampler (temperature, seed, grammar never leak between
requests). Requests beyond N wait in the model's pending queue. Sticky sessions pin sequences, so at
most N sessions can be live: one more is refused with ``session_pool_full`` until a session ends. A
request without a session still runs: it reclaims the least recently used idle session's sequence.

    .venv/bin/python examples/15_multi_tenant.py
"""

from __future__ import annotations

import threading

from _common import MODEL, fact, parser, running_system

from actors.api import ModelError
from actors.model.messages import Completion

N_SEQ = 3
USERS = [("alice", "Write a haiku about rain.", {"temperature": 0.8, "seed": 1}),
         ("bob", "Name three colours.", {"temperature": 0.0}),
         ("carol", "Say hello in French.", {"temperature": 0.5, "seed": 7})]


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL, context={"n_ctx": 512 * N_SEQ, "n_seq_max": N_SEQ})
        results: dict[str, Completion] = {}
        errors: list[BaseException] = []

        def tenant(user: str, question: str, sampler: dict[str, float]) -> None:
            try:
                prompt = system.apply_chat_template(MODEL, [{"role": "user", "content": question}])
                results[user] = system.complete(MODEL, prompt, max_tokens=12, session_id=user, **sampler)
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=tenant, args=u) for u in USERS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        for user, _q, _s in USERS:
            r = results[user]
            fact(f"{user}", f"seq={r.stats['seq']} reply={r.reply.strip()!r}")
        fact("n_seq_max", N_SEQ)
        fact("sequences used", len({r.stats["seq"] for r in results.values()}))
        fact("sessions pinned", sorted(s["session_id"] for s in system.status(MODEL)["sessions"]))
        try:
            system.complete(MODEL, "Hi, I am dave.", max_tokens=4, session_id="dave")
            fact("new session while all pinned", "ok")
        except ModelError as e:
            fact("new session while all pinned", e.reason)
        fact("end_session alice", system.end_session(MODEL, "alice"))
        dave = system.complete(MODEL, "Hi, I am dave.", max_tokens=4, session_id="dave")
        fact("new session after end_session", f"ok seq={dave.stats['seq']}")
        # A request without a session is never refused: it takes the least recently used idle session's
        # sequence (that session's state is saved to the cache first, so its next turn is still warm).
        plain = system.complete(MODEL, "Count to three.", max_tokens=4)
        fact("request without session", f"ok seq={plain.stats['seq']}")
        fact("sessions pinned after", sorted(s["session_id"] for s in system.status(MODEL)["sessions"]))


if __name__ == "__main__":
    main()
