"""Turning sampled tokens into what a caller sees: pure, incremental, testable.

Three small state machines, each fed one step at a time by the model actor:

- `Utf8Assembler`: token pieces are bytes and a multi-byte character can be
  split across tokens; text is released only in whole UTF-8 characters.
- `StopScanner`: caller-given stop sequences. The first match by text position
  ends generation and never reaches the caller; the last (longest - 1)
  characters are held back so a match spanning two chunks is still caught.
- `MarkerTracker`: thinking and tool-call spans delimited by marker token
  sequences (tokenised once at model load). It classifies each token as text,
  thinking or tool-call content, and tells the scheduler when a span needs a
  greedy sampler or a forced end marker (thinking budget).

Plus `thinking_signature`: an HMAC over the thinking text so a downstream can
prove a thinking block came from this node unmodified.
"""

from __future__ import annotations

import codecs
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum


class Utf8Assembler:
    """Accumulates byte pieces and releases complete UTF-8 text.

    Incomplete trailing bytes are held until a later piece completes them;
    invalid bytes become U+FFFD at once.
    """

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, piece: bytes) -> str:
        return self._dec.decode(piece)

    def flush(self) -> str:
        """At the end of generation: whatever is left, an unfinished character replaced."""
        return self._dec.decode(b"", final=True)

    @property
    def pending(self) -> bytes:
        return self._dec.getstate()[0]


def incomplete_utf8_tail(data: bytes) -> bytes:
    """The trailing bytes of ``data`` that start a UTF-8 character not finished yet."""
    asm = Utf8Assembler()
    asm.feed(data)
    return asm.pending


@dataclass(frozen=True)
class StopResult:
    text: str  # safe to emit now
    stop: str | None = None  # the stop sequence that ended generation, if any


class StopScanner:
    """Detects the first stop sequence (by start position) in a growing text.

    The result does not depend on how the text is chunked: a complete match is
    acted on only when no other stop sequence could still complete at an
    earlier position, and text is held back exactly from the earliest position
    where a stop sequence might be starting (never more than the longest stop
    minus one characters).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = sorted({s for s in stops if s}, key=len)
        self._buf = ""
        self.matched: str | None = None

    def _first_complete(self) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for s in self.stops:  # shortest first: at equal starts the shorter completes first
            i = self._buf.find(s)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        return best

    def _first_potential(self) -> int:
        """Earliest index whose suffix is a proper prefix of some stop (len(buf) if none)."""
        n = len(self._buf)
        longest = len(self.stops[-1]) if self.stops else 1
        for j in range(max(0, n - longest + 1), n):
            tail = self._buf[j:]
            if any(len(s) > len(tail) and s.startswith(tail) for s in self.stops):
                return j
        return n

    def feed(self, text: str) -> StopResult:
        if self.matched is not None:
            return StopResult("", self.matched)
        if not self.stops:
            return StopResult(text)
        self._buf += text
        complete = self._first_complete()
        potential = self._first_potential()
        if complete is not None and complete[0] <= potential:
            return self._match(complete)
        cut = potential if complete is None else min(potential, complete[0])
        out, self._buf = self._buf[:cut], self._buf[cut:]
        return StopResult(out)

    def _match(self, complete: tuple[int, str]) -> StopResult:
        self.matched = complete[1]
        out, self._buf = self._buf[:complete[0]], ""
        return StopResult(out, self.matched)

    def flush(self) -> StopResult:
        """At the end of generation: a held match still counts; otherwise release the held text."""
        if self.matched is not None:
            return StopResult("", self.matched)
        complete = self._first_complete()
        if complete is not None:
            return self._match(complete)
        out, self._buf = self._buf, ""
        return StopResult(out)


class Span(Enum):
    TEXT = "text"
    THINKING = "thinking"
    TOOL_CALL = "tool_call"


@dataclass(frozen=True)
class Markers:
    """Token-id sequences of one model's markers (tokenised at load)."""

    thinking_start: tuple[int, ...] = ()
    thinking_end: tuple[int, ...] = ()
    tool_start: tuple[int, ...] = ()
    tool_end: tuple[int, ...] = ()
    payload_start: tuple[int, ...] = ()
    payload_end: tuple[int, ...] = ()

    @property
    def has_thinking(self) -> bool:
        return bool(self.thinking_start and self.thinking_end)

    @property
    def has_tools(self) -> bool:
        return bool(self.tool_start and self.tool_end)


@dataclass(frozen=True)
class Classified:
    """What one sampled token turned out to be.

    `span` is the span the token's content belongs to; marker tokens have
    `marker=True` and carry no content. `closed` names a span that ended with
    this token. `force` lists tokens the scheduler must append next instead of
    sampling (a synthesised end marker once the thinking budget is spent).
    """

    span: Span
    marker: bool = False
    closed: Span | None = None
    force: tuple[int, ...] = ()


