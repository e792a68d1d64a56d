"""Does a warm reply equal the cold one? The share of identical replies per cache hit kind.

A fixed chat (a system prompt and ``--turns`` user questions, greedy) is driven
through the actor runtime four ways, each on its own system prompt so no way
can hit rows another one saved:

* ``stateless``: the whole conversation resent each turn: from the second
  turn on, the previous turn's row is a ``partial`` hit and only the new tail
  is prefilled;
* ``exact``: afterwards, each of those prompts resent once more: an ``exact``
  hit (the saved state and logits of exactly that prompt, no prefill);
* ``sticky``: resent with a ``session_id``: the sequence stays live (``sticky``);
* ``continue``: ``continue_`` with only the new tokens (``continuation``).

Every prompt is also replayed cold (``cache=False``: one prefill of the whole
prompt), and each warm reply is compared token for token with the cold reply to
the same prompt. Exact hits reproduce by construction (the restored state is the
state the cold prefill computed). The other kinds append to a state that was
built by earlier, differently shaped batches (the previous turns' prefill and
one-token decodes), and llama.cpp's float sums depend on the batch shape, so a
reply can drift from the cold replay at some token; ``first_diff`` says where.
Two controls: a cache-off cold run equals another cache-off cold run of the
same prompt (``cold_replay_control``); and an exact hit against the request
whose state it restored (``exact_same_as_saving_request``). A first turn with
the cache on is ``cold`` too, but not the same computation as a cache-off
replay: it prefills its prompt in two pieces, up to the cold-save boundary
(the row saved there) and then the rest.

JSON on stdout and in bench/out/determinism.json, a bar chart in
bench/out/determinism.png when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

from bench_util import QUESTIONS, context_for, log, running_system, text_tokens, tier_dirs

from actors.cache.config import CacheConfig

MODEL = "chat"
WAYS = ("stateless", "exact", "sticky", "continue")
KINDS = ("cold", "exact", "partial", "sticky", "continuation")
OUT = Path(__file__).resolve().parent / "out"


def first_diff(a: tuple[int, ...], b: tuple[int, ...]) -> int | None:
    """Index of the first token where two replies differ (None when they are equal)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


class ColdReplays:
    """Cold replies, one per distinct prompt (a cold replay of the same prompt is the same computation)."""

    def __init__(self, system: Any, max_tokens: int) -> None:
        self.system, self.max_tokens = system, max_tokens
        self.replies: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.control: list[bool] = []  # a second cold run of a first-turn prompt equals the first

    def reply(self, prompt: list[int]) -> tuple[int, ...]:
        key = tuple(prompt)
        if key not in self.replies:
            r = self.system.complete(MODEL, prompt, max_tokens=self.max_tokens, cache=False)
            assert r.cache_hit_kind == "cold", r.cache_hit_kind
            self.replies[key] = tuple(r.generated)
        return self.replies[key]


def converse(system: Any, way: str, sys_toks: list[int], user_turns: list[list[int]], max_tokens: int
             ) -> list[dict[str, Any]]:
    """One chat driven one way; per turn the prompt as the model saw it, the hit kind and the reply."""
    conv = list(sys_toks)
    sid = f"det-{uuid.uuid4().hex[:8]}" if way in ("sticky", "continue") else None
    context: tuple[int, ...] = ()
    turns: list[dict[str, Any]] = []
    try:
        for turn, user in enumerate(user_turns):
            prompt = conv + user
            if way == "continue" and turn > 0:
                assert tuple(prompt[: len(context)]) == context
                r = system.continue_(MODEL, prompt[len(context):], session_id=sid, max_tokens=max_tokens)
            else:
                r = system.complete(MODEL, prompt, max_tokens=max_tokens, session_id=sid)
            turns.append({"turn": turn, "prompt": prompt, "kind": r.cache_hit_kind, "reply": tuple(r.generated)})
            context = tuple(r.context_tokens)
            conv = prompt + list(r.generated)
    finally:
        if sid is not None:
            system.end_session(MODEL, sid)
    return turns


