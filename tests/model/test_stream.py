"""Property tests for the token-to-text state machines (no model needed)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.model.stream import (
    Boundary,
    Content,
    Markers,
    Span,
    SpanSplitter,
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


MARKERS = Markers(thinking_start=b"<think>", thinking_end=b"</think>", tool_start=b"<tool_call>",
                  tool_end=b"</tool_call>", payload_start=b"<arg>", payload_end=b"</arg>")
# Content avoids '<' so generated content never forms a marker by accident.
CONTENT = st.text(alphabet="abc xyz\u00e9\u4e2d", min_size=1, max_size=6).map(lambda t: t.encode())


def split(markers: Markers, data: bytes, cuts: list[int], thinking: bool = True) -> tuple[list, SpanSplitter]:
    sp = SpanSplitter(markers, thinking=thinking)
    parts = []
    for chunk in chunked(data, cuts):
        parts += sp.feed(chunk)
    parts += sp.flush()
    return parts, sp


def merged(parts: list) -> list[tuple[str, bytes]]:
    """Content per span with adjacent pieces joined, boundaries as markers: chunking-free view."""
    out: list[tuple[str, bytes]] = []
    for p in parts:
        if isinstance(p, Content):
            if out and out[-1][0] == p.span.value:
                out[-1] = (p.span.value, out[-1][1] + p.data)
            else:
                out.append((p.span.value, p.data))
        else:
            out.append(("|", p.marker))
    return out


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from([Span.TEXT, Span.THINKING, Span.TOOL_CALL]), CONTENT), max_size=6),
       st.lists(st.integers(0, 200), max_size=15))
def test_splitter_recovers_segments_under_any_chunking(segments: list[tuple[Span, bytes]], cuts: list[int]) -> None:
    data = b""
    expected: list[tuple[Span, bytes]] = []
    for span, content in segments:
        if span is Span.THINKING:
            data += b"<think>" + content + b"</think>"
        elif span is Span.TOOL_CALL:
            data += b"<tool_call>" + content + b"</tool_call>"
        else:
            data += content
        expected.append((span, content))
    parts, sp = split(MARKERS, data, cuts)
    got: dict[Span, bytes] = {s: b"" for s in Span}
    for p in parts:
        if isinstance(p, Content):
            got[p.span] += p.data
    for span in Span:
        assert got[span] == b"".join(c for s, c in expected if s is span)
    assert sp.span is Span.TEXT
    assert merged(parts) == merged(split(MARKERS, data, [])[0])  # chunking never changes the result


def test_marker_split_across_tokens_any_way() -> None:
    for cut in range(1, len(b"<think>")):
        parts, _ = split(MARKERS, b"hi <think>plan</think>ok", [3 + cut])
        assert merged(parts) == [("text", b"hi "), ("|", b"<think>"), ("thinking", b"plan"), ("|", b"</think>"),
                                 ("text", b"ok")]


def test_partial_marker_is_released_as_content() -> None:
    sp = SpanSplitter(MARKERS, thinking=True)
    assert sp.feed(b"a <thi") == [Content(Span.TEXT, b"a ")]  # could still be <think>
    assert sp.feed(b"s") == [Content(Span.TEXT, b"<this")]
    assert sp.feed(b"<th") == []
    assert sp.flush() == [Content(Span.TEXT, b"<th")]


def test_thinking_disabled_leaves_markers_as_text() -> None:
    parts, _ = split(MARKERS, b"<think>x</think>", [], thinking=False)
    assert merged(parts) == [("text", b"<think>x</think>")]


def test_close_thinking_releases_held_bytes() -> None:
    sp = SpanSplitter(MARKERS, thinking=True)
    assert sp.feed(b"<think>abc</th")[-1] == Content(Span.THINKING, b"abc")
    parts = sp.close_thinking()
    assert parts[0] == Content(Span.THINKING, b"</th")
    assert isinstance(parts[1], Boundary) and parts[1].closed is Span.THINKING
    assert sp.span is Span.TEXT


def test_tool_call_greedy_outside_payload() -> None:
    sp = SpanSplitter(MARKERS)
    assert not sp.wants_greedy()
    sp.feed(b"<tool_call>{\"a\": ")
    assert sp.wants_greedy()
    parts = sp.feed(b"<arg>free text")
    assert not sp.wants_greedy()
    assert Content(Span.TOOL_CALL, b"<arg>") in parts  # payload markers stay in the call's bytes
    sp.feed(b"</arg>}")
    assert sp.wants_greedy()
    parts = sp.feed(b"</tool_call>")
    assert parts[-1].closed is Span.TOOL_CALL and not sp.wants_greedy()
    no_payload = SpanSplitter(Markers(tool_start=b"[", tool_end=b"]"))
    no_payload.feed(b"[x <arg>")
    assert no_payload.wants_greedy()  # undeclared payload markers: the whole call is greedy


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
