"""The request door: generation requests reach a local model without the supervisor hop, their events come
back on the same connection, and a model that dies holding them answers ``model_crashed`` all the same."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.api import ModelError, System
from actors.errors import ErrorReply
from actors.model import messages as mm
from actors.model.door import DoorAddress, OpenRequests, door_of, is_final
from actors.model.llama import default_model_path
from actors.model.local_inbox import FrameReader, encode, host_id
from tests.actors.conftest import running_system
from tests.waiting import wait_until


def door_requests(system: System, model: str) -> int:
    return int((system.status(model).get("door") or {}).get("requests", 0))


def pid_of(system: System, model: str) -> int:
    return int(next(m["pid"] for m in system.list_models() if m["model_id"] == model))


# ---------------------------------------------------------------------------- pure parts


@given(st.lists(st.tuples(st.sampled_from(["add", "final", "discard"]), st.integers(0, 5)), max_size=40))
@settings(max_examples=200, deadline=None)
def test_the_requests_left_open_are_those_sent_and_never_finished(ops: list[tuple[str, int]]) -> None:
    reqs = OpenRequests()
    model: set[str] = set()
    for op, n in ops:
        rid = f"r{n}"
        if op == "add":
            assert reqs.add(rid)
            model.add(rid)
        elif op == "final":
            reqs.seen(mm.Done(rid, None))  # type: ignore[arg-type]
            model.discard(rid)
        else:
            reqs.seen(mm.TokenChunk(rid, "x", (1,), 0.0))  # not final: the request stays open
            reqs.discard(rid) if n % 2 else None
            if n % 2:
                model.discard(rid)
    assert len(reqs) == len(model)
    assert reqs.close() == sorted(model)
    assert not reqs.add("late")  # a closed door takes nothing more


def test_final_messages() -> None:
    assert is_final(ErrorReply("r", "model_crashed", "")) and is_final(mm.Done("r", None))  # type: ignore[arg-type]
    assert not is_final(mm.TokenChunk("r", "x", (1,), 0.0))


def test_a_door_is_used_only_when_ready_and_on_this_host(tmp_path: Path) -> None:
    sock = tmp_path / "door.sock"
    sock.touch()
    here = {"path": str(sock), "host": host_id()}
    entries = [{"model_id": "a", "state": "ready", "door": here},
               {"model_id": "b", "state": "loading", "door": here},
               {"model_id": "c", "state": "ready", "door": {"path": str(sock), "host": "elsewhere/boot"}},
               {"model_id": "d", "state": "ready", "door": None}]
    assert door_of(entries, "a") == DoorAddress(str(sock), host_id())
    assert all(door_of(entries, m) is None for m in ("b", "c", "d", "missing"))


# ---------------------------------------------------------------------------- a stub model


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("door")) as system:
        system.load_model("slow", backend="stub", stub={"n_seq_max": 2, "step_delay_s": 0.02},
                          allow_debug_crash=True)
        yield system


def test_requests_go_through_the_door_and_their_replies_come_back(doors: System) -> None:
    before = door_requests(doors, "slow")
    r = doors.complete("slow", "hello door", max_tokens=4)
    assert r.finish_reason == "length" and len(r.generated) == 4
    stream = doors.infer("slow", "stream me", max_tokens=5)
    assert sum(len(c.token_ids) for c in stream) == 5 and stream.result.finish_reason == "length"
    assert door_requests(doors, "slow") == before + 2
    # The same request through the supervisor (an explicit destination skips the door) answers the same.
    via_sup = doors._call(mm.Complete("slow", uuid.uuid4().hex, prompt="hello door",
                                      options=mm.GenOptions(max_tokens=4)), 30.0, dest=doors.tree.models)
    assert via_sup.generated == r.generated
    assert door_requests(doors, "slow") == before + 2


def test_callers_on_many_threads_share_one_connection_and_all_get_their_replies(tmp_path: Path) -> None:
    """The first requests of many threads at once: one lookup, one connection, no reply lost."""
    import concurrent.futures

    with running_system(tmp_path) as system:
        system.load_model("m", backend="stub", stub={"n_seq_max": 4, "step_delay_s": 0.002})
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: system.complete("m", f"caller {i}", max_tokens=3), range(16)))
        assert all(r.finish_reason == "length" and len(r.generated) == 3 for r in results)
        assert door_requests(system, "m") == 16
        # the model records an end just after sending its reply: wait for it rather than race it
        assert wait_until(lambda: system.status("m")["door"]["open"] == 0, timeout=5)
        mb = system.inbox()
        assert len(mb.doors._links) == 1 and mb.local.errors == 0


def test_the_door_socket_is_private(doors: System) -> None:
    entry = next(m for m in doors.list_models() if m["model_id"] == "slow")
    path = entry["door"]["path"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_the_door_refuses_anything_but_generation_and_text_queries(doors: System) -> None:
    entry = next(m for m in doors.list_models() if m["model_id"] == "slow")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(entry["door"]["path"])
        s.sendall(encode(mm.ListAdapters("slow", "list-1")))
        reader, frames = FrameReader(), []
        while not frames:
            frames = reader.feed(s.recv(65536))
    reply = pickle.loads(frames[0])
    assert isinstance(reply, ErrorReply) and reply.reason == "bad_request" and reply.req_id == "list-1"
    assert doors.status("slow")["door"]["refused"] >= 1


def test_text_queries_go_through_the_door_and_answer_as_through_the_supervisor(doors: System) -> None:
    """A client tokenizes or renders its prompt every turn: no supervisor hop for that either."""
    before = door_requests(doors, "slow")
    chat = [{"role": "user", "content": "hi there"}]
    ids = doors.tokenize("slow", "hello door")
    text = doors.detokenize("slow", ids)
    rendered = doors.apply_chat_template("slow", chat, tokenize=True)
    assert door_requests(doors, "slow") == before + 3
    via_sup = doors._call(mm.Tokenize("slow", uuid.uuid4().hex, text="hello door"), 30.0, dest=doors.tree.models)
    assert list(via_sup.value) == ids and text == "hello door"
    assert rendered == doors._call(mm.ApplyChatTemplate("slow", uuid.uuid4().hex, messages=tuple(chat), tokenize=True),
                                   30.0, dest=doors.tree.models).value
    assert door_requests(doors, "slow") == before + 3
    with pytest.raises(ModelError) as e:  # a refused query answers through the door like any request
        doors.detokenize("slow", [10**9])
    assert e.value.reason in ("bad_token", "bad_request")
    assert wait_until(lambda: doors.status("slow")["door"]["open"] == 0, timeout=5)


def test_cancel_reaches_a_request_sent_through_the_door(doors: System) -> None:
    stream = doors.infer("slow", "a long one", max_tokens=4000)
    it = iter(stream)
    next(it)
    doors.cancel("slow", stream.req_id)
    for _ in it:
        pass
    assert stream.result.finish_reason == "cancelled"
    assert wait_until(lambda: doors.status("slow")["door"]["open"] == 0, timeout=5)  # request and cancel ended


def test_a_model_killed_while_it_holds_door_requests_answers_model_crashed(doors: System) -> None:
    pid = pid_of(doors, "slow")
    stream = doors.infer("slow", "crash me", max_tokens=4000)
    it = iter(stream)
    next(it)  # admitted and streaming through the door
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(ModelError) as e:
        for _ in it:
            pass
    assert e.value.reason == "model_crashed"
    assert time.monotonic() - t0 < 10.0  # answered when the stream ended, not by a timeout
    # The supervisor restarts it; the new process has its own door, and the next request uses it.
    wait_until(lambda: pid_of(doors, "slow") not in (0, pid) and doors.observe("slow") is not None
               and doors.observe("slow").pid not in (0, pid) and doors.observe("slow").phase == "idle", timeout=60)
    assert doors.complete("slow", "after the crash", max_tokens=3).finish_reason == "length"
    assert door_requests(doors, "slow") == 1


# ---------------------------------------------------------------------------- the real model


def test_greedy_replies_through_the_door_equal_the_supervisor_path(tmp_path: Path) -> None:
    with running_system(tmp_path) as system:
        system.load_model("smol", str(default_model_path()), context={"n_ctx": 512, "n_threads": 1})
        prompt = "The capital of France is"
        direct = system.complete("smol", prompt, max_tokens=12, temperature=0, cache=False)
        relayed = system._call(mm.Complete("smol", uuid.uuid4().hex, prompt=prompt,
                                           options=mm.GenOptions(max_tokens=12, sampler={"temperature": 0.0},
                                                                 cache=False)),
                               60.0, dest=system.tree.models)
        assert direct.generated == relayed.generated and direct.reply == relayed.reply
        assert door_requests(system, "smol") == 1
