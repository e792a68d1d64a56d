"""The model actor and the supervision tree on the stub backend (fast, no model file)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from actors.api import ModelError, System
from actors.cache import messages as cm
from actors.supervisor import messages as sm
from actors.supervisor import runtime
from tests.actors import toy_actors as toy
from tests.actors.conftest import running_system
from tests.waiting import wait_until


def test_complete_infer_and_observe(stub_system: System) -> None:
    s = stub_system
    r = s.complete("stub", "hello world", max_tokens=8)
    assert r.finish_reason == "length" and len(r.generated) == 8 and r.cache_hit_kind == "cold"
    # rows of a file tier are visible once a writer published them (only ram rows are read-your-writes)
    runtime.ask(s.asys, s.tree.meta, cm.WaitIdle("idle"), 30)
    stream = s.infer("stub", "hello world", max_tokens=8)
    chunks = list(stream)
    assert "".join(c.text for c in chunks) == stream.result.reply == r.reply
    obs = s.observe("stub")
    assert obs is not None and obs.phase == "idle" and obs.pending_len == 0 and obs.queue_depth == 0
    # the repeated prompt restores the whole-prompt row saved (with its logits) by the first request
    assert stream.result.cache_hit_kind == "exact"
    assert obs.last_cache_hit == {"kind": "exact", "prefix_len": r.stats["prompt_tokens"]}
    st = s.status("stub")
    assert st["phase"] == "idle" and st["slots"]["n_seq_max"] == 4 and st["state"] == "ready"


@pytest.mark.timeout(60)
def test_status_and_obs_during_generation(stub_system: System) -> None:
    s = stub_system
    stream = s.infer("stub", "a long one", max_tokens=400)
    it = iter(stream)
    next(it)
    for _ in range(10):
        st = s.status("stub")
        assert st["phase"] == "generating"
        assert st["requests"][0]["req_id"] == stream.req_id
    obs = s.observe("stub")
    assert obs.phase == "generating" and obs.queue_depth == 1
    assert s.queue_depth() >= 1
    stream.close()
    assert stream.result is not None and stream.result.finish_reason == "cancelled"


@pytest.mark.timeout(60)
def test_status_is_never_stuck_behind_a_decode(stub_system: System) -> None:
    """Status is answered from the last snapshot on the message thread, not after the step in progress.

    Each step of this model takes half a second, so a status that waited for the
    step would take a quarter of a second at the median; the time a status takes on
    an idle machine is a speed figure (bench/actor_bench.py, ``status``), not asserted here.
    """
    s = stub_system
    step_s = 0.5
    s.load_model("slow", backend="stub", stub={"n_seq_max": 1, "n_batch": 64, "step_delay_s": step_s})
    try:
        stream = s.infer("slow", "one slow step at a time", max_tokens=100)
        it = iter(stream)  # kept: a dropped iterator closes the stream (and cancels the request)
        next(it)
        lat = []
        for _ in range(6):
            t0 = time.perf_counter()
            st = s.status("slow")
            lat.append(time.perf_counter() - t0)
            assert st["phase"] == "generating"
        assert sorted(lat)[len(lat) // 2] < step_s / 2, lat
        stream.close()
        assert stream.result is not None and stream.result.finish_reason == "cancelled"
    finally:
        s.unload_model("slow", save=False)


@pytest.mark.timeout(60)
def test_early_exit_cancels_and_fifo_pending_visible(stub_system: System) -> None:
    s = stub_system
    streams = [s.infer("stub", f"prompt {i}", max_tokens=300) for i in range(6)]
    first = iter(streams[0])
    next(first)
    assert wait_until(lambda: s.observe("stub").pending_len == 2, timeout=5)
    assert s.observe("stub").pending_len == 2 and s.observe("stub").queue_depth == 4
    for st in streams:
        st.close()
        assert st.result.finish_reason == "cancelled"
    assert s.status("stub")["phase"] == "idle"


def test_user_actor_subscribes_to_tokens(stub_system: System) -> None:
    s = stub_system
    sub = s.asys.createActor(toy.Subscriber)
    req = toy.Subscribe(uuid.uuid4().hex, s.tree.models, "stub", "subscribe me", 12)
    got = runtime.ask(s.asys, sub, req, 30)
    assert got.error is None and got.result.finish_reason == "length"
    assert "".join(t for t, _ids, _ts in got.chunks) == got.result.reply
    assert [i for _t, ids, _ts in got.chunks for i in ids] == list(got.result.generated)


def test_bad_input_is_clear_error_and_tree_survives(stub_system: System) -> None:
    s = stub_system
    with pytest.raises(ModelError) as e:
        s.complete("nope", "hi")
    assert e.value.reason == "no_such_model"
    with pytest.raises(ModelError) as e:
        s.complete("stub", "hi", temprature=1)
    assert e.value.reason == "bad_option"
    with pytest.raises(ModelError) as e:
        s.complete("stub", [1, 2, 10**9])
    assert e.value.reason == "bad_token"
    with pytest.raises(ModelError) as e:
        s.load_model("broken", path="/no/such/file.gguf")
    assert e.value.reason in ("not_found", "load_failed")
    with pytest.raises(ModelError) as e:
        s.load_model("stub", backend="stub")
    assert e.value.reason == "model_exists"
    with pytest.raises(ModelError) as e:
        s.debug_crash_checked = None  # type: ignore[attr-defined]
        s.continue_("stub", [5], session_id="none")
    assert e.value.reason == "no_session"
    assert [m["model_id"] for m in s.list_models()] == ["stub"]
    assert s.complete("stub", "still fine", max_tokens=2).finish_reason == "length"


def test_concurrent_clients_from_threads(stub_system: System) -> None:
    s = stub_system
    solo = {i: s.complete("stub", f"thread prompt {i}", max_tokens=10).generated for i in range(6)}
    out: dict[int, tuple[int, ...]] = {}

    def work(i: int) -> None:
        out[i] = s.complete("stub", f"thread prompt {i}", max_tokens=10).generated

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == solo


# --------------------------------------------------------------------------- crashes and supervision


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["kill", "segv", "abort"])
def test_crash_mid_stream_errors_restarts_and_keeps_saved_rows(tmp_path: Path, how: str) -> None:
    with running_system(tmp_path) as s:
        s.load_model("m", backend="stub", stub={"step_delay_s": 0.003}, allow_debug_crash=True)
        prompt = "a system prompt that is worth saving " * 3
        pre = s.prefill_only("m", prompt, tier="disk")
        assert pre.finish_key is not None
        sess = s.complete("m", "pinned session prompt here", max_tokens=4, session_id="s1")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the pin travels model -> meta asynchronously
            runtime.ask(s.asys, s.tree.meta, cm.WaitIdle("idle"), 30)
            pins = {r["key"]: r["pins"] for r in runtime.ask(s.asys, s.tree.meta, cm.Dump("d"), 30).rows}
            if pins.get(sess.finish_key.hex()):
                break
            time.sleep(0.02)
        assert pins[sess.finish_key.hex()], "session row should be pinned"
        old_addr = s.model_address("m")
        old_pid = s.status("m")["pid"]
        stream = s.infer("m", "stream until it dies", max_tokens=5000)
        waiting = s.infer("m", "another caller", max_tokens=5000)
        it = iter(stream)
        next(it)
        t0 = time.monotonic()
        s.debug_crash("m", how)
        with pytest.raises(ModelError) as e:
            for _ in it:
                pass
        assert e.value.reason == "model_crashed"
        assert time.monotonic() - t0 < 2.0
        with pytest.raises(ModelError) as e2:
            list(waiting)
        assert e2.value.reason == "model_crashed"
        # the next request on the same id works, in a new process at a new address
        r = s.complete("m", prompt, max_tokens=4)
        assert r.cache_hit_kind == "exact"  # the disk row published before the crash is still a hit
        st = s.status("m")
        assert st["pid"] != old_pid and st["restarts"] == 1
        assert s.model_address("m") != old_addr
        assert s.list_models()[0]["restarts"] == 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pins = {r["key"]: r["pins"] for r in runtime.ask(s.asys, s.tree.meta, cm.Dump("d"), 30).rows}
            if not pins.get(sess.finish_key.hex()):
                break
            time.sleep(0.05)
        assert not pins.get(sess.finish_key.hex()), "the dead process's pins must be released"


@pytest.mark.timeout(120)
def test_restart_intensity_marks_model_failed(tmp_path: Path) -> None:
    with running_system(tmp_path) as s:
        s.load_model("m", backend="stub", allow_debug_crash=True)
        s.load_model("other", backend="stub")
        for i in range(4):
            s.debug_crash("m", "kill")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                models = {m["model_id"]: m for m in s.list_models()}
                if models["m"]["restarts"] == i + 1 or models["m"]["state"] == "failed":
                    break
                time.sleep(0.02)
            if models["m"]["state"] == "failed":
                break
            while models["m"]["state"] != "ready" and time.monotonic() < deadline:
                time.sleep(0.02)
                models = {m["model_id"]: m for m in s.list_models()}
        assert models["m"]["state"] == "failed" and models["m"]["restarts"] == 3
        with pytest.raises(ModelError) as e:
            s.complete("m", "hi")
        assert e.value.reason == "model_failed"
        assert s.complete("other", "unaffected", max_tokens=2).finish_reason == "length"
        s.load_model("m", backend="stub")  # an explicit reload brings it back
        assert s.complete("m", "back", max_tokens=2).finish_reason == "length"


@pytest.mark.timeout(120)
def test_python_exception_inside_a_tick_is_an_error_reply(stub_system: System) -> None:
    s = stub_system
    # the stub_system model refuses the debug hook; a separate model allows it
    s.load_model("raiser", backend="stub", stub={"step_delay_s": 0.002}, allow_debug_crash=True)
    try:
        stream = s.infer("raiser", "busy", max_tokens=5000)
        it = iter(stream)
        next(it)
        s.debug_crash("raiser", "raise")
        with pytest.raises(ModelError) as e:
            list(it)
        assert e.value.reason == "internal_error"
        assert s.complete("raiser", "fine again", max_tokens=3).finish_reason == "length"
        assert s.list_models()[-1]["restarts"] == 0
    finally:
        s.unload_model("raiser")


@pytest.mark.timeout(120)
def test_cache_meta_crash_restarts_cache_and_models_rebind(tmp_path: Path) -> None:
    with running_system(tmp_path) as s:
        s.load_model("m", backend="stub")
        old_meta = s.tree.meta  # s.tree itself follows a restarted meta: keep the old address to compare
        meta_pid = runtime.listener_pid(old_meta.addressDetails.sockname[1])
        assert meta_pid is not None
        import os
        import signal

        os.kill(meta_pid, signal.SIGKILL)

        def new_meta() -> Any:
            info = runtime.ask(s.asys, s.tree.root, sm.TreeInfoReq("i"), 10)
            return info if info.meta is not None and info.meta != old_meta else None

        info = wait_until(new_meta, timeout=10)
        assert info is not None and info.meta != old_meta
        assert wait_until(lambda: s.tree.meta == info.meta)  # the handle follows once it sees the old one gone
        prompt = "rows saved after the cache restart " * 3
        s.prefill_only("m", prompt)
        runtime.ask(s.asys, info.meta, cm.WaitIdle("idle"), 30)
        # the new meta's publish notice reaches the model's own index (an inspection: counts nothing)
        assert wait_until(lambda: s.list_cached_prefixes("m", prompt)["kind"] == "exact")
        assert s.complete("m", prompt, max_tokens=2).cache_hit_kind == "exact"


def children(s: System, sup: Any) -> Any:
    """A supervisor's ``Children`` reply (its children's addresses, its restart count)."""
    return runtime.ask(s.asys, sup, sm.WhichChildren("c"), 10)


def restarted(s: System, sup: Any) -> Any:
    """The supervisor's ``Children`` once it has restarted a child, None before."""
    c = children(s, sup)
    return c if c.restarts else None


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("strategy", "expect_restarted"), [("one_for_one", {"w1"}),
                                                             ("one_for_all", {"w0", "w1", "w2"}),
                                                             ("rest_for_one", {"w1", "w2"})])
