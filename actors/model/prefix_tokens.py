"""Tokenizing a text whose start was tokenized before: the start's tokens are reused, the rest is tokenized.

Why: agents and chat front ends resend the same system prompt and the same
conversation every turn, and the model tokenized all of it every time
(1.1 ms for a 445-token chat on this machine, ~10 ms at 4k tokens), a large
part of an exact hit's time to first token once the restore itself takes a
few milliseconds.  llama-server re-tokenizes every request too.

When the reuse is exact.  llama.cpp first cuts the text at the occurrences of
its special tokens (control, user-defined and unknown ones, longest text
first), then tokenizes each piece of plain text between them on its own; a
token never spans a special token.  So if a text ``T = A + B`` is cut right
after a special token ``s`` that ends ``A``, then ``tokens(T) == tokens(A) +
tokens(B without add_special)``, provided that

* ``s`` really is cut there: no other special token at least as long as
  ``s`` overlaps that occurrence (those are matched first), and ``s`` does not
  overlap another occurrence of itself;
* ``s`` does not strip the whitespace after it (``RSTRIP``), which would eat
  the start of ``B``;
* ``add_special`` adds nothing at the end (no EOS, no SEP), only a BOS at the
  start, which ``A`` carries;
* the vocabulary tokenizes each piece independently: SPM (which also puts a
  space before the text after a special token, in both cases alike) and BPE.

A cut is only made where all of this holds (:func:`cut_points`);
every other text is tokenized whole.  ``tests/actors/test_prefix_tokens.py``
holds the result equal to llama.cpp's on the bundled model for generated
chats and texts.
"""

from __future__ import annotations

import hashlib
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

SPM, BPE = 1, 2  # llama_vocab_type values whose pieces are tokenized independently
ATTR_UNKNOWN, ATTR_CONTROL, ATTR_USER_DEFINED = 1 << 0, 1 << 3, 1 << 4  # llama_token_attr bits
ATTR_LSTRIP, ATTR_RSTRIP = 1 << 7, 1 << 8

Tokenize = Callable[[bytes, bool, bool], list[int]]  # (utf-8 text, add_special, parse_special) -> ids


@dataclass(frozen=True)
class SpecialToken:
    id: int
    text: bytes
    attr: int


@dataclass(frozen=True)
class Vocab:
    """The facts of a tokenizer the reuse depends on (``Model.vocab()``)."""

    kind: int
    add_bos: bool
    add_eos: bool
    add_sep: bool
    specials: tuple[SpecialToken, ...]

    @property
    def reusable(self) -> bool:
        return self.kind in (SPM, BPE) and not self.add_eos and not self.add_sep


@dataclass
class PrefixStats:
    """Shown in model status (``tokenizer``)."""

    calls: int = 0  # texts with a place to cut (the others are tokenized whole, as before)
    reused: int = 0  # calls that started from a remembered start
    reused_bytes: int = 0  # text not tokenized again thanks to it


class PrefixTokenizer:
    """``tokenize(text, add_special, parse_special)`` equal to ``base``'s, reusing remembered starts.

    It remembers the tokens of each text up to its last sound cut (the start of
    the next turn's prompt, in a chat), at most ``max_tokens`` tokens in all
    (4 bytes each), least recently used first out.  Thread-safe.
    """

    def __init__(self, base: Tokenize, vocab: Vocab, max_tokens: int = 1 << 22) -> None:
        self._base = base
        self.enabled = vocab.reusable
        self._max = max_tokens
        self._held = 0
        split_on = ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER_DEFINED
        specials = {t.text for t in vocab.specials if t.text and t.attr & split_on}
        # Cut after these only (they leave the next piece's whitespace alone), each with the special
        # tokens that could claim an overlapping stretch before it is matched.
        self._rivals = {c: [s for s in specials if s != c and len(s) >= len(c) and can_overlap(s, c)]
                        for c in (t.text for t in vocab.specials if t.text and not t.attr & ATTR_RSTRIP)}
        self._starts: OrderedDict[bytes, array[int]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = PrefixStats()

    def tokenize(self, text: bytes, add_special: bool, parse_special: bool) -> list[int]:
        if not (self.enabled and parse_special) or not text:
            return self._base(text, add_special, parse_special)
        cuts = cut_points(text, self._rivals)
        if not cuts:
            return self._base(text, add_special, True)
        keyed = self._keys(text, cuts, add_special)
        start, tokens = 0, []
        with self._lock:
            self.stats.calls += 1
            for at, key in reversed(keyed):
                known = self._starts.get(key)
                if known is not None:
                    self._starts.move_to_end(key)
                    start, tokens = at, known.tolist()
                    self.stats.reused += 1
                    self.stats.reused_bytes += at
                    break
        last, last_key = keyed[-1]
        if start < last:  # tokenize up to the last cut on its own, so its tokens can be remembered
            tokens += self._base(text[start:last], add_special and start == 0, True)
            self._remember(last_key, array("i", tokens))
        if last < len(text):
            tokens += self._base(text[last:], add_special and last == 0, True)
        return tokens

    @property
    def remembered_tokens(self) -> int:
        return self._held

    def _remember(self, key: bytes, tokens: array[int]) -> None:
        if len(tokens) > self._max:
            return
        with self._lock:
            old = self._starts.pop(key, None)
            self._held += len(tokens) - (len(old) if old is not None else 0)
            self._starts[key] = tokens
            while self._held > self._max:
                _, dropped = self._starts.popitem(last=False)
                self._held -= len(dropped)

    @staticmethod
    def _keys(text: bytes, cuts: list[int], add_special: bool) -> list[tuple[int, bytes]]:
        """Each cut with a digest of the text before it (one pass over the text)."""
        h = hashlib.blake2b(b"S" if add_special else b"-", digest_size=16)
        out, prev = [], 0
        for at in cuts:
            h.update(text[prev:at])
            out.append((at, h.copy().digest()))
            prev = at
        return out


def cut_points(text: bytes, rivals: dict[bytes, list[bytes]]) -> list[int]:
    """Where ``text`` may be cut, in order: just after an occurrence of a cut token (a key of ``rivals``)
    that the tokenizer certainly splits on (see the module's docstring)."""
    found: set[int] = set()
    for cut, others in rivals.items():
        at = text.find(cut)
        while at >= 0:
            if _sound(text, at, cut, others):
                found.add(at + len(cut))
            at = text.find(cut, at + len(cut))
    return sorted(found)


def _sound(text: bytes, at: int, cut: bytes, rivals: list[bytes]) -> bool:
    end = at + len(cut)
    if text.find(cut, max(0, at - len(cut) + 1), end + len(cut) - 1) != at:  # an earlier one overlaps it
        return False
    if text.find(cut, at + 1, end + len(cut) - 1) >= 0:  # a later one overlaps it
        return False
    return all(text.find(s, max(0, at - len(s) + 1), end + len(s) - 1) < 0 for s in rivals)


def can_overlap(a: bytes, b: bytes) -> bool:
    """Whether an occurrence of ``a`` can share bytes with an occurrence of ``b``: one holds the
    other, or an end of one is a start of the other."""
    if b in a or a in b:
        return True
    return any(a.endswith(b[:k]) or b.endswith(a[:k]) for k in range(1, min(len(a), len(b))))


__all__ = ["BPE", "SPM", "PrefixStats", "PrefixTokenizer", "SpecialToken", "Vocab", "can_overlap", "cut_points"]
