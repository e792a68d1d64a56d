"""A multi-turn chat, four ways: what each way of resending the conversation costs.

Every turn appends a user message and the model's reply to the conversation.
The same conversation (same system prompt, same user messages, greedy, so the
same replies) is driven through:

* ``no_cache``: the whole conversation resent with ``cache=False``, the
  baseline: every turn prefills everything;
* ``stateless``: the whole conversation resent; the cache finds the previous
  turn's finish row as the longest prefix, so only the new tail is prefilled
  (plus a restore);
* ``sticky``: resent with a ``session_id``: the sequence stays live between
  turns, no restore;
* ``continue``: ``continue_`` with only the new tokens (the caller never
  resends the conversation).

Each mode runs in its own actor tree with a ram-only cache, so no mode can hit
(or collide with) rows another mode saved, and the replies can be compared
token for token across modes.  (One tree would not do: the cache's meta
treats a second model's ram row with the same key as a duplicate and drops it,
though that model cannot read the first one's ram row, so its next turn
misses.)  The three cached
modes must agree (``same_replies_cached_modes``): each turn's state is the one
the previous turn computed.  ``no_cache`` may drift from them by a token late
in a long chat: it recomputes earlier replies as one prompt batch, where the
other modes kept the KV their one-token decodes produced, and llama.cpp's
float sums depend on the batch shape (``same_replies_as_no_cache`` says).
Figures per mode: prompt tokens actually computed (sum over turns of
prompt_tokens - cache_delta.read; also the engine's own prefill counter, which
adds each first token's one-token append), and total wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
import uuid
from typing import Any

from bench_util import QUESTIONS, context_for, log, model_counters, running_system, spread, text_tokens, tier_dirs

from actors.cache.config import CacheConfig

MODES = ("no_cache", "stateless", "sticky", "continue")
MODEL = "chat"


def converse(system: Any, model: str, mode: str, sys_toks: list[int], turns: int, max_tokens: int,
             user_turns: list[list[int]]) -> dict[str, Any]:
    """One conversation of ``turns`` turns; returns per-turn figures and the replies."""
    conv = list(sys_toks)
    sid = f"chat-{uuid.uuid4().hex[:8]}" if mode in ("sticky", "continue") else None
    context: tuple[int, ...] = ()
    computed = walls = 0.0
    per_turn: list[dict[str, Any]] = []
    replies: list[tuple[int, ...]] = []
    c0 = model_counters(system, model)
    try:
        for turn in range(turns):
            prompt = conv + user_turns[turn]
            t = time.perf_counter()
            if mode == "no_cache":
                r = system.complete(model, prompt, max_tokens=max_tokens, cache=False)
            elif mode == "continue" and turn > 0:
                assert tuple(prompt[: len(context)]) == context
                r = system.continue_(model, prompt[len(context):], session_id=sid, max_tokens=max_tokens)
            else:
                r = system.complete(model, prompt, max_tokens=max_tokens, session_id=sid)
            wall = time.perf_counter() - t
            walls += wall
            n_computed = r.stats["prompt_tokens"] - r.cache_delta.read
            computed += n_computed
            per_turn.append({"prompt_tokens": r.stats["prompt_tokens"], "computed": n_computed,
                             "kind": r.cache_hit_kind, "ttft_ms": r.stats["ttft_ms"], "wall_ms": round(wall * 1e3, 2),
                             "generated": len(r.generated)})
            replies.append(tuple(r.generated))
            context = tuple(r.context_tokens)
            conv = prompt + list(r.generated)
    finally:
        if sid is not None:
            system.end_session(model, sid)
    c1 = model_counters(system, model)
    return {"prompt_tokens_computed": int(computed),
            "engine_prefill_tokens": c1["prefill_tokens"] - c0["prefill_tokens"], "wall_s": walls,
            "conversation_tokens": len(conv), "turns": per_turn, "replies": replies}


def run(sys_len: int, turns: int, max_tokens: int, reps: int) -> dict[str, Any]:
    report: dict[str, Any] = {"system_prompt_tokens": sys_len, "turns": turns, "max_tokens": max_tokens, "reps": reps,
                              "modes": {}}
    ctx = context_for(1, sys_len + turns * (40 + max_tokens) + 64)
    report["context"] = ctx
    with contextlib.ExitStack() as stack:
        systems: dict[str, Any] = {}
        for mode in MODES:  # one tree per mode, each stopped in finally by the stack
            tmp, _shm = stack.enter_context(tier_dirs())
            cfg = CacheConfig.create(tmp / "run", ram=1 << 30, default_tier="ram", fsync=False)
            systems[mode] = stack.enter_context(running_system(cfg))
            systems[mode].load_model(MODEL, context=ctx)
        first = systems["no_cache"]
        base = text_tokens(first, MODEL, sys_len)
        user_turns = [first.tokenize(MODEL, f"\nUser: {QUESTIONS[t % len(QUESTIONS)]}\nAssistant:", add_special=False)
                      for t in range(turns)]
        for mode in MODES:  # warm each process (page faults, thread pools) on an unrelated prompt
            systems[mode].complete(MODEL, base[::-1][:64], max_tokens=4, cache=False)
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        same_cached = same_all = True
        for rep in range(reps):
            # each repeat its own system prompt (one token changed right after BOS): no row of an earlier
            # repeat matches; the mode order rotates so drift does not favour one mode
            sys_toks = [base[0], 1000 + rep, *base[2:]]
            order = MODES[rep % len(MODES):] + MODES[: rep % len(MODES)]
            for mode in order:
                runs[mode].append(converse(systems[mode], MODEL, mode, sys_toks, turns, max_tokens, user_turns))
            last = {m: runs[m][-1]["replies"] for m in MODES}
            same_cached = same_cached and last["stateless"] == last["sticky"] == last["continue"]
            same_all = same_all and all(last[m] == last["no_cache"] for m in MODES)
            log(f"chat repeat {rep + 1}/{reps} done")
    for mode in MODES:
        rs = runs[mode]
        report["modes"][mode] = {
            "prompt_tokens_computed": spread([r["prompt_tokens_computed"] for r in rs], nd=0),
            "engine_prefill_tokens": spread([r["engine_prefill_tokens"] for r in rs], nd=0),
            "wall_s": spread([r["wall_s"] for r in rs], nd=3),
            "conversation_tokens": statistics.median(r["conversation_tokens"] for r in rs),
            "hit_kinds_by_turn": [t["kind"] for t in rs[-1]["turns"]],
            "turns_last_repeat": rs[-1]["turns"],
        }
    report["same_replies_cached_modes"] = same_cached
    report["same_replies_as_no_cache"] = same_all
    base_c = report["modes"]["no_cache"]["prompt_tokens_computed"]["median"]
    base_w = report["modes"]["no_cache"]["wall_s"]["median"]
    for mode in MODES:
        m = report["modes"][mode]
        m["computed_vs_no_cache"] = round(m["prompt_tokens_computed"]["median"] / base_c, 4)
        m["wall_vs_no_cache"] = round(m["wall_s"]["median"] / base_w, 4)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="3 turns on a short system prompt: proves the harness")
    ap.add_argument("--system-tokens", type=int, default=None)
    ap.add_argument("--turns", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    a = ap.parse_args()
    report = run(a.system_tokens or (128 if a.smoke else 512), a.turns or (3 if a.smoke else 10),
                 a.max_tokens or (16 if a.smoke else 32), a.reps or (1 if a.smoke else 3))
    report["smoke"] = a.smoke
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
