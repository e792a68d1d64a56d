"""Bounded and abortable decodes in the shim: a per-decode budget, an abort flag, an in-place reset."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from actors.model.errors import DecodeStopped
from actors.model.llama import Context, Decode, Model, Prefill
from tests.native.conftest import PROMPT


@pytest.fixture
def ctx2(model: Model) -> Iterator[Context]:
    c = model.new_context(n_ctx=512, n_batch=256, n_seq_max=2)
    try:
        yield c
    finally:
        c.close()


def test_a_decode_past_its_budget_ends_in_decode_timeout_and_the_context_resets(model: Model, ctx2: Context,
                                                                                 greedy: object) -> None:
    ctx = ctx2
    toks = model.tokenize(PROMPT, True, True)
    ctx.step([Prefill(0, toks)])
    first = ctx.step([Decode(0, greedy)])[0].token
    ctx.seq_clear(0)
    ctx.set_decode_budget(50)
    ctx.debug_hold_decode(5000)  # the shim's test hook: the next decode is a slow one
    with pytest.raises(DecodeStopped) as e:
        ctx.step([Prefill(0, toks), Prefill(1, toks)])
    assert e.value.reason == "decode_timeout"
    ctx.reset()
    assert ctx.seq_len(0) == 0 and ctx.seq_len(1) == 0 and not ctx.has_logits(0)
    ctx.set_decode_budget(60_000)
    ctx.step([Prefill(0, toks)])  # the same context serves on: same weights, same answer
    assert ctx.step([Decode(0, greedy)])[0].token == first


def test_abort_from_another_thread_stops_the_decode_in_flight(model: Model, ctx: Context) -> None:
    toks = model.tokenize(PROMPT, True, True)
    ctx.set_decode_budget(0)  # unbounded: only the abort can stop it
    ctx.debug_hold_decode(30_000)
    timer = threading.Timer(0.1, ctx.abort)
    timer.start()
    try:
        with pytest.raises(DecodeStopped) as e:
            ctx.step([Prefill(0, toks)])
    finally:
        timer.cancel()
    assert e.value.reason == "aborted"
    ctx.reset()
    ctx.step([Prefill(0, toks)])
    assert ctx.seq_len(0) == len(toks)


def test_an_abort_flag_cleared_before_the_next_decode_stops_nothing(model: Model, ctx: Context) -> None:
    toks = model.tokenize(PROMPT, True, True)
    ctx.abort(True)
    ctx.abort(False)
    ctx.step([Prefill(0, toks)])
    assert ctx.has_logits(0)
    ctx.abort(True)  # set with no decode running: the next decode is stopped
    with pytest.raises(DecodeStopped):
        ctx.step([Prefill(0, toks)])
    ctx.reset()
    with pytest.raises(ValueError):
        ctx.set_decode_budget(-1)
