"""Every example script runs as a user would run it, and prints what it promises.

The numbered examples (``examples/NN_topic.py``) print ``key: value`` lines; each is run, must exit 0
and leave no process behind, and the check registered for it in ``CHECKS`` asserts the facts a user
would look for (hit kinds, identical replies, counters, error reasons).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name: str, *args: str, timeout: float = 300) -> str:
    r = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@functools.cache
def output(name: str) -> str:
    """One run per script and test session (a check and an expected failure may read the same run)."""
    return run(name, timeout=180)


def facts(out: str) -> dict[str, str]:
    """The ``key: value`` lines of an example's output (the last one wins)."""
    found: dict[str, str] = {}
    for line in out.splitlines():
        m = re.match(r"^(\S[^:]*?): (.*)$", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def js(value: str) -> object:
    return json.loads(value)


# --------------------------------------------------------------------------- checks, one per script


def check_00(f: dict[str, str], out: str) -> None:
    for mode in ("plain", "actors"):
        assert js(f[f"{mode} counters"]) == {"saves_cold": 1, "misses": 1, "hits_exact": 1}
        assert f[f"{mode} ok"] == "True"


def check_01(f: dict[str, str], out: str) -> None:
    assert f["first cache_hit_kind"] == "cold"
    assert f["repeat cache_hit_kind"] == "exact"
    assert f["identical replies"] == "True"
    assert float(f["repeat ttft_ms"]) < float(f["first ttft_ms"])
    assert js(f["models after unload"]) == []


def check_02(f: dict[str, str], out: str) -> None:
    assert f["turn1 cache_hit_kind"] == "cold" and f["turn1 cache_delta.read"] == "0"
    assert f["turn2 cache_hit_kind"] == "partial"
    assert int(f["turn2 cache_delta.read"]) >= int(f["turn1 prompt tokens"])  # all of turn 1 came from the cache
    assert int(f["turn2 prefilled tokens"]) < int(f["turn2 prompt tokens"]) // 2
    assert js(f["turn2 counters"])["hits_longest_prefix"] == 1  # type: ignore[index]


def check_03(f: dict[str, str], out: str) -> None:
    assert f["turn1 cache_hit_kind"] == "cold" and f["turn1 finish_key"] != "None"
    assert f["turn2 cache_hit_kind"] == "partial"
    assert f["turn2 resumed from turn1"] == "True"
    assert int(f["turn2 cache_delta.read"]) == int(f["turn1 committed_tokens"])
    assert f["short turn finish_key"] == "None"


def check_04(f: dict[str, str], out: str) -> None:
    assert js(f["models"]) == ["a", "b"]
    assert f["a first cache_hit_kind"] == "cold" and f["b first cache_hit_kind"] == "cold"
    assert f["a repeat cache_hit_kind"] == "exact" and f["b repeat cache_hit_kind"] == "exact"
    assert f["distinct cache keys"] == "True"
    assert f["a identical on repeat"] == "True" and f["b identical on repeat"] == "True"
    assert f["a reply"] != "''" and f["b reply"] != "''"
    assert js(f["models after unload"]) == []


def check_05(f: dict[str, str], out: str) -> None:
    assert f["first agent cache_hit_kind"] == "cold"
    assert f["agents"] == "4" and f["replies"] == "4"
    assert js(f["cache_hit_kinds"]) == ["partial"] * 4  # the shared system prompt came from the cache
    assert int(f["sequences used"]) >= 2  # they really ran side by side
    assert float(f["concurrent wall_s"]) > 0


def check_06(f: dict[str, str], out: str) -> None:
    assert f["chunks received"] == "3"
    assert f["finish_reason"] == "cancelled"
    assert int(f["generated tokens"]) < int(f["max_tokens"])
    assert f["phase after cancel"] == "idle"
    assert f["full stream finish_reason"] in ("length", "stop") and f["full stream"] != "''"


def check_07(f: dict[str, str], out: str) -> None:
    assert "What's 2+2?" in f["rendered prompt"] and "You are concise." in f["rendered prompt"]
    assert f["reply"] != "''" and f["finish_reason"] in ("length", "stop")
    assert int(f["embedding size"]) > 0
    assert f["similar closer than unrelated"] == "True"
    assert float(f["cosine similar"]) > float(f["cosine unrelated"])


def check_12(f: dict[str, str], out: str) -> None:
    assert f["warm1 cache_hit_kind"] == "cold" and f["warm1 finish_reason"] == "prefill"
    assert f["warm1 generated"] == "0"
    assert f["warm2 cache_hit_kind"] == "partial"
    assert js(f["warm2 cache_delta"]) == {"read": int(f["warm1 committed_tokens"]),
                                          "created": int(f["warm2 suffix tokens"])}
    assert f["complete cache_hit_kind"] == "exact"
    assert f["complete cache_delta.read"] == f["prompt tokens"]
    assert f["warm faster"] == "True"


def check_13(f: dict[str, str], out: str) -> None:
    assert f["turn1 cache_hit_kind"] == "cold"
    assert f["turn2 cache_hit_kind"] == "sticky"
    assert f["turn2 read == turn1 committed_tokens"] == "True"
    assert js(f["sessions pinned"]) == ["conversation-42"]
    assert f["end_session"] == "True" and f["end_session again"] == "False"
    assert js(f["sessions after end"]) == []


def check_14(f: dict[str, str], out: str) -> None:
    assert f["turn1 cache_hit_kind"] == "cold"
    assert f["turn2 cache_hit_kind"] == "continuation"
    assert f["turn2 read == prior tokens"] == "True"
    assert int(f["suffix tokens"]) > 0
    assert f["end_session"] == "True"
    assert f["continue after end_session"] == "no_session"


def check_15(f: dict[str, str], out: str) -> None:
    assert f["sequences used"] == f["n_seq_max"] == "3"
    assert js(f["sessions pinned"]) == ["alice", "bob", "carol"]
    assert f["new session while all pinned"] == "session_pool_full"
    assert f["end_session alice"] == "True"
    assert f["new session after end_session"].startswith("ok")
    assert f["request without session"].startswith("ok")
    assert len(js(f["sessions pinned after"])) == 2  # type: ignore[arg-type]


def check_16(f: dict[str, str], out: str) -> None:
    assert "generating" in js(f["phases seen"])  # type: ignore[operator]
    assert int(f["max pending_len"]) >= 1  # the second request waited for the only sequence
    assert int(f["max queue_depth"]) == 1 and int(f["max global queue_depth"]) >= 1
    assert float(f["observe p99_us"]) < 50_000
    assert f["phase after"] == "idle" and f["pending_len after"] == "0" and f["queue_depth after"] == "0"
    assert js(f["observe_all"]) == ["smol"]


def check_17(f: dict[str, str], out: str) -> None:
    rows = {r["request"]: r for r in (json.loads(line) for line in out.splitlines() if line.startswith("{"))}
    cold, exact, partial, short = rows["cold"], rows["exact"], rows["partial"], rows["short"]
    assert cold["cache_hit_kind"] == "cold" and cold["read"] == 0 and cold["created"] == cold["committed_tokens"]
    assert exact["cache_hit_kind"] == "exact" and exact["read"] == exact["prompt_tokens"]
    assert partial["cache_hit_kind"] == "partial" and 0 < partial["read"] < partial["prompt_tokens"]
    assert partial["created"] == partial["committed_tokens"] - partial["read"]
    assert short["read"] == 0 and short["created"] == 0


def check_18(f: dict[str, str], out: str) -> None:
    assert js(f["counters"])["hits_exact"] >= 1  # type: ignore[index]
    by_tier = js(f["rows by tier"])
    assert by_tier["ram"] >= 1 and by_tier["disk"] >= 1  # type: ignore[index]
    assert int(f["evicted rows"]) == by_tier["ram"] and int(f["evicted bytes"]) > 0  # type: ignore[index]
    assert int(f["evictions counter"]) == int(f["evicted rows"])
    assert f["repeat after eviction cache_hit_kind"] == "cold"


def check_19(f: dict[str, str], out: str) -> None:
    assert f["first cache_hit_kind"] == "cold"
    assert f["repeat at 10% used cache_hit_kind"] == "exact"
    assert f["evictions at 10% used"] == "0"
    assert int(f["polls at 10% used"]) >= 3  # it looked, and saw no pressure (not merely slow to look)
    assert int(f["evictions at 95% used"]) >= int(f["rows_ram before pressure"]) >= 1
    assert f["repeat after pressure cache_hit_kind"] == "cold"
    assert f["identical replies"] == "True"


def check_23(f: dict[str, str], out: str) -> None:
    assert f["subscriber finish_reason"] == "length" and f["subscriber error"] == "None"
    assert int(f["subscriber chunks"]) >= 1
    assert f["same text as complete"] == "True"


CHECKS: dict[str, Callable[[dict[str, str], str], None]] = {
    "00_cache_smoke.py": check_00,
    "01_one_shot.py": check_01,
    "02_stateless_chat.py": check_02,
    "03_parent_key.py": check_03,
    "04_two_models.py": check_04,
    "05_concurrent_agents.py": check_05,
    "06_stream_cancel.py": check_06,
    "07_chat_embeddings.py": check_07,
    "12_prefill_only.py": check_12,
    "13_sticky_sessions.py": check_13,
    "14_continue.py": check_14,
    "15_multi_tenant.py": check_15,
    "16_observability.py": check_16,
    "17_cache_delta.py": check_17,
    "18_cache_inspection.py": check_18,
    "19_memory_pressure.py": check_19,
    "23_custom_subscriber.py": check_23,
}


NUMBERED = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))