def test_generic_supervisor_strategies(stub_system: System, strategy: str, expect_restarted: set[str]) -> None:
    import os
    import signal

    s = stub_system
    sup = s.asys.createActor(toy.ToySup)
    s.asys.tell(sup, toy.ToyStart(strategy, 5))
    assert wait_until(lambda: {"w0", "w1", "w2"} <= set(children(s, sup).children))  # started
    before = children(s, sup).children
    pid = runtime.ask(s.asys, before["w1"], toy.Pid("p"), 10).pid
    os.kill(pid, signal.SIGKILL)
    after = wait_until(lambda: restarted(s, sup), timeout=10)
    assert after is not None
    changed = {c for c in before if after.children.get(c) != before[c]}
    assert changed == expect_restarted
    for addr in after.children.values():
        assert runtime.ask(s.asys, addr, toy.Pid("p"), 10).pid > 0
    from thespian.actors import ActorExitRequest

    s.asys.tell(sup, ActorExitRequest())


@pytest.mark.timeout(120)
def test_intensity_exceeded_escalates_to_parent(stub_system: System) -> None:
    import os
    import signal

    s = stub_system
    root = s.asys.createActor(toy.ToyRoot)
    s.asys.tell(root, toy.ToyStart("one_for_one", 1, n_children=2))
    sup0 = wait_until(lambda: children(s, root).children.get("sup"))
    assert wait_until(lambda: set(children(s, sup0).children) == {"w0", "w1"})
    for kill in range(2):  # the second kill within the window exceeds max_restarts=1
        kids = children(s, sup0).children
        os.kill(runtime.ask(s.asys, kids["w0"], toy.Pid("p"), 10).pid, signal.SIGKILL)
        if kill == 0:  # the first kill is restarted by sup0 itself
            assert wait_until(lambda: children(s, sup0).restarts == 1)
    top = wait_until(lambda: restarted(s, root), timeout=10)
    assert top is not None
    assert top.restarts == 1 and top.children["sup"] != sup0  # the sub-supervisor exited and was restarted
    assert wait_until(lambda: set(children(s, top.children["sup"]).children) == {"w0", "w1"})  # restarted anew
    kids = children(s, top.children["sup"])
    assert set(kids.children) == {"w0", "w1"} and not kids.escalated
    from thespian.actors import ActorExitRequest

    s.asys.tell(root, ActorExitRequest())


