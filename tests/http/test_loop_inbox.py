"""The HTTP server's loop-served inbox: models' frames reach the event loop in order, through a private socket,
a broken writer cannot take the inbox down, and a handler waiting for its next message keeps its cancel."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import struct

import pytest

from actors.http.bridge import next_message
from actors.http.loop_inbox import LoopInbox
from actors.model import messages as mm
from actors.model.local_inbox import MAX_FRAME, InboxWriter, encode


async def _wait_for(cond, what: str, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def test_frames_arrive_in_order_on_the_loop_through_a_private_socket() -> None:
    async def main() -> None:
        got: list[object] = []
        loop_thread = []
        inbox = LoopInbox(lambda m: (got.append(m), loop_thread.append(asyncio.get_running_loop())), "fallback")
        address = await inbox.start()
        try:
            assert stat.S_IMODE(os.stat(address.path).st_mode) == 0o600
            assert stat.S_IMODE(os.stat(os.path.dirname(address.path)).st_mode) == 0o700
            assert address.reachable() and address.fallback == "fallback"
            chunks = [mm.TokenChunk("r1", f"t{i}", (i,), 0.0) for i in range(50)]
            writer = await asyncio.to_thread(InboxWriter, address)  # a model's outbox lane, on another thread
            for c in chunks:
                await asyncio.to_thread(writer.tell, None, c)
            await _wait_for(lambda: len(got) == 50, "50 chunks")
            writer.exit_clone()
            assert got == chunks and inbox.received == 50
            assert all(loop is asyncio.get_running_loop() for loop in loop_thread)  # delivered on the loop itself
        finally:
            inbox.close()
        assert not os.path.exists(address.path)

    asyncio.run(main())


def test_a_broken_writer_is_dropped_and_the_inbox_keeps_serving() -> None:
    async def main() -> None:
        got: list[object] = []
        inbox = LoopInbox(got.append, None)
        address = await inbox.start()
        try:
            bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await asyncio.get_running_loop().sock_connect(bad, address.path)
            bad.sendall(struct.pack("<I", MAX_FRAME + 1))  # an impossible frame length
            bad.sendall(encode(b"not even a message"[:4]))
            await _wait_for(lambda: inbox.errors >= 1, "the bad frame to be refused")
            bad.close()
            good = await asyncio.to_thread(InboxWriter, address)
            await asyncio.to_thread(good.tell, None, mm.TokenChunk("r2", "ok", (1,), 0.0))
            await _wait_for(lambda: len(got) == 1, "the good writer's message")
            good.exit_clone()
            assert got == [mm.TokenChunk("r2", "ok", (1,), 0.0)]
        finally:
            inbox.close()

    asyncio.run(main())


def test_a_client_that_leaves_as_a_token_arrives_still_cancels_its_request() -> None:
    """The disconnect's one cancel lands in the same loop turn as a token: the wait must end cancelled,
    not return the token and serve nobody on (``asyncio.wait_for`` on Python 3.11 did)."""

    async def run() -> str:
        q: asyncio.Queue[str] = asyncio.Queue()
        waiting = asyncio.ensure_future(next_message(q, 600.0))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the handler now waits for its next message
        q.put_nowait("token")
        waiting.cancel()
        try:
            return await waiting
        except asyncio.CancelledError:
            return "cancelled"

    assert asyncio.run(run()) == "cancelled"


def test_a_silent_model_ends_the_wait_with_a_timeout() -> None:
    async def run() -> None:
        await next_message(asyncio.Queue(), 0.01)

    with pytest.raises(TimeoutError):
        asyncio.run(run())
