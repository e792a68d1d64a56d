"""Properties of the write-behind decisions (actors/cache/write_policy.py)."""

from __future__ import annotations

from cachetest_util import PROPS
from hypothesis import given
from hypothesis import strategies as st

from actors.cache.write_policy import (
    CopyState,
    EvictAction,
    Job,
    QueueLimits,
    Verdict,
    admit,
    next_job,
    on_evict,
    spill_order,
)

KEYS = st.binary(min_size=1, max_size=1).map(lambda b: b * 32)  # few distinct keys: duplicates happen


@st.composite
def queues(draw: st.DrawFn) -> list[Job]:
    """A queue as the writer can hold it: distinct keys, oldest first."""
    jobs = draw(st.lists(st.tuples(KEYS, st.integers(1, 100), st.booleans()), max_size=12, unique_by=lambda t: t[0]))
    return [Job(k, size, demotion) for k, size, demotion in jobs]


limits_st = st.builds(QueueLimits, st.integers(1, 10), st.integers(0, 600))
jobs_st = st.builds(Job, KEYS, st.integers(1, 100), st.booleans())


def apply(queue: list[Job], job: Job, verdict: Verdict, displaced: tuple[bytes, ...]) -> list[Job]:
    """The queue after an admission, as WriteBehind.offer applies it."""
    if verdict is Verdict.QUEUED:
        return [j for j in queue if j.key not in displaced] + [job]
    if verdict is Verdict.PROMOTED:
        return [job if j.key == job.key else j for j in queue]
    return list(queue)


@PROPS
@given(st.sampled_from(CopyState), st.booleans())
def test_an_evicted_row_is_never_written_twice_and_never_lost_when_it_can_move(state: CopyState, can: bool) -> None:
    action = on_evict(state, can)
    has_copy = state in (CopyState.WRITTEN, CopyState.DURABLE)
    assert (action is EvictAction.RELEASE) == has_copy  # its copy exists: free the bytes, write nothing
    if not has_copy:
        assert action is (EvictAction.DEMOTE if can else EvictAction.DROP)


@PROPS
@given(queues(), jobs_st, limits_st)
def test_admission_keeps_keys_unique_and_the_queue_bounded(queue: list[Job], job: Job, limits: QueueLimits) -> None:
    adm = admit(queue, job, limits)
    after = apply(queue, job, adm.verdict, adm.displaced)
    keys = [j.key for j in after]
    assert len(keys) == len(set(keys))  # a key is queued once
    queued_before = {j.key: j for j in queue}
    if job.key in queued_before:
        old = queued_before[job.key]
        expected = Verdict.PROMOTED if job.demotion and not old.demotion else Verdict.DUPLICATE
        assert adm.verdict is expected and not adm.displaced
        return
    if adm.verdict is Verdict.QUEUED:
        assert job in after
        # Bounded: within both limits, unless it is the only job (a row bigger than max_bytes).
        assert len(after) == 1 or (len(after) <= limits.max_jobs and sum(j.size for j in after) <= limits.max_bytes)
    else:
        assert adm.verdict is Verdict.FULL and after == queue and queue  # an empty queue always takes a job


@PROPS
@given(queues(), jobs_st, limits_st)
def test_only_a_demotion_displaces_and_only_write_behinds_newest_first(
    queue: list[Job], job: Job, limits: QueueLimits
) -> None:
    adm = admit(queue, job, limits)
    if not job.demotion:
        assert not adm.displaced
    by_key = {j.key: j for j in queue}
    assert all(not by_key[k].demotion for k in adm.displaced)  # a demotion holds the only copy: never pushed out
    behind = [j.key for j in queue if not j.demotion]
    assert list(adm.displaced) == list(reversed(behind))[: len(adm.displaced)]
    # A demotion is refused only when even an empty-of-write-behinds queue has no room.
    if job.demotion and adm.verdict is Verdict.FULL:
        demotions = [j for j in queue if j.demotion]
        assert demotions and (
            len(demotions) >= limits.max_jobs or sum(j.size for j in demotions) + job.size > limits.max_bytes
        )


@PROPS
@given(queues())
def test_next_job_is_the_oldest_demotion_else_the_oldest(queue: list[Job]) -> None:
    i = next_job(queue)
    if not queue:
        assert i is None
        return
    assert i is not None
    demotions = [n for n, j in enumerate(queue) if j.demotion]
    assert i == (demotions[0] if demotions else 0)


@PROPS
@given(st.lists(KEYS, unique=True, max_size=12), st.data())
def test_spill_writes_each_ram_only_row_once_most_recent_first(lru: list[bytes], data: st.DataObject) -> None:
    states = {k: data.draw(st.sampled_from(CopyState)) for k in lru}
    order = spill_order(lru, states)
    assert set(order) == {k for k in lru if states[k] is CopyState.NONE}
    assert len(order) == len(set(order))
    positions = [lru.index(k) for k in order]
    assert positions == sorted(positions, reverse=True)


@PROPS
@given(st.lists(st.tuples(KEYS, st.integers(1, 100), st.booleans()), max_size=40), limits_st)
def test_a_writer_draining_the_queue_writes_every_admitted_key_once(
    offers: list[tuple[bytes, int, bool]], limits: QueueLimits
) -> None:
    """Drive the policy like the writer does (offer, sometimes run one job) and check what gets written."""
    queue: list[Job] = []
    written: list[bytes] = []
    skipped: set[bytes] = set()
    for n, (key, size, demotion) in enumerate(offers):
        if key in written:
            continue  # the owner never offers a row whose copy is written
        job = Job(key, size, demotion)
        adm = admit(queue, job, limits)
        skipped |= set(adm.displaced)
        if adm.verdict is Verdict.FULL:
            skipped.add(key)
        queue = apply(queue, job, adm.verdict, adm.displaced)
        if n % 3 == 2:
            i = next_job(queue)
            if i is not None:
                written.append(queue.pop(i).key)
    while queue:
        i = next_job(queue)
        assert i is not None
        written.append(queue.pop(i).key)
    assert len(written) == len(set(written))
    offered = {k for k, _, _ in offers}
    assert set(written) | skipped >= offered  # every offer is written or counted as skipped
