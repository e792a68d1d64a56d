"""The per-request output shaper: what a caller receives for a stream of token bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.model.output import OutputShaper, Shaped
from actors.model.stream import Markers, verify_signature
from tests.model.test_stream import chunked

MARKERS = Markers(thinking_start=b"<think>", thinking_end=b"</think>", tool_start=b"<tool_call>",
                  tool_end=b"</tool_call>")
KEY = b"node-key-0123456789"


def run(data: bytes, cuts: list[int], stops: tuple[str, ...] = (), thinking: bool = True,
        markers: Markers = MARKERS) -> tuple[OutputShaper, list[Shaped]]:
    sh = OutputShaper(markers, thinking=thinking, stops=stops, key=KEY)
    outs = []
    for piece in chunked(data, cuts):
        outs.append(sh.feed(piece))
        if sh.stopped:
            break
    outs.append(sh.finish())
    return sh, outs


def joined(outs: list[Shaped], kind: str) -> str:
    return "".join(d.text for o in outs for d in o.deltas if d.kind == kind)


TEXTS = st.text(alphabet="ab \u00e9\u4e2d\U0001f600", max_size=12)


@settings(max_examples=200)
@given(TEXTS, TEXTS, TEXTS, st.lists(st.integers(0, 200), max_size=20))
def test_deltas_concatenate_to_results_under_any_chunking(pre: str, think: str, post: str, cuts: list[int]) -> None:
    data = f"{pre}<think>{think}</think>{post}<tool_call>{{\"x\": 1}}</tool_call>".encode()
    sh, outs = run(data, cuts)
    assert joined(outs, "text") == sh.reply == pre + post
    assert joined(outs, "thinking") == think
    assert joined(outs, "tool_call") == '{"x": 1}'
    ends = [e for o in outs for e in o.ends]
    assert [e.kind for e in ends] == ["thinking", "tool_call"]
    assert ends[0].text == think and verify_signature(KEY, think, ends[0].signature)
    assert ends[1].data == b'{"x": 1}' and ends[1].complete


def test_thinking_end_precedes_answer_within_one_feed() -> None:
    sh = OutputShaper(MARKERS, thinking=True, key=KEY)
    out = sh.feed(b"<think>hmm</think>Answer")
    assert [(type(e).__name__, e.kind) for e in out.events] == [("Delta", "thinking"), ("SpanEnd", "thinking"),
                                                                ("Delta", "text")]


@settings(max_examples=200)
@given(st.text(alphabet="abc \n", max_size=30), st.lists(st.sampled_from(["ab", "c\n", "\n\n", "bca"]), min_size=1,
                                                          max_size=3),
       st.lists(st.integers(0, 60), max_size=12))
def test_stop_sequences_in_answer_text(text: str, stops: list[str], cuts: list[int]) -> None:
    sh, outs = run(text.encode(), cuts, stops=tuple(stops), thinking=False)
    hits = [(text.find(s), s) for s in stops if s in text]
    emitted = joined(outs, "text")
    if hits:
        first = min(i for i, _ in hits)
        assert emitted == text[:first]
        assert sh.stopped is not None and text.find(sh.stopped) == first
    else:
        assert emitted == text and sh.stopped is None
    assert all(s not in emitted for s in stops)


def test_stop_inside_thinking_is_ignored() -> None:
    sh, outs = run(b"<think>END here</think>the END", [], stops=("END",))
    assert joined(outs, "thinking") == "END here"
    assert sh.reply == "the " and sh.stopped == "END"


def test_unfinished_spans_end_incomplete() -> None:
    _, outs = run(b"<think>still going", [3, 9])
    ends = [e for o in outs for e in o.ends]
    assert len(ends) == 1 and ends[0].kind == "thinking" and not ends[0].complete
    _, outs = run(b"<tool_call>{\"a\"", [])
    ends = [e for o in outs for e in o.ends]
    assert ends[0].kind == "tool_call" and not ends[0].complete and ends[0].data == b'{"a"'


def test_no_key_means_empty_signature() -> None:
    sh = OutputShaper(MARKERS, thinking=True, key=None)
    out = sh.feed(b"<think>x</think>")
    assert out.ends[0].signature == ""


def test_split_character_is_never_broken() -> None:
    data = "caf\u00e9 \U0001f600".encode()
    for cut in range(len(data)):
        _, outs = run(data, [cut], thinking=False)
        assert all("\ufffd" not in d.text for o in outs for d in o.deltas)
        assert joined(outs, "text") == "caf\u00e9 \U0001f600"


def test_close_thinking_on_budget() -> None:
    sh = OutputShaper(MARKERS, thinking=True, key=KEY)
    sh.feed(b"<think>long thou")
    out = sh.close_thinking()
    assert out.ends[0].text == "long thou" and out.ends[0].complete
    assert sh.feed(b"answer").deltas[0].kind == "text"
