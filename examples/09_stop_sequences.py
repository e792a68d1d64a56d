"""09. Stop sequences: end generation at a string of your choosing, and never see that string.

``stop_sequences=[...]`` ends a request at the first of the strings to appear in the answer text (by
position, even when it spans two tokens). The match is trimmed: it is not in ``reply`` and not in any
streamed chunk, because the stream holds back the few bytes that could still turn into a match. The
result says which string fired (``stop_sequence``) and ``finish_reason`` is ``stop``. Typical uses:
stop a list after its second item, stop at the next "User:" turn of a hand-rolled transcript, or
cut a completion at the end of a line.

    .venv/bin/python examples/09_stop_sequences.py
"""

from __future__ import annotations

from _common import MODEL, fact, parser, running_system

from actors.model.messages import TokenChunk

QUESTION = "List three fruits, one per line, numbered."
STOPS = ["Grape", "\n3."]  # both occur; the one that comes first in the text wins, whatever the list order


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL)
        prompt = system.apply_chat_template(MODEL, [{"role": "user", "content": QUESTION}])
        full = system.complete(MODEL, prompt, max_tokens=40)
        fact("full reply", repr(full.reply))
        fact("full finish_reason", full.finish_reason)

        stopped = system.complete(MODEL, prompt, max_tokens=40, stop_sequences=STOPS)
        fact("stop_sequences", STOPS)
        fact("sync reply", repr(stopped.reply))
        fact("sync stop_sequence", repr(stopped.stop_sequence))
        fact("sync finish_reason", stopped.finish_reason)
        fact("sync reply is a prefix of the full reply", full.reply.startswith(stopped.reply))
        rest = full.reply[len(stopped.reply):]
        fact("full reply continues with the stop string", bool(stopped.stop_sequence) and
             rest.startswith(stopped.stop_sequence or ""))
        fact("stop string in sync reply", any(s in stopped.reply for s in STOPS))

        stream = system.infer(MODEL, prompt, max_tokens=40, stop_sequences=STOPS)
        chunks = [c.text for c in stream if isinstance(c, TokenChunk)]
        result = stream.result
        assert result is not None
        fact("stream chunks", chunks)
        fact("stop string in any chunk", any(s in c for c in chunks for s in STOPS))
        fact("stream text equals sync reply", "".join(chunks) == stopped.reply)
        fact("stream stop_sequence", repr(result.stop_sequence))
        fact("stream finish_reason", result.finish_reason)

        never = system.complete(MODEL, prompt, max_tokens=40, stop_sequences=["zebra crossing"])
        fact("no match stop_sequence", repr(never.stop_sequence))
        fact("no match reply equals full reply", never.reply == full.reply)


if __name__ == "__main__":
    main()
