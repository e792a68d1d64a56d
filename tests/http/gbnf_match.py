"""A small GBNF recognizer for tests: does a grammar accept a string?

Covers what ``actors.http.schema_grammar`` emits: string literals, character
classes (negation, ranges, ``\\xNN`` escapes), rule references, groups,
alternation and the ``? * +`` and ``{m,n}`` postfixes.  Matching returns every
end position (a set), so alternations and repetitions need no backtracking
state; the grammars it checks have no left recursion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

_ESC = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-", "^": "^"}


@dataclass(frozen=True)
class Lit:
    text: str


@dataclass(frozen=True)
class Cls:
    ranges: tuple[tuple[str, str], ...]
    negated: bool


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Seq:
    items: tuple


@dataclass(frozen=True)
class Alt:
    options: tuple


@dataclass(frozen=True)
class Rep:
    item: object
    lo: int
    hi: int | None


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def char(self) -> str:
        c = self.s[self.i]
        self.i += 1
        if c != "\\":
            return c
        e = self.s[self.i]
        self.i += 1
        if e == "x":
            v = int(self.s[self.i:self.i + 2], 16)
            self.i += 2
            return chr(v)
        if e == "u":
            v = int(self.s[self.i:self.i + 4], 16)
            self.i += 4
            return chr(v)
        return _ESC[e]

    def alt(self) -> object:
        opts = [self.seq()]
        while True:
            self.ws()
            if self.i < len(self.s) and self.s[self.i] == "|":
                self.i += 1
                opts.append(self.seq())
            else:
                return opts[0] if len(opts) == 1 else Alt(tuple(opts))

    def seq(self) -> object:
        items = []
        while True:
            self.ws()
            if self.i >= len(self.s) or self.s[self.i] in "|)":
                return Seq(tuple(items))
            items.append(self.postfix(self.atom()))

    def atom(self) -> object:
        c = self.s[self.i]
        if c == '"':
            self.i += 1
            out = []
            while self.s[self.i] != '"':
                out.append(self.char())
            self.i += 1
            return Lit("".join(out))
        if c == "[":
            self.i += 1
            neg = self.s[self.i] == "^"
            if neg:
                self.i += 1
            ranges = []
            while self.s[self.i] != "]":
                a = self.char()
                if self.s[self.i] == "-" and self.s[self.i + 1] != "]":
                    self.i += 1
                    ranges.append((a, self.char()))
                else:
                    ranges.append((a, a))
            self.i += 1
            return Cls(tuple(ranges), neg)
        if c == "(":
            self.i += 1
            inner = self.alt()
            self.ws()
            assert self.s[self.i] == ")", self.s[self.i:]
            self.i += 1
            return inner
        m = re.compile(r"[a-zA-Z0-9-]+").match(self.s, self.i)
        assert m, f"bad grammar at {self.s[self.i:self.i + 20]!r}"
        self.i = m.end()
        return Ref(m.group())

    def postfix(self, item: object) -> object:
        if self.i < len(self.s):
            c = self.s[self.i]
            if c in "?*+":
                self.i += 1
                return Rep(item, 1 if c == "+" else 0, 1 if c == "?" else None)
            m = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.s, self.i)
            if m:
                self.i = m.end()
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
                return Rep(item, lo, hi)
        return item


def parse(grammar: str) -> dict[str, object]:
    rules = {}
    for line in grammar.strip().splitlines():
        name, _, body = line.partition("::=")
        p = _Parser(body)
        rules[name.strip()] = p.alt()
        p.ws()
        assert p.i == len(body), f"trailing text in rule {name}: {body[p.i:]!r}"
    return rules


def accepts(grammar: str, text: str) -> bool:
    rules = parse(grammar)

    @cache
    def ends(node: object, pos: int) -> frozenset[int]:
        if isinstance(node, Lit):
            return frozenset([pos + len(node.text)]) if text.startswith(node.text, pos) else frozenset()
        if isinstance(node, Cls):
            if pos >= len(text):
                return frozenset()
            hit = any(a <= text[pos] <= b for a, b in node.ranges)
            return frozenset([pos + 1]) if hit != node.negated else frozenset()
        if isinstance(node, Ref):
            return ends(rules[node.name], pos)
        if isinstance(node, Seq):
            cur = frozenset([pos])
            for item in node.items:
                cur = frozenset(e for p in cur for e in ends(item, p))
                if not cur:
                    break
            return cur
        if isinstance(node, Alt):
            return frozenset(e for o in node.options for e in ends(o, pos))
        if isinstance(node, Rep):
            out: set[int] = set([pos]) if node.lo == 0 else set()
            cur, n = frozenset([pos]), 0
            while cur and (node.hi is None or n < node.hi):
                cur = frozenset(e for p in cur for e in ends(node.item, p) if e != p)
                n += 1
                if n >= node.lo:
                    out |= cur
            return frozenset(out)
        raise TypeError(node)

    return len(text) in ends(rules["root"], 0)