@dataclass
class MarkerTracker:
    """Follows marker token sequences through a generation.

    Markers are matched on token ids, not text, so a marker is recognised
    exactly when the model emits the marker's tokens in order. Tokens of a
    partially matched marker are reported as markers once the match completes;
    a partial match that fails is content (the tracker reports `pending`
    tokens so the caller can emit them late, in order).
    """

    markers: Markers
    thinking: bool = False  # the request asked for thinking
    thinking_budget: int | None = None
    span: Span = Span.TEXT
    in_payload: bool = False
    thinking_tokens: int = 0
    _partial: list[int] = field(default_factory=list)

    def _candidates(self) -> list[tuple[tuple[int, ...], str]]:
        m = self.markers
        if self.span is Span.TEXT:
            out = []
            if self.thinking and m.has_thinking:
                out.append((m.thinking_start, "think_open"))
            if m.has_tools:
                out.append((m.tool_start, "tool_open"))
            return out
        if self.span is Span.THINKING:
            return [(m.thinking_end, "think_close")]
        out = [(m.tool_end, "tool_close")]
        if m.payload_start and not self.in_payload:
            out.append((m.payload_start, "payload_open"))
        if m.payload_end and self.in_payload:
            out.append((m.payload_end, "payload_close"))
        return out

    def wants_greedy(self) -> bool:
        """Tool-call syntax is sampled greedily so it is byte-deterministic; payloads use the request's sampler."""
        return self.span is Span.TOOL_CALL and not (self.markers.payload_start and self.in_payload)

    def feed(self, token: int) -> tuple[list[Classified], list[int]]:
        """Classify `token`. Returns (classification per released token, released tokens).

        Tokens held as a possible marker prefix are released (possibly several
        at once) when the match completes or fails.
        """
        self._partial.append(token)
        seq = tuple(self._partial)
        for marker, action in self._candidates():
            if seq == marker:
                self._partial.clear()
                last = self._apply(action)
                return [Classified(last.span, marker=True)] * (len(seq) - 1) + [last], list(seq)
        if any(marker[:len(seq)] == seq for marker, _ in self._candidates()):
            return [], []  # still a possible marker: hold
        # Not a marker: release the held tokens as content. A suffix of them may
        # start a marker again, so re-feed all but the first.
        self._partial.clear()
        released = [seq[0]]
        out = [self._content()]
        for t in seq[1:]:
            more, toks = self.feed(t)
            out += more
            released += toks
        return out, released

    def _content(self) -> Classified:
        if self.span is Span.THINKING:
            self.thinking_tokens += 1
            if self.thinking_budget is not None and self.thinking_tokens >= self.thinking_budget:
                return Classified(Span.THINKING, force=self.markers.thinking_end)
        return Classified(self.span)

    def _apply(self, action: str) -> Classified:
        if action == "think_open":
            self.span = Span.THINKING
            return Classified(Span.THINKING, marker=True)
        if action == "think_close":
            self.span = Span.TEXT
            return Classified(Span.TEXT, marker=True, closed=Span.THINKING)
        if action == "tool_open":
            self.span = Span.TOOL_CALL
            self.in_payload = False
            return Classified(Span.TOOL_CALL, marker=True)
        if action == "payload_open":
            self.in_payload = True
            return Classified(Span.TOOL_CALL, marker=True)
        if action == "payload_close":
            self.in_payload = False
            return Classified(Span.TOOL_CALL, marker=True)
        self.span = Span.TEXT
        self.in_payload = False
        return Classified(Span.TEXT, marker=True, closed=Span.TOOL_CALL)

    def forced(self, tokens: Sequence[int]) -> None:
        """The scheduler appended a forced end marker: close the span without sampling."""
        if tuple(tokens) == self.markers.thinking_end and self.span is Span.THINKING:
            self._partial.clear()
            self.span = Span.TEXT


def thinking_signature(key: bytes | None, thinking_text: str) -> str:
    """Hex HMAC-SHA256 of the thinking text under the node's key; "" when no key is configured."""
    if not key:
        return ""
    return hmac.new(key, thinking_text.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_signature(key: bytes, thinking_text: str, signature: str) -> bool:
    return bool(signature) and hmac.compare_digest(thinking_signature(key, thinking_text), signature)


def accepted_prefix(argmax: Sequence[int], candidates: Sequence[int]) -> int:
    """Speculative verify: how many candidates the verifier agrees with.

    `argmax[i]` is the verifier's next token after prefix + candidates[:i]
    (argmax[0] follows the prefix alone). Candidate i is accepted while it
    equals argmax[i]; the verifier's own next token is then argmax[accepted].
    """
    n = 0
    while n < len(candidates) and n < len(argmax) and candidates[n] == argmax[n]:
        n += 1
    return n
