"""The node's core budget: how many llama.cpp threads each model may run (pure planning).

Why a budget: every llama.cpp context defaults to one thread per core, and
its OpenMP workers spin at every barrier of the graph.  Two models decoding
at once on a two-core node then run four spinning threads on two cores, and
each barrier waits for a thread the kernel has just descheduled: measured on
the bundled model, 31.6 + 31.5 tok/s together against 118.8 alone, where one
thread each gives 86.3 + 86.2.  So the node hands out its cores as shares
that never add up to more than it has.

The plan is max-min fair over the models that run llama.cpp threads (a stub
model needs none): every model gets at least one thread, no model more than
it asked for (``n_threads`` in its context options is a ceiling, absent means
"as many as the share allows"), and the cores left over go one by one to the
models that can still use them, earliest loaded first, so a rebalance moves
as few threads as it can.  Only when there are more models than cores does
the sum pass the budget (a model cannot run on zero threads); the plan says
so in ``oversubscribed``.

Prefill threads (``n_threads_batch``) get the same share, capped by the
model's own ``n_threads_batch`` when it asked for fewer: prefill and decode
never run at the same time in one context, so one share covers both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from actors.model.options import default_threads


@dataclass(frozen=True)
class ThreadAsk:
    """One model's request: ``None`` for either count means "whatever the share allows"."""

    model_id: str
    n_threads: int | None = None
    n_threads_batch: int | None = None


@dataclass(frozen=True)
class ThreadShare:
    """What one model runs with, and what it asked for (reported in status and ``model_info``)."""

    n_threads: int
    n_threads_batch: int
    asked: int | None
    node_cores: int

    def as_dict(self) -> dict[str, Any]:
        return {"n_threads": self.n_threads, "n_threads_batch": self.n_threads_batch, "asked": self.asked,
                "node_cores": self.node_cores}


@dataclass(frozen=True)
class CorePlan:
    cores: int
    shares: dict[str, ThreadShare]

    @property
    def used(self) -> int:
        return sum(s.n_threads for s in self.shares.values())

    @property
    def oversubscribed(self) -> bool:
        return self.used > self.cores


def node_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    return default_threads()


def budget(configured: int | None) -> int:
    """The node's budget: the configured ``cores``, never more than the cores it may run on."""
    have = node_cores()
    if configured is None:
        return have
    if isinstance(configured, bool) or not isinstance(configured, int) or configured < 1:
        raise ValueError(f"cores: expected a positive integer, got {configured!r}")
    return min(configured, have)


def plan(cores: int, asks: Sequence[ThreadAsk]) -> CorePlan:
    """Max-min fair thread shares of ``cores`` for ``asks`` (in load order; that order breaks ties)."""
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    ids = [a.model_id for a in asks]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate model ids in {ids}")
    ceiling = {a.model_id: max(1, min(a.n_threads or cores, cores)) for a in asks}
    given = dict.fromkeys(ids, 1)
    left = cores - len(ids)
    while left > 0:
        hungry = [i for i in ids if given[i] < ceiling[i]]
        if not hungry:
            break
        low = min(given[i] for i in hungry)  # raise the smallest shares first: max-min fairness
        for i in hungry:
            if left == 0:
                break
            if given[i] == low:
                given[i] += 1
                left -= 1
    shares = {}
    for a in asks:
        n = given[a.model_id]
        batch = min(n, a.n_threads_batch) if a.n_threads_batch else n
        shares[a.model_id] = ThreadShare(n, max(1, batch), a.n_threads, cores)
    return CorePlan(cores, shares)


def ask_of(model_id: str, context: Mapping[str, Any]) -> ThreadAsk:
    """A model's request, read from its context options (only ints count; the options parser checks the rest)."""

    def opt(key: str) -> int | None:
        v = context.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else None

    return ThreadAsk(model_id, opt("n_threads"), opt("n_threads_batch"))


def with_share(context: Mapping[str, Any], share: ThreadShare) -> dict[str, Any]:
    """Context options with the planned thread counts in place of the asked ones."""
    return {**context, "n_threads": share.n_threads, "n_threads_batch": share.n_threads_batch}


__all__ = ["CorePlan", "ThreadAsk", "ThreadShare", "ask_of", "budget", "node_cores", "plan", "with_share"]
