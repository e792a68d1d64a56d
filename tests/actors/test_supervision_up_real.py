"""Supervision all the way up on the real bundled model: the model supervisor dies during a stream.

The stub tests (``test_supervision_up.py``) cover every process of the tree; this one proves the
round that matters most on llama.cpp itself: the caller gets ``model_crashed`` at once, the model
comes back with its LoRA adapter, and a row saved before the crash is still an exact hit.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors.cache import messages as cm
from actors.cache.policy import SavePolicy
from actors.supervisor import messages as sm
from actors.supervisor import runtime
from tests.actors.conftest import running_system
from tests.actors.test_supervision_up import NEVER_A_HANG_S, Caller, kill_all, serving, tree_pids
from tests.native.fixtures import write_lora
from tests.waiting import wait_until

POLICY = SavePolicy(min_tokens=8, cold_min_tokens=8, continued_interval=0, boundary_trim_tokens=0,
                    boundary_align_tokens=1)
CONTEXT = {"n_ctx": 1024, "n_batch": 256, "n_seq_max": 2, "n_threads": 1, "n_threads_batch": 1}


@pytest.mark.timeout(300)
def test_real_model_comes_back_with_its_adapter_after_the_model_supervisor_dies(tmp_path: Path) -> None:
    with running_system(tmp_path, default_tier="disk", policy=POLICY) as s:
        s.load_model("smol", context=CONTEXT)
        adapter = s.load_adapter("smol", str(write_lora(tmp_path / "tiny-lora.gguf", scale=2.0)), scale=0.5)
        prompt = "A short note about the supervision of processes: every child has a parent that restarts it."
        s.prefill_only("smol", prompt)
        meta = runtime.ask(s.asys, s.tree.root, sm.TreeInfoReq(), 10).meta
        assert isinstance(runtime.ask(s.asys, meta, cm.WaitIdle(), 30), cm.Idle)
        # the publish notice reaches the model's own index a moment after the write (an inspection)
        assert wait_until(lambda: s.list_cached_prefixes("smol", prompt)["kind"] == "exact")
        before = s.complete("smol", prompt, max_tokens=8)
        assert before.cache_hit_kind == "exact"

        pids = tree_pids(s)
        caller = Caller(s, "smol")
        t_kill = kill_all([pids["models"]])
        caller.thread.join(30)
        assert caller.outcome == "model_crashed"
        assert caller.ended_at is not None and caller.ended_at - t_kill < NEVER_A_HANG_S

        assert wait_until(lambda: serving(s, ("smol",), {pids["model:smol"]}), timeout=60)
        assert s.list_adapters("smol") == [adapter]  # the same adapter, same scale, same file hash
        assert wait_until(lambda: s.list_cached_prefixes("smol", prompt)["kind"] == "exact", timeout=10)
        after = s.complete("smol", prompt, max_tokens=8)
        assert after.cache_hit_kind == "exact" and after.generated == before.generated
        assert not runtime.alive([pids["models"], pids["model:smol"]])
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 30  # closed without waiting on the dead
