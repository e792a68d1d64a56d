"""Helpers shared by the cache tests (imported as a plain module)."""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, settings

from actors.cache.kvc import RowMeta

PROPS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FEW = settings(PROPS, max_examples=30)

FP = b"\xaa" * 32
CTX = b"\xbb" * 32
QUANT = 1


def meta_for(tokens: list[int], fp: bytes = FP, ctx: bytes = CTX, quant: int = QUANT) -> RowMeta:
    return RowMeta(fingerprint=fp, quant=quant, ctx_hash=ctx, tokens=tokens, context_size=4096, model="test")


def rand_tokens(n: int, seed: int = 0, vocab: int = 32000) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(vocab) for _ in range(n)]


def listing(directory: str | os.PathLike[str]) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


def reading_from_file(path: str) -> tuple[int, int] | None:
    """Pressure source for tests: "used total" in a file the test rewrites.
    Module-level so it pickles into the pressure actor's process."""
    try:
        with open(path) as f:
            used, total = f.read().split()
    except (OSError, ValueError):
        return None
    return int(used), int(total)
