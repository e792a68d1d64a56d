"""A caller that gives up leaves no work behind: its timeout travels with the request, and a
reply address that died (a closed local inbox) cancels the request it was streaming for."""

from __future__ import annotations

import queue
import time
import uuid
from pathlib import Path

import pytest

from actors.api import System
from actors.model import messages as mm
from actors.model.local_inbox import InboxServer
from tests.actors.conftest import running_system
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(300)
STEP_S = 0.02  # the stub's time per step: 400 tokens take 8 s, so an early end is plain to see


def generated(system: System, model: str) -> int:
    return int(system.status(model)["counters"]["tokens_generated"])


def idle(system: System, model: str) -> bool:
    rec = system.observe(model)
    return rec is not None and rec.phase == "idle" and rec.queue_depth == 0


@pytest.fixture(scope="module")
def slow_stub(tmp_path_factory: pytest.TempPathFactory) -> System:
    with running_system(tmp_path_factory.mktemp("abandon")) as system:
        system.load_model("s", backend="stub", stub={"n_seq_max": 2, "step_delay_s": STEP_S})
        yield system


def test_a_client_timeout_ends_the_request_in_the_model(slow_stub: System) -> None:
    s = slow_stub
    before = generated(s, "s")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        s.complete("s", "a long answer please", max_tokens=400, timeout=0.5)
    # The model ends it at its own deadline (its clock started when it received the request):
    # idle long before the 8 s the 400 tokens would take.
    assert wait_until(lambda: idle(s, "s"), timeout=3.0)
    assert time.monotonic() - t0 < 4.0
    assert generated(s, "s") - before < 200
    assert s.complete("s", "next", max_tokens=3).finish_reason == "length"  # the sequence is free


def test_a_shorter_timeout_s_of_the_caller_wins(slow_stub: System) -> None:
    r = slow_stub.complete("s", "bounded", max_tokens=400, timeout=60, timeout_s=0.3)
    assert r.finish_reason == "timeout" and 0 < len(r.generated) < 400


def test_a_closed_inbox_cancels_the_stream_it_was_for(slow_stub: System) -> None:
    s = slow_stub
    got: queue.SimpleQueue[object] = queue.SimpleQueue()
    inbox = InboxServer(got.put, fallback=None)
    mb = s.inbox()
    rid = uuid.uuid4().hex
    before = generated(s, "s")
    try:
        mb.send(s.tree.models, mm.Infer("s", rid, mb.address, inbox.address, prompt="stream to a client that leaves",
                                        options=mm.GenOptions(max_tokens=400)))
        first = got.get(timeout=30)
        assert isinstance(first, mm.TokenChunk) and first.req_id == rid
    finally:
        inbox.close()  # the client goes away with the request still generating
    assert wait_until(lambda: idle(s, "s"), timeout=3.0)
    assert generated(s, "s") - before < 200
    assert s.status("s")["outbox_errors"] > 0  # the failed write is what noticed it


def test_a_client_timeout_frees_the_real_model(tmp_path: Path) -> None:
    with running_system(tmp_path, default_tier="ram") as system:
        system.load_model("smol", context={"n_ctx": 1024, "n_batch": 64, "n_seq_max": 1, "n_threads": 1})
        before = generated(system, "smol")
        with pytest.raises(TimeoutError):
            system.complete("smol", "Count from one to one thousand: one, two, three,", max_tokens=400,
                            timeout=0.5, cache=False)
        assert wait_until(lambda: idle(system, "smol"), timeout=5.0)
        assert generated(system, "smol") - before < 400
        assert len(system.complete("smol", "Hello", max_tokens=3, cache=False).generated) == 3
