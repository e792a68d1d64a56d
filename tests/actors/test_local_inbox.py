"""The client's local inbox: frames survive any split of the byte stream, only the owner can connect,
and a model that cannot reach the socket falls back to the thespian address."""

from __future__ import annotations

import os
import pickle
import queue
import stat
import threading
import time
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.api import System
from actors.model import messages as mm
from actors.model.local_inbox import FrameReader, InboxServer, InboxWriter, LocalInbox, encode, host_id
from actors.model.outbox import Outbox


@given(st.lists(st.binary(max_size=300), max_size=12), st.lists(st.integers(1, 64), min_size=1, max_size=20))
@settings(max_examples=200, deadline=None)
def test_frames_survive_any_split(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode(p) for p in payloads)
    reader = FrameReader()
    out: list[bytes] = []
    i = k = 0
    while i < len(stream):
        n = cuts[k % len(cuts)]
        out += reader.feed(stream[i:i + n])
        i += n
        k += 1
    assert [pickle.loads(f) for f in out] == payloads


def test_round_trip_in_order_and_private_socket() -> None:
    got: queue.SimpleQueue[object] = queue.SimpleQueue()
    server = InboxServer(got.put, fallback="thespian-address")
    try:
        path = server.address.path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        assert server.address.reachable() and server.address.host == host_id()
        w = InboxWriter(server.address)
        chunks = [mm.TokenChunk("r1", f"t{i}", (i,), 0.0) for i in range(50)]
        for c in chunks:
            w.tell(None, c)
        w.exit_clone()
        assert [got.get(timeout=5) for _ in chunks] == chunks
        assert server.received == 50
    finally:
        server.close()
    assert not os.path.exists(path)


def test_an_inbox_of_another_host_is_not_reachable() -> None:
    assert not LocalInbox("/tmp/nowhere.sock", "other-host/boot", None).reachable()
    assert not LocalInbox("/tmp/does-not-exist.sock", host_id(), None).reachable()


def test_outbox_writes_to_a_reachable_inbox() -> None:
    ob = Outbox(admin_port=1)  # no thespian context is made for a reachable inbox
    server = InboxServer(lambda _m: None, fallback="fallback-address")
    try:
        sender, target = ob._make_ctx(server.address)
        assert isinstance(sender, InboxWriter) and target == server.address
        sender.exit_clone()
    finally:
        server.close()


def test_replies_come_through_the_socket_and_fall_back_to_thespian(stub_system: System) -> None:
    s = stub_system
    mb = s.inbox()
    before = mb.local.received
    r = s.complete("stub", "through the socket", max_tokens=4)
    assert r.finish_reason == "length" and mb.local.received > before
    # An inbox the model cannot reach (another host's path): the reply still arrives, by thespian.
    unreachable = LocalInbox("/nonexistent/inbox.sock", host_id(), mb.address)
    rid = uuid.uuid4().hex
    mb.open(rid)
    try:
        seen = mb.local.received
        mb.send(s.tree.models, mm.Complete("stub", rid, mb.address, unreachable, prompt="through thespian",
                                           options=mm.GenOptions(max_tokens=4)))
        reply = mb.recv(rid, 30)
    finally:
        mb.finish(rid)
    assert isinstance(reply, mm.Completion) and reply.finish_reason == "length"
    assert mb.local.received == seen


def _lane(ob: Outbox) -> Any:
    (lane,) = ob._lanes.values()
    return lane


def test_an_idle_lane_writes_from_the_posting_thread() -> None:
    got: queue.SimpleQueue[object] = queue.SimpleQueue()
    server = InboxServer(got.put, fallback="fallback-address")
    ob = Outbox(admin_port=1)
    try:
        chunks = [mm.TokenChunk("r1", f"t{i}", (i,), 0.0) for i in range(20)]
        for c in chunks:
            ob.post(server.address, c)
            assert got.get(timeout=5) == c  # read before the next post: the lane is idle each time
        assert _lane(ob).direct == 20 and _lane(ob).sent == 20
    finally:
        ob.close()
        server.close()


def test_a_reader_that_stops_reading_gets_every_frame_whole_and_in_order() -> None:
    """Frames the socket will not take at once (a full buffer) go on through the lane's thread."""
    release = threading.Event()
    got: list[object] = []

    def slow(msg: object) -> None:
        release.wait(30)  # the inbox thread stops reading until released: the socket buffer fills
        got.append(msg)

    server = InboxServer(slow, fallback="fallback-address")
    ob = Outbox(admin_port=1)
    try:
        big = "x" * (64 << 10)
        chunks = [mm.TokenChunk("r1", f"{i}:{big}", (i,), 0.0) for i in range(40)]  # ~2.6 MB, past any buffer
        for c in chunks:
            ob.post(server.address, c)  # never blocks the poster
        lane = _lane(ob)
        assert lane.direct < len(chunks)  # some had to wait for the thread
        release.set()
        assert ob.flush(30)
        deadline = time.monotonic() + 30
        while sum(len(c.token_ids) for c in got) < len(chunks) and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.01)
        ids = [i for c in got for i in c.token_ids]  # type: ignore[attr-defined]
        text = "".join(c.text for c in got)  # type: ignore[attr-defined]
        assert ids == list(range(40))  # chunks queued behind a busy lane may merge, never reorder
        assert text == "".join(c.text for c in chunks)
        assert server.errors == 0
    finally:
        release.set()
        ob.close()
        server.close()
