"""08. Grammar-constrained sampling: make the model answer in JSON that always parses.

A GBNF grammar passed as ``grammar=`` constrains the sampler for one request: at every step only
tokens that keep the output inside the grammar can be sampled, so the reply has the shape you asked
for even from a 135M model that would otherwise ramble. Use it whenever a program reads the answer:
JSON for an API, a yes/no, a number, an enum. The grammar lives only as long as its request; the
next request without one samples freely again (shown below with the same prompt).

    .venv/bin/python examples/08_grammar.py
"""

from __future__ import annotations

import json

from _common import MODEL, fact, parser, running_system

# An object with a name (letters and spaces) and an integer age; `ws` allows optional spaces.
GRAMMAR = r"""
root   ::= "{" ws "\"name\":" ws string "," ws "\"age\":" ws number ws "}"
string ::= "\"" [A-Za-z ]{1,24} "\""
number ::= [1-9] [0-9]{0,2}
ws     ::= [ ]?
"""
QUESTION = "Invent a person and give their name and age as JSON."


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port) as system:
        system.load_model(MODEL)
        prompt = system.apply_chat_template(MODEL, [{"role": "user", "content": QUESTION}])
        constrained = system.complete(MODEL, prompt, max_tokens=40, grammar=GRAMMAR)
        fact("grammar reply", repr(constrained.reply))
        obj = json.loads(constrained.reply)  # never raises: the grammar only admits this shape
        fact("parsed", True)
        fact("object", obj)
        fact("keys", sorted(obj))
        fact("age is int", isinstance(obj["age"], int))
        fact("finish_reason", constrained.finish_reason)
        free = system.complete(MODEL, prompt, max_tokens=40)  # same prompt, no grammar: whatever the model likes
        fact("free reply", repr(free.reply.strip()))
        try:
            json.loads(free.reply)
            free_parses = True
        except ValueError:
            free_parses = False
        fact("free reply parses as JSON", free_parses)


if __name__ == "__main__":
    main()
