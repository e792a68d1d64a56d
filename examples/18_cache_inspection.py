"""18. Inspecting the cache: counters, the row index, eviction and garbage collection.

``system.cache_counters()`` reads the cache's counter files directly (no message, cheap enough for a
dashboard to poll): hits by kind, misses, saves by reason, bytes and rows per tier, latency totals.
The row index lives in the cache's meta actor; asking it for a ``Dump`` lists every row with its
tier, size, token count, hits, pins and save reason. The same actor evicts on request (least recently
used first, from the tiers you name) and runs a full garbage-collection pass.

This example turns write-behind off to show a ram eviction on its own: by default every ram row is
also copied to the next tier off the request path, so an evicted prompt stays warm there
(docs/caching.md, "Warmth bigger than RAM, and across restarts").

    .venv/bin/python examples/18_cache_inspection.py
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from _common import MODEL, fact, parser, running_system

from actors.api import System
from actors.cache import messages as cm
from actors.cache.kvc import SaveReason
from actors.supervisor import runtime

PROMPT = (
    "Meeting notes: the design team will deliver the new logo by Friday, marketing will prepare the launch "
    "email next week, and the web team will update the landing page once the logo is approved. The budget "
    "for the launch stays at five thousand dollars. The next meeting is on Monday at ten in the small room.\n"
    "Summary:"
)
OTHER = (
    "Shopping list for the weekend trip to the lake: two tents, four sleeping bags, a gas stove with two "
    "spare cartridges, pasta, rice, tomato sauce, coffee, oat milk, apples, bananas, bread, cheese, a first "
    "aid kit, sun cream, insect spray, a rope, matches and a big bag of marshmallows.\nMost important item:"
)


def meta(system: System, msg: Any) -> Any:
    """One request/reply with the cache's meta actor (the address comes with the tree's info)."""
    reply = runtime.ask(system.asys, system.tree.meta, msg, 30.0)
    if isinstance(reply, cm.ErrorReply):
        raise RuntimeError(str(reply))
    return reply


def rows(system: System) -> list[dict[str, Any]]:
    meta(system, cm.WaitIdle(uuid.uuid4().hex))  # file-tier saves are written asynchronously
    return sorted(meta(system, cm.Dump(uuid.uuid4().hex)).rows, key=lambda r: (str(r["tier"]), int(r["n_tokens"])))


def show(system: System, label: str) -> list[dict[str, Any]]:
    listing = rows(system)
    for r in listing:
        reason = SaveReason(r["reason"]).name.lower()
        print(f"  {label}: tier={r['tier']:8} tokens={r['n_tokens']:4} size={r['size']:>9} hits={r['hits']} "
              f"pins={len(r['pins'])} status={r['status']} reason={reason} key={str(r['key'])[:12]}")
    return listing


def main() -> None:
    args = parser(__doc__).parse_args()
    with running_system(args.port, write_behind=False) as system:
        system.load_model(MODEL)
        system.complete(MODEL, PROMPT, max_tokens=8)  # saved to the default tier (ram)
        system.complete(MODEL, PROMPT, max_tokens=8)  # an exact hit
        system.complete(MODEL, OTHER, max_tokens=8, tier="disk")  # this request saves to the disk tier
        counters = system.cache_counters()
        shown = {k: v for k, v in counters.items() if v and not k.endswith(("_ns_total", "_capacity"))}
        fact("counters", shown)
        before = show(system, "row")
        fact("rows", len(before))
        fact("rows by tier", {t: sum(1 for r in before if r["tier"] == t) for t in sorted({r["tier"] for r in before})})
        evicted = meta(system, cm.EvictBytes(256 << 20, ("ram", "ram_file"), uuid.uuid4().hex))
        fact("evicted rows", len(evicted.keys))
        fact("evicted bytes", evicted.freed)
        gc = meta(system, cm.Gc(uuid.uuid4().hex))
        fact("gc", gc.stats)
        # Ram rows live in the model process that saved them; the meta marks them "evicting" and that
        # process drops them and reports back, so the listing catches up a moment later.
        deadline = time.monotonic() + 3.0
        while any(r["tier"] == "ram" for r in rows(system)) and time.monotonic() < deadline:
            time.sleep(0.05)
        after = show(system, "row after eviction")
        fact("rows after eviction", len(after))
        fact("tiers after eviction", sorted({r["tier"] for r in after}))
        fact("evictions counter", system.cache_counters()["evictions"])
        fact("bytes_ram after eviction", system.cache_counters()["bytes_ram"])
        again = system.complete(MODEL, PROMPT, max_tokens=8)
        fact("repeat after eviction cache_hit_kind", again.cache_hit_kind)
        fact("repeat after eviction cache_delta.read", again.cache_delta.read)


if __name__ == "__main__":
    main()
