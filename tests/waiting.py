"""Wait on a condition, never on a fixed sleep: the one polling helper of the test suite.

A fixed ``time.sleep`` before an assert is too short on a loaded machine (the
test flakes) and too long on an idle one (the suite crawls). ``wait_until``
polls the condition itself and returns as soon as it holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.02) -> T:
    """Call ``condition`` until it returns something truthy, or until ``timeout`` seconds have passed.

    Returns the last value ``condition`` gave: truthy when it held, falsy on a
    timeout, so ``assert wait_until(...)`` fails with the condition's own words.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
