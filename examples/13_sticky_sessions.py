"""13. Sticky sessions: ``session_id`` keeps a conversation's sequence live between turns.

A ``session_id`` (a conversation id from your front end) pins the sequence the request ran on. The
next turn of that session, if its prompt extends the tokens the sequence holds (prompt + reply), is
prefilled in place on the live KV cells: no cache lookup and no restore, only the new suffix.
``cache_hit_kind`` says ``sticky``. ``end_session`` frees the sequence when the conversation is over
(idempotent: an unknown id answers False). A prompt that does not extend the stored tokens drops the
pinned state and takes the normal cold/cached path, as when a user starts over.

    .venv/bin/python examples/13_sticky_sessions.py
"""

from __future__ import annotations

from _common import MODEL, fact, parser, running_system

PREAMBLE = (
    "A conversation between a customer and the support assistant of a bicycle shop. The shop repairs "
    "city bikes and e-bikes, sells spare parts, and rents bikes by the day. Repairs take two days.\n"
)


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL, context={"n_ctx": 2048, "n_seq_max": 2})
        sid = "conversation-42"
        t1 = system.complete(MODEL, PREAMBLE + "Customer: How long does a repair take?\nAssistant:",
                             max_tokens=12, session_id=sid)
        turn2 = [*t1.context_tokens,
                 *system.tokenize(MODEL, "\nCustomer: Can I rent a bike meanwhile?\nAssistant:", add_special=False)]
        t2 = system.complete(MODEL, turn2, max_tokens=12, session_id=sid)
        fact("turn1 cache_hit_kind", t1.cache_hit_kind)
        fact("turn1 reply", repr(t1.reply.strip()))
        fact("turn2 cache_hit_kind", t2.cache_hit_kind)
        fact("turn2 cache_delta.read", t2.cache_delta.read)
        fact("turn2 read == turn1 committed_tokens", t2.cache_delta.read == t1.committed_tokens)
        fact("turn2 prefilled tokens", len(turn2) - t2.cache_delta.read)
        fact("turn2 reply", repr(t2.reply.strip()))
        fact("sessions pinned", [s["session_id"] for s in system.status(MODEL)["sessions"]])
        fact("end_session", system.end_session(MODEL, sid))
        fact("end_session again", system.end_session(MODEL, sid))
        fact("sessions after end", [s["session_id"] for s in system.status(MODEL)["sessions"]])


if __name__ == "__main__":
    main()
