"""23. Your own thespian actor as a subscriber: it sends ``Infer`` with itself as ``reply_to``.

The actor class lives in ``subscriber.py`` next to this script (an importable module, see its
docstring); this script creates it in the running system with ``createActor`` and asks it for a
streamed completion. Its collected text equals ``System.complete`` on the same prompt (greedy).

    .venv/bin/python examples/23_custom_subscriber.py
"""

from __future__ import annotations

import uuid

from _common import MODEL, fact, parser, running_system
from subscriber import Answer, Ask, Subscriber

from actors.supervisor import runtime

PROMPT = "The three primary colours are"


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL)
        sub = system.asys.createActor(Subscriber)  # in a process of the system, imported by module name
        ask = Ask(uuid.uuid4().hex, system.tree.models, MODEL, PROMPT, 16)
        answer = runtime.ask(system.asys, sub, ask, 120.0)  # the reply whose req_id matches
        assert isinstance(answer, Answer), answer
        direct = system.complete(MODEL, PROMPT, max_tokens=16)
        fact("subscriber finish_reason", answer.finish_reason)
        fact("subscriber chunks", answer.chunks)
        fact("subscriber text", repr(answer.text))
        fact("same text as complete", answer.text == direct.reply)
        fact("subscriber error", answer.error)


if __name__ == "__main__":
    main()
