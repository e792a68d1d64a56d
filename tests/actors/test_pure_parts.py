"""Pure helpers of the actor layer: outbox coalescing, UTF-8 streaming, the observability table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from actors.model.messages import Done, ErrorReply, RequestDone, TokenChunk
from actors.model.outbox import coalesce
from actors.model.stream import Utf8Assembler as Utf8Stream
from actors.obs import ObsTable


def test_coalesce_merges_chunks_per_request_and_keeps_done_last() -> None:
    items = [TokenChunk("a", "x", (1,), 1.0), TokenChunk("b", "y", (2,), 2.0), TokenChunk("a", "z", (3,), 3.0),
             RequestDone(("q",)), RequestDone(("r",)), Done("a", None), TokenChunk("a", "late", (4,), 4.0)]
    out = coalesce(items)  # type: ignore[arg-type]
    assert out[0] == TokenChunk("a", "xz", (1, 3), 1.0)
    assert out[1] == TokenChunk("b", "y", (2,), 2.0)
    assert out[2] == RequestDone(("q", "r"))
    assert out[3] == Done("a", None)  # type: ignore[arg-type]
    assert out[4] == TokenChunk("a", "late", (4,), 4.0)  # a chunk after Done is not merged before it


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 9)), max_size=40))
def test_coalesce_never_drops_or_reorders_tokens(events: list[tuple[str, int]]) -> None:
    items = [TokenChunk(r, str(t), (t,)) for r, t in events]
    out = coalesce(items)
    for rid in "abc":
        want = [t for r, t in events if r == rid]
        got = [t for m in out if m.req_id == rid for t in m.token_ids]
        assert got == want
    assert len(out) == len({r for r, _ in events})


@given(st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from(["text", "thinking", "tool_call"]),
                          st.integers(0, 9)), max_size=40))
def test_coalesce_never_merges_across_kinds(events: list[tuple[str, str, int]]) -> None:
    items = [TokenChunk(r, f"{k[0]}{t}", (t,), kind=k) for r, k, t in events]
    out = coalesce(items)
    for rid in "ab":
        want = [(k, f"{k[0]}{t}") for r, k, t in events if r == rid]
        got = [m for m in out if m.req_id == rid]
        # per request: the kinds in order, and each chunk's text only from its own kind
        assert "".join(m.text for m in got) == "".join(t for _, t in want)
        assert all(set(m.text[::2]) <= {m.kind[0]} for m in got)


@given(st.text(max_size=50), st.lists(st.integers(1, 4), max_size=60))
def test_utf8_stream_only_emits_whole_characters(text: str, cuts: list[int]) -> None:
    data = text.encode("utf-8")
    s = Utf8Stream()
    parts, i, k = [], 0, 0
    while i < len(data):
        n = cuts[k % len(cuts)] if cuts else 1
        parts.append(s.feed(data[i : i + n]))
        i += n
        k += 1
    parts.append(s.flush())
    assert "".join(parts) == text
    for p in parts:
        p.encode("utf-8")  # no lone surrogates, no split characters


def test_obs_table_round_trip_and_other_process(tmp_path: Path) -> None:
    path = str(tmp_path / "obs.tbl")
    table = ObsTable(path, create=True, n_slots=4)
    slot = table.claim("m1")
    assert table.claim("m1") == slot
    table.update(slot, pid=os.getpid(), phase="generating", pending_len=3, queue_depth=2, hit="partial",
                 prefix_len=128)
    rec = table.read("m1")
    assert rec is not None and rec.phase == "generating" and rec.pending_len == 3 and rec.queue_depth == 2
    assert rec.last_cache_hit == {"kind": "partial", "prefix_len": 128}
    code = ("import sys; from actors.obs import ObsTable; t = ObsTable(sys.argv[1]); r = t.read('m1'); "
            "print(r.phase, r.pending_len, t.global_queue_depth())")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["generating", "3", "2"]
    table.update(slot, pid=999_999_999)  # a writer that is gone reads as down
    assert table.read("m1").phase == "down"
    table.release(slot)
    assert table.read("m1") is None and table.read_all() == []
    table.close()


def test_error_reply_shape() -> None:
    e = ErrorReply("r", "model_crashed", "model 'x' process 1 died")
    assert (e.req_id, e.reason) == ("r", "model_crashed")
