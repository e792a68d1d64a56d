"""OTP-style child specs, restart intensity and restart planning: pure code.

The supervisor actors (``actors.supervisor.supervisor``) only move
messages; every decision they take (restart this child? which siblings
go with it? give up and escalate?) is made here, so it is unit-tested
without processes.

Semantics follow OTP:

* ``permanent`` children are always restarted, ``transient`` ones only
  after an abnormal exit, ``temporary`` ones never.
* ``one_for_one`` restarts only the failed child; ``one_for_all``
  restarts every child (for children that depend on each other);
  ``rest_for_one`` restarts the failed child and those started after it.
* Restart intensity: more than ``max_restarts`` restarts within
  ``max_seconds`` means the supervisor stops all its children and exits,
  so its own parent sees the failure (escalation).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class Restart(str, enum.Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(str, enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


@dataclass(frozen=True)
class ChildSpec:
    """How to start one child.

    ``actor`` is the actor class (or its dotted name); ``init`` is the
    message sent right after creation, and again after every restart, so a
    restarted child comes back with the same configuration.  ``args`` is
    free-form data for the supervisor subclass that builds ``init``.
    """

    id: str
    actor: Any
    init: Any = None
    restart: Restart = Restart.PERMANENT
    args: Any = None


@dataclass
class RestartIntensity:
    """Sliding-window restart counter (OTP's MaxR within MaxT).

    ``allow(now)`` records one restart at ``now`` and answers whether it
    stays within the limit; a False answer means: give up and escalate.
    ``max_restarts=0`` means any failure escalates.
    """

    max_restarts: int = 3
    max_seconds: float = 5.0
    _times: deque[float] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.max_restarts, bool) or not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise ValueError(f"max_restarts must be an int >= 0, got {self.max_restarts!r}")
        if not isinstance(self.max_seconds, (int, float)) or self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds!r}")

    def allow(self, now: float) -> bool:
        while self._times and now - self._times[0] > self.max_seconds:
            self._times.popleft()
        self._times.append(now)
        return len(self._times) <= self.max_restarts

    @property
    def recent(self) -> int:
        return len(self._times)


@dataclass(frozen=True)
class RestartPlan:
    """What a supervisor does after one child exits.

    ``restart``: child ids to (re)start, in spec order; ``stop``: running
    siblings to stop first (one_for_all / rest_for_one); ``forget``: the
    exited child is dropped from the supervisor (temporary, or transient
    after a normal exit); ``escalate``: intensity exceeded, stop everything
    and exit.
    """

    restart: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    forget: bool = False
    escalate: bool = False


def plan_restart(
    strategy: Strategy,
    order: Sequence[str],
    restarts: dict[str, Restart],
    failed: str,
    normal_exit: bool,
    intensity: RestartIntensity,
    now: float,
) -> RestartPlan:
    """Decide the reaction to child ``failed`` exiting.

    ``order`` lists the live children's ids in start order (``failed``
    included); ``restarts`` maps ids to their restart type.
    """
    kind = restarts.get(failed, Restart.PERMANENT)
    if kind is Restart.TEMPORARY or (kind is Restart.TRANSIENT and normal_exit):
        return RestartPlan(forget=True)
    if not intensity.allow(now):
        return RestartPlan(stop=tuple(c for c in order if c != failed), escalate=True)
    if strategy is Strategy.ONE_FOR_ONE:
        return RestartPlan(restart=(failed,))
    if strategy is Strategy.ONE_FOR_ALL:
        group = list(order)
    else:
        idx = list(order).index(failed) if failed in order else 0
        group = list(order)[idx:]
    # Siblings that would not be restarted on their own failure are still
    # stopped with the group (OTP does the same) but only restarted if they
    # are not temporary.
    restart = tuple(c for c in group if c == failed or restarts.get(c, Restart.PERMANENT) is not Restart.TEMPORARY)
    stop = tuple(c for c in group if c != failed)
    return RestartPlan(restart=restart, stop=stop)