@pytest.mark.timeout(120)
def test_slow_subscriber_gets_coalesced_tokens_never_dropped(stub_system: System) -> None:
    s = stub_system
    sub = s.asys.createActor(toy.Subscriber)
    req = toy.Subscribe(uuid.uuid4().hex, s.tree.models, "stub", "fast producer", 300, delay_s=0.02)
    got = runtime.ask(s.asys, sub, req, 60)
    assert got.error is None and len(got.result.generated) == 300
    ids = [i for _t, chunk_ids, _lat in got.chunks for i in chunk_ids]
    assert ids == list(got.result.generated)  # every token, in order
    assert len(got.chunks) < 300  # ...in fewer messages than tokens
    assert "".join(t for t, _i, _l in got.chunks) == got.result.reply


@pytest.mark.timeout(120)
def test_unload_saves_sessions_and_reload_hits(tmp_path: Path) -> None:
    with running_system(tmp_path) as s:
        s.load_model("m", backend="stub")
        sess = s.complete("m", "a conversation worth keeping", max_tokens=6, session_id="c1")
        pids_before = set(s.pids())
        s.unload_model("m")
        assert s.list_models() == [] and s.observe("m") is None
        assert len(set(s.pids()) - pids_before) == 0 and len(s.pids()) == len(pids_before) - 1
        s.load_model("m", backend="stub")
        again = s.complete("m", list(sess.context_tokens), max_tokens=3)
        assert again.cache_hit_kind == "exact"  # the shutdown save of the live session


def test_two_models_on_one_file_each_get_ram_hits(tmp_path: Path) -> None:
    """Same weights, same layout, same keys: each model process keeps its own ram copy."""
    from tests.actors.conftest import running_system

    # Without write-behind: with it, b may hit a's copy in ram_file first (what kind depends on timing).
    with running_system(tmp_path, default_tier="ram", write_behind=False) as s:
        cfg = {"n_seq_max": 2, "n_batch": 64}
        s.load_model("a", backend="stub", stub=cfg)
        s.load_model("b", backend="stub", stub=cfg)
        prompt = "a prompt long enough to be worth a cache row " * 2
        kinds = [s.complete(m, prompt, max_tokens=4).cache_hit_kind for m in ("a", "a", "b")]
        # b's save has been answered (the meta used to tell b to drop its copy) and b's own index has the row
        runtime.ask(s.asys, s.tree.meta, cm.WaitIdle("idle"), 30)
        assert wait_until(lambda: s.list_cached_prefixes("b", prompt)["kind"] == "exact")
        kinds += [s.complete(m, prompt, max_tokens=4).cache_hit_kind for m in ("b", "a")]
        assert kinds == ["cold", "exact", "cold", "exact", "exact"]
