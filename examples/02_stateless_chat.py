"""02. A stateless chat handler that resends the whole conversation every turn.

An HTTP endpoint in front of a model usually keeps no state: each request carries the full
conversation. The handler below renders it through the model's chat template and calls ``complete``
with no cache hints. On turn 2 the cache finds the longest saved prefix of the new prompt by itself
(block-aligned, token-exact) and only the new tail is prefilled: ``cache_hit_kind`` is ``partial`` and
``cache_delta.read`` says how many prompt tokens were served from the cache.

    .venv/bin/python examples/02_stateless_chat.py
"""

from __future__ import annotations

from typing import Any

from _common import MODEL, counters_delta, fact, parser, running_system

from actors.api import System
from actors.model.messages import Completion

SYSTEM_PROMPT = (
    "You are the assistant of a small public library. Answer in one short sentence. The library opens at 9am "
    "and closes at 7pm on weekdays, and at 5pm on Saturdays. It is closed on Sundays. Members can borrow up "
    "to eight books for three weeks. Late returns cost ten cents per book per day."
)
KEYS = ("hits_exact", "hits_longest_prefix", "misses", "saves_cold", "saves_finish")


def handle_chat(system: System, messages: list[dict[str, Any]]) -> Completion:
    """The whole handler: render the conversation, complete, return. No session, no parent_key."""
    prompt = system.apply_chat_template(MODEL, messages, system=SYSTEM_PROMPT)
    return system.complete(MODEL, prompt, max_tokens=24)


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL)
        conversation: list[dict[str, Any]] = [{"role": "user", "content": "When do you close on Saturday?"}]
        before = system.cache_counters()
        t1 = handle_chat(system, conversation)
        conversation += [{"role": "assistant", "content": t1.reply.strip()},
                         {"role": "user", "content": "How many books can I borrow?"}]
        mid = system.cache_counters()
        t2 = handle_chat(system, conversation)
        after = system.cache_counters()
        fact("turn1 reply", repr(t1.reply.strip()))
        fact("turn1 cache_hit_kind", t1.cache_hit_kind)
        fact("turn1 cache_delta.read", t1.cache_delta.read)
        fact("turn1 prompt tokens", t1.stats["prompt_tokens"])
        fact("turn2 reply", repr(t2.reply.strip()))
        fact("turn2 cache_hit_kind", t2.cache_hit_kind)
        fact("turn2 cache_delta.read", t2.cache_delta.read)
        fact("turn2 prompt tokens", t2.stats["prompt_tokens"])
        fact("turn2 prefilled tokens", t2.stats["prompt_tokens"] - t2.cache_delta.read)
        fact("turn1 counters", counters_delta(before, mid, KEYS))
        fact("turn2 counters", counters_delta(mid, after, KEYS))


if __name__ == "__main__":
    main()