def run(sys_len: int, n_turns: int, max_tokens: int) -> dict[str, Any]:
    ctx = context_for(2, sys_len + n_turns * (40 + max_tokens) + 64)
    report: dict[str, Any] = {"system_prompt_tokens": sys_len, "turns": n_turns, "max_tokens": max_tokens,
                              "context": ctx, "ways": {}, "kinds": {}}
    with contextlib.ExitStack() as stack:
        tmp, _shm = stack.enter_context(tier_dirs())
        cfg = CacheConfig.create(tmp / "run", ram=1 << 30, default_tier="ram", fsync=False)
        system = stack.enter_context(running_system(cfg))
        system.load_model(MODEL, context=ctx)
        base = text_tokens(system, MODEL, sys_len)
        user_turns = [system.tokenize(MODEL, f"\nUser: {QUESTIONS[t % len(QUESTIONS)]}\nAssistant:",
                                      add_special=False) for t in range(n_turns)]
        cold = ColdReplays(system, max_tokens)
        rows: list[dict[str, Any]] = []
        for i, way in enumerate(WAYS):
            sys_toks = [base[0], 1000 + i, *base[2:]]  # its own system prompt: no row of another way matches
            if way == "exact":
                stateless = [t for t in rows if t["way"] == "stateless"]
                turns = []
                for t in stateless:  # each stateless prompt again: its own saved row is an exact hit
                    r = system.complete(MODEL, t["prompt"], max_tokens=max_tokens)
                    reply = tuple(r.generated)
                    turns.append({"turn": t["turn"], "prompt": t["prompt"], "kind": r.cache_hit_kind, "reply": reply,
                                  "same_as_saving_request": reply == t["reply"]})
            else:
                turns = converse(system, way, sys_toks, user_turns, max_tokens)
            for t in turns:
                ref = cold.reply(t["prompt"])
                rows.append({"way": way, **t, "identical": t["reply"] == ref, "first_diff": first_diff(t["reply"], ref),
                             "prompt_tokens": len(t["prompt"])})
            log(f"determinism: {way} done ({len(turns)} turns)")
        # the control: cold against cold, on each way's first prompt (a fresh prefill both times)
        for t in [r for r in rows if r["turn"] == 0 and r["way"] != "exact"]:
            again = system.complete(MODEL, t["prompt"], max_tokens=max_tokens, cache=False)
            cold.control.append(tuple(again.generated) == cold.reply(t["prompt"]))
    for way in WAYS:
        mine = [r for r in rows if r["way"] == way]
        report["ways"][way] = [{k: r[k] for k in ("turn", "kind", "prompt_tokens", "identical", "first_diff",
                                                  "same_as_saving_request") if k in r} for r in mine]
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        if mine:
            same = sum(r["identical"] for r in mine)
            report["kinds"][kind] = {"replies": len(mine), "identical": same, "share": round(same / len(mine), 3),
                                     "first_diff": [r["first_diff"] for r in mine if not r["identical"]]}
    report["cold_replay_control"] = {"runs": len(cold.control), "identical": sum(cold.control)}
    exact = [r for r in rows if r["way"] == "exact"]
    report["exact_same_as_saving_request"] = {"replies": len(exact),
                                              "identical": sum(r["same_as_saving_request"] for r in exact)}
    return report


def plot(report: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    kinds = [k for k in KINDS if k in report["kinds"]]
    shares = [report["kinds"][k]["share"] for k in kinds]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bars = ax.bar(kinds, shares, color=["#888888", "#2a7", "#d84", "#47c", "#a5c"][: len(kinds)])
    for b, k in zip(bars, kinds, strict=True):
        n = report["kinds"][k]
        ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.02, f"{n['identical']}/{n['replies']}",
                ha="center", fontsize=9)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("replies identical to a cold replay")
    ax.set_title(f"{report['turns']}-turn chat, greedy, {report['max_tokens']} tokens per reply", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="3 turns on a short system prompt: proves the harness")
    ap.add_argument("--system-tokens", type=int, default=None)
    ap.add_argument("--turns", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=None)
    a = ap.parse_args()
    report = run(a.system_tokens or (64 if a.smoke else 256), a.turns or (3 if a.smoke else 10),
                 a.max_tokens or (6 if a.smoke else 32))
    report["smoke"] = a.smoke
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "determinism.json").write_text(json.dumps(report, indent=2))
    png = plot(report, OUT / "determinism.png")
    if png is not None:
        report["plot"] = str(png)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
