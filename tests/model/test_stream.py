"""Property tests for the token-to-text state machines (no model needed)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.model.stream import (
    Markers,
    MarkerTracker,
    Span,
    StopScanner,
    Utf8Assembler,
    accepted_prefix,
    thinking_signature,
    verify_signature,
)


def chunked(data: bytes | str, cuts: list[int]) -> list:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


@given(st.text(max_size=60), st.lists(st.integers(0, 400), max_size=20))
def test_utf8_assembler_never_splits_characters(text: str, cuts: list[int]) -> None:
    asm = Utf8Assembler()
    pieces = [asm.feed(p) for p in chunked(text.encode("utf-8"), cuts)]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + asm.flush() == text


def test_utf8_assembler_holds_partial_emoji() -> None:
    asm = Utf8Assembler()
    raw = "🙂".encode()
    assert asm.feed(raw[:2]) == ""
    assert asm.feed(raw[2:]) == "🙂"


def reference(text: str, stops: list[str]) -> tuple[str, str | None]:
    found = [(text.find(s), len(s), s) for s in stops if s and s in text]
    if not found:
        return text, None
    i, _, s = min(found)
    return text[:i], s


def run_scanner(stops: list[str], chunks: list[str]) -> tuple[str, str | None, list[str]]:
    sc = StopScanner(stops)
    emitted = []
    for c in chunks:
        r = sc.feed(c)
        emitted.append(r.text)
        if r.stop is not None:
            return "".join(emitted), r.stop, emitted
    r = sc.flush()
    emitted.append(r.text)
    return "".join(emitted), r.stop, emitted


ALPHA = st.text(alphabet="abcx", max_size=40)
STOPS = st.lists(st.text(alphabet="abc", min_size=1, max_size=4), max_size=4)


@settings(max_examples=300)
@given(ALPHA, STOPS, st.lists(st.integers(0, 60), max_size=12))
def test_stop_scanner_matches_reference_under_any_chunking(text: str, stops: list[str], cuts: list[int]) -> None:
    out, stop, _ = run_scanner(stops, chunked(text, cuts))
    assert (out, stop) == reference(text, stops)


@given(ALPHA, STOPS, st.lists(st.integers(0, 60), max_size=12))
def test_stop_text_never_emitted_and_holdback_bounded(text: str, stops: list[str], cuts: list[int]) -> None:
    sc = StopScanner(stops)
    longest = max((len(s) for s in stops), default=1)
    seen = ""
    fed = ""
    for c in chunked(text, cuts):
        fed += c
        r = sc.feed(c)
        seen += r.text
        if r.stop is not None:
            break
        assert len(fed) - len(seen) <= longest - 1
    for s in stops:
        assert s not in seen


def test_stop_examples() -> None:
    assert run_scanner(["END"], ["hello E", "ND world"])[:2] == ("hello ", "END")
    assert run_scanner(["\n\n", "Q:"], ["a Q", ":\n\n"])[:2] == ("a ", "Q:")
    assert run_scanner(["zz"], ["no match here"])[:2] == ("no match here", None)
    # a held partial match is released at the end
    assert run_scanner(["END"], ["the E", "N"])[:2] == ("the EN", None)


THINK_OPEN, THINK_CLOSE, TOOL_OPEN, TOOL_CLOSE = (1000, 1001), (1002,), (1003, 1004), (1005, 1006)
MARKERS = Markers(thinking_start=THINK_OPEN, thinking_end=THINK_CLOSE, tool_start=TOOL_OPEN, tool_end=TOOL_CLOSE)
CONTENT = st.lists(st.integers(0, 999), min_size=1, max_size=5)


@given(st.lists(st.tuples(st.sampled_from([Span.TEXT, Span.THINKING, Span.TOOL_CALL]), CONTENT), max_size=6))
def test_marker_tracker_recovers_segments(segments: list[tuple[Span, list[int]]]) -> None:
    # Build a generation: thinking first (if any), then text / tool calls.
    tokens: list[int] = []
    expected: list[tuple[Span, int]] = []
    opened_thinking = False
    for span, content in segments:
        if span is Span.THINKING:
            if opened_thinking:
                continue
            opened_thinking = True
            tokens += [*THINK_OPEN, *content, *THINK_CLOSE]
        elif span is Span.TOOL_CALL:
            tokens += [*TOOL_OPEN, *content, *TOOL_CLOSE]
        else:
            tokens += content
        expected += [(span, t) for t in content]
    tr = MarkerTracker(MARKERS, thinking=True)
    got: list[tuple[Span, int]] = []
    for t in tokens:
        classes, released = tr.feed(t)
        assert len(classes) == len(released)
        got += [(c.span, tok) for c, tok in zip(classes, released, strict=True) if not c.marker]
    assert got == expected
    assert tr.span is Span.TEXT


def test_partial_marker_is_released_as_content() -> None:
    tr = MarkerTracker(MARKERS, thinking=True)
    assert tr.feed(1000) == ([], [])  # could be the start of <think>
    classes, released = tr.feed(7)
    assert released == [1000, 7]
    assert [c.span for c in classes] == [Span.TEXT, Span.TEXT]


def test_thinking_disabled_ignores_thinking_markers() -> None:
    tr = MarkerTracker(MARKERS, thinking=False)
    classes, released = tr.feed(1000)
    assert released == [1000] and classes[0].span is Span.TEXT


def test_thinking_budget_forces_end_marker() -> None:
    tr = MarkerTracker(MARKERS, thinking=True, thinking_budget=3)
    tr.feed(1000)
    tr.feed(1001)
    forces = [tr.feed(t)[0][0].force for t in (5, 6, 7)]
    assert forces == [(), (), THINK_CLOSE]
    tr.forced(THINK_CLOSE)
    assert tr.span is Span.TEXT


def test_tool_call_greedy_outside_payload() -> None:
    m = Markers(tool_start=(10,), tool_end=(11,), payload_start=(12,), payload_end=(13,))
    tr = MarkerTracker(m)
    assert not tr.wants_greedy()
    tr.feed(10)
    assert tr.wants_greedy()
    tr.feed(12)
    assert not tr.wants_greedy()
    tr.feed(13)
    assert tr.wants_greedy()
    classes, _ = tr.feed(11)
    assert classes[-1].closed is Span.TOOL_CALL and not tr.wants_greedy()


def test_signature() -> None:
    sig = thinking_signature(b"k" * 32, "let me think")
    assert len(sig) == 64
    assert verify_signature(b"k" * 32, "let me think", sig)
    assert not verify_signature(b"other-key", "let me think", sig)
    assert not verify_signature(b"k" * 32, "let me think!", sig)
    assert thinking_signature(None, "x") == ""


def test_accepted_prefix() -> None:
    assert accepted_prefix([5, 6, 7, 8], [5, 6, 7]) == 3
    assert accepted_prefix([5, 6, 7, 8], [5, 9, 7]) == 1
    assert accepted_prefix([5], []) == 0
