"""The docs say what the code does: documented keys are the keys the code produces."""

from __future__ import annotations

import re
from pathlib import Path

from actors.model import messages as mm
from tests.actors.engine_util import Outbox, make_engine, opts, rid, run

DOCS = Path(__file__).resolve().parent.parent / "docs"


def table_keys(doc: str, after: str) -> list[str]:
    """The first-column `keys` of the first markdown table after the line containing ``after``."""
    lines = (DOCS / doc).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    keys: list[str] = []
    for line in lines[start + 1:]:
        if keys and not line.startswith("|"):
            break
        m = re.match(r"^\| `([a-z_\[\]]+)` \|", line)
        if m:
            keys.append(m.group(1))
    return keys


def test_completion_stats_keys_are_the_documented_ones() -> None:
    out = Outbox()
    eng, _ = make_engine(out)
    r = rid()
    eng.handle(mm.Complete("m", r, "c", prompt="hello there", options=opts(max_tokens=5)))
    run(eng)
    stats = out.final(r).stats
    documented = table_keys("features.md", "`Completion.stats`")
    assert documented[-1] == "stop_sequence"  # the one key present only when a stop sequence matched
    assert sorted(stats) == sorted(documented[:-1])
