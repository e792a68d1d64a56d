"""03. A multi-turn session that threads ``parent_key`` from one turn to the next.

When your own code keeps the conversation (a session object, an agent loop), it already knows which
saved state the next turn continues: ``complete`` returns ``finish_key``, the cache key of exactly the
tokens the model holds after the turn (``context_tokens``). Passing it as ``parent_key`` makes the next
turn resume from that row directly, with no longest-prefix search, and prefill only the new text.

``finish_key`` is None when the turn is shorter than the cache policy's ``min_tokens`` (64 by default):
such short contexts are cheaper to recompute than to restore, so the session falls back to a normal
lookup. The prompt below is long enough for a finish save.

    .venv/bin/python examples/03_parent_key.py
"""

from __future__ import annotations

from _common import MODEL, fact, parser, running_system

from actors.api import System
from actors.model.messages import Completion

PREAMBLE = (
    "The following is a conversation between a user and a friendly assistant that knows a lot about "
    "astronomy. The assistant answers briefly, with one fact per answer, and never makes things up. "
    "If it does not know the answer it says so plainly.\n\n"
)


def chat(system: System, prompt: list[int], parent_key: bytes | None) -> Completion:
    """One turn; ``parent_key`` (or None on the first turn) names the state this prompt continues."""
    return system.complete(MODEL, prompt, max_tokens=16, parent_key=parent_key)


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL)
        turn1 = system.tokenize(MODEL, PREAMBLE + "User: What is the largest planet?\nAssistant:")
        r1 = chat(system, turn1, None)
        # The next prompt is exactly what the model holds (prompt + reply) plus the new user text.
        turn2 = [*r1.context_tokens, *system.tokenize(MODEL, "\nUser: And the smallest one?\nAssistant:",
                                                       add_special=False)]
        r2 = chat(system, turn2, r1.finish_key)
        fact("turn1 reply", repr(r1.reply.strip()))
        fact("turn1 cache_hit_kind", r1.cache_hit_kind)
        fact("turn1 committed_tokens", r1.committed_tokens)
        fact("turn1 finish_key", r1.finish_key.hex()[:16] if r1.finish_key else None)
        fact("turn2 reply", repr(r2.reply.strip()))
        fact("turn2 cache_hit_kind", r2.cache_hit_kind)
        fact("turn2 cache_delta.read", r2.cache_delta.read)
        fact("turn2 resumed from turn1", r2.cache_delta.read == r1.committed_tokens)
        fact("turn2 prefilled tokens", len(turn2) - r2.cache_delta.read)
        short = system.complete(MODEL, "User: Hi!\nAssistant:", max_tokens=4)
        fact("short turn finish_key", short.finish_key)


if __name__ == "__main__":
    main()