def test_every_check_has_its_script() -> None:
    assert [s for s in CHECKS if s not in NUMBERED] == []


def documented_files(doc: Path) -> dict[str, str]:
    """The fenced python blocks of ``doc`` whose first line is ``# examples/<file>``, by file name."""
    blocks = re.findall(r"^```python\n# (examples/\S+)\n(.*?)^```$", doc.read_text(), re.M | re.S)
    return dict(blocks)


def test_custom_subscriber_doc_is_the_example_that_runs() -> None:
    """docs/features.md shows the subscriber and its driver as written; test_numbered_example runs them."""
    shown = documented_files(EXAMPLES.parent / "docs" / "features.md")
    assert set(shown) == {"examples/subscriber.py", "examples/23_custom_subscriber.py"}
    for path, text in shown.items():
        assert text == (EXAMPLES.parent / path).read_text(), f"docs/features.md differs from {path}"


@pytest.mark.slow
@pytest.mark.parametrize("name", NUMBERED)
def test_numbered_example(name: str) -> None:
    """Runs every ``examples/NN_*.py``; a script without an entry in CHECKS must still exit 0 and clean up."""
    out = output(name)
    f = facts(out)
    check = CHECKS.get(name)
    if check is not None:
        check(f, out)
    if (check is not None and name != "00_cache_smoke.py") or "leftover processes" in f:  # an actor tree ran
        assert f["leftover processes"] == "0"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "key", "expected"), [
    ("18_cache_inspection.py", "tiers after eviction", '["disk"]'),
    ("18_cache_inspection.py", "bytes_ram after eviction", "0"),
    ("19_memory_pressure.py", "rows_ram after pressure (idle model)", "0"),
])
def test_eviction_frees_an_idle_models_ram_rows(name: str, key: str, expected: str) -> None:
    assert facts(output(name))[key] == expected


@pytest.mark.slow
def test_quickstart_actor_system_cold_then_exact_warm() -> None:
    out = run("quickstart.py")
    assert re.search(r"^cold: cold ", out, re.M)
    assert re.search(r"^warm: exact ", out, re.M)
    assert "identical replies: True" in out
    assert re.search(r"^streamed: \S", out, re.M)
    assert '"hits_exact": 1' in out
    assert "no process left behind" in out


def test_native_quickstart() -> None:
    out = run("native_quickstart.py")
    assert "identical replies: True" in out
    ratio = int(re.search(r"cold/warm: (\d+)x", out).group(1))  # type: ignore[union-attr]
    assert ratio > 10


def test_cache_smoke_script() -> None:
    out = run("cache_smoke.py", "--actors")
    assert "OK: one save, one miss, one exact hit" in out
