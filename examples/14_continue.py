"""14. Chat-template continuation: ``continue_`` appends a caller-asserted tail to a live session.

Sticky sessions (example 13) only resume in place when the new prompt extends the stored tokens
exactly. Chat templates often render the history differently from one turn to the next, so a
re-rendered prompt may not match and the session would start cold every turn. ``continue_`` skips the
check: you render the whole conversation, cut off the tokens the session already holds, and send only
the tail. No prefix comparison, no cache lookup; ``cache_hit_kind`` is ``continuation`` and
``cache_delta.read`` is the number of tokens the session held. If the tail is wrong the reply is
nonsense, but the engine stays consistent. Unknown or ended sessions answer ``no_session``.

    .venv/bin/python examples/14_continue.py
"""

from __future__ import annotations

from _common import MODEL, fact, parser, running_system

from actors.api import ModelError

SYSTEM_PROMPT = (
    "You are a cooking assistant. Answer in one short sentence. You know recipes from Italy, Mexico and "
    "Japan, and you always mention how long a dish takes to prepare. Prefer simple home cooking."
)


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL, context={"n_ctx": 2048, "n_seq_max": 2})
        sid = "chat-7"
        q1, q2 = "How do I cook rice?", "And how long for pasta?"
        turn1 = system.apply_chat_template(MODEL, [{"role": "user", "content": q1}], system=SYSTEM_PROMPT,
                                           tokenize=True)
        stream = system.infer(MODEL, turn1, max_tokens=24, session_id=sid)  # pins the session on finish
        reply1 = stream.text()
        r1 = stream.result
        assert r1 is not None
        prior = r1.committed_tokens  # prompt + reply tokens the session's sequence holds

        turn2 = system.apply_chat_template(MODEL, [{"role": "user", "content": q1},
                                                   {"role": "assistant", "content": reply1.strip()},
                                                   {"role": "user", "content": q2}],
                                           system=SYSTEM_PROMPT, tokenize=True)
        suffix = turn2[prior:]
        r2 = system.continue_(MODEL, suffix, session_id=sid, max_tokens=24)
        fact("turn1 reply", repr(reply1.strip()))
        fact("turn1 cache_hit_kind", r1.cache_hit_kind)
        fact("prior tokens", prior)
        fact("suffix tokens", len(suffix))
        # Debug check while developing the slicing: does the re-render really extend the stored tokens?
        fact("stored + suffix == re-render", list(r1.context_tokens) + suffix == turn2)
        fact("turn2 reply", repr(r2.reply.strip()))
        fact("turn2 cache_hit_kind", r2.cache_hit_kind)
        fact("turn2 cache_delta.read", r2.cache_delta.read)
        fact("turn2 read == prior tokens", r2.cache_delta.read == prior)
        fact("turn2 cache_delta.created", r2.cache_delta.created)
        fact("end_session", system.end_session(MODEL, sid))
        try:
            system.continue_(MODEL, suffix, session_id=sid, max_tokens=4)
            fact("continue after end_session", "ok")
        except ModelError as e:
            fact("continue after end_session", e.reason)


if __name__ == "__main__":
    main()
