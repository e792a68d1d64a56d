"""Properties of the pure batch planner and the admission order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.model.scheduler import (
    ModelPhase,
    SeqWork,
    default_chunk,
    phase_of,
    plan_batch,
    select_admissions,
)


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[SeqWork], int, int]:
    n_seq = draw(st.integers(1, 16))
    n_batch = draw(st.integers(n_seq, 512))
    chunk = draw(st.integers(1, n_batch))
    seqs = draw(st.lists(st.integers(0, n_seq - 1), unique=True, max_size=n_seq))
    work = []
    for i, s in enumerate(seqs):
        kind = draw(st.sampled_from(["decode", "prefill", "none"]))
        order = draw(st.integers(0, 1000)) * 100 + i
        if kind == "decode":
            work.append(SeqWork(s, order, decode=True))
        elif kind == "prefill":
            work.append(SeqWork(s, order, prefill=draw(st.integers(1, 2000))))
        else:
            work.append(SeqWork(s, order))
    return work, n_batch, chunk


@settings(max_examples=300, deadline=None)
@given(workloads())
def test_plan_properties(case: tuple[list[SeqWork], int, int]) -> None:
    work, n_batch, chunk = case
    rows = plan_batch(work, n_batch, chunk)
    by_seq = {w.seq: w for w in work}
    # budget never exceeded
    assert sum(r.n for r in rows) <= n_batch
    # each sequence at most once
    assert len({r.seq for r in rows}) == len(rows)
    # every decoding sequence served (n_batch >= number of sequences)
    decoders = {w.seq for w in work if w.decode}
    limit = chunk if decoders else n_batch
    assert decoders == {r.seq for r in rows if r.kind == "decode"}
    for r in rows:
        w = by_seq[r.seq]
        if r.kind == "decode":
            assert r.n == 1 and w.decode
        else:
            # slices never cross the stop point, and respect the chunk while a stream is generating
            assert 1 <= r.n <= min(limit, w.prefill)
    # progress: any work -> a non-empty plan
    if any(w.decode or w.prefill for w in work):
        assert rows
    # prefill goes oldest first: a younger prefiller is only served when every older one got its full slice
    pre = sorted((w for w in work if w.prefill), key=lambda w: (w.order, w.seq))
    served = {r.seq: r.n for r in rows if r.kind == "prefill"}
    for i, w in enumerate(pre):
        if w.seq in served:
            for older in pre[:i]:
                assert served.get(older.seq) == min(limit, older.prefill)


def test_plan_stops_exactly_at_boundary() -> None:
    rows = plan_batch([SeqWork(0, 0, prefill=5)], 512, 64)
    assert [(r.kind, r.n) for r in rows] == [("prefill", 5)]


def test_plan_fills_the_batch_only_when_no_stream_waits() -> None:
    alone = plan_batch([SeqWork(0, 0, prefill=900)], 512, 128)
    assert [(r.kind, r.n) for r in alone] == [("prefill", 512)]
    beside = plan_batch([SeqWork(0, 0, prefill=900), SeqWork(1, 1, decode=True)], 512, 128)
    assert sorted((r.kind, r.n) for r in beside) == [("decode", 1), ("prefill", 128)]


def test_plan_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        plan_batch([SeqWork(0, 0, decode=True), SeqWork(0, 1, decode=True)], 8, 4)
    with pytest.raises(ValueError):
        plan_batch([SeqWork(0, 0, decode=True, prefill=3)], 8, 4)
    with pytest.raises(ValueError):
        plan_batch([], 0, 4)


def test_default_chunk() -> None:
    assert default_chunk(512) == 128
    assert default_chunk(128) == 64
    assert default_chunk(32) == 32


def test_phase() -> None:
    assert phase_of([]) is ModelPhase.IDLE
    assert phase_of([SeqWork(0, 0, prefill=3)]) is ModelPhase.PREFILLING
    assert phase_of([SeqWork(0, 0, prefill=3), SeqWork(1, 1, decode=True)]) is ModelPhase.GENERATING
    assert phase_of([]) == "idle"  # observers (status JSON, the shared-memory table) see the plain value


@given(st.lists(st.booleans(), max_size=20), st.integers(0, 8))
def test_admission_is_fifo_among_slot_needers(needs: list[bool], free: int) -> None:
    pending = [(i, n) for i, n in enumerate(needs)]
    out = select_admissions(pending, free)
    assert out == sorted(out)
    needers = [i for i, n in pending if n]
    admitted_needers = [i for i in out if needs[i]]
    assert admitted_needers == needers[: min(free, len(needers))]
    assert all(i in out for i, n in pending if not n)
