"""Learning of a child's death without thespian's exit notice: watch its pid.

Thespian 4.0.1 (``multiprocCommon``) loses exit notices when several
children die close together: handling one child's ``ChildActorExited``
runs ``_childExited``, which filters *every* dead child out of
``_child_procs``; the SIGCHLD handler (``childDied``) that would have sent
the notices for the others then finds nothing dead in that list, so no
``ChildActorExited`` ever arrives for them.  Every supervisor of the tree
therefore also watches its children's pids, polled on a short wakeup, and
treats a vanished pid exactly like the notice.

Thespian's own list of children keeps a child whose notice was lost, and
its shutdown then waits about 30 s on that dead address; so the watcher
also sends its actor the notice thespian never sent (an actor's
``ChildActorExited`` to itself goes through thespian's own bookkeeping),
which the handler then ignores as already handled.

Exactly once: both paths end in the supervisor's one exit handler, which
acts only on an address that is still the current one of a child (the
first path to see a death removes it), so a death seen by both is
restarted once.

Start times are read from ``/proc/<pid>/stat`` (clock ticks since boot),
and children from ``/proc/<pid>/task/*/children``: a supervisor looks
several times a second, and psutil's ``children()`` reads every process of
the host each time.  A child's pid is found without asking the child: thespian forks it
synchronously inside ``createActor``, so it is the one new direct child
process of the supervisor (:func:`new_child`).  Pids are kept with their
start time, so a reused pid never passes for the child.

The decisions are pure functions (:func:`new_child`, :func:`gone`);
:class:`PidWatch` only reads ``/proc`` through psutil.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

WATCH_INTERVAL_S = 0.5  # how often a supervisor polls its children's pids (a missed notice costs at most this)
WATCH_PAYLOAD = "llama-actors-pid-watch"  # the wakeup payload of the watch timer


@dataclass(frozen=True)
class ProcId:
    """A process as its start time pins it: a pid alone may be reused by another process."""

    pid: int
    started: float


def new_child(before: Iterable[ProcId], after: Iterable[ProcId]) -> ProcId | None:
    """The one process in ``after`` that was not in ``before``, or None when there is not exactly one."""
    fresh = set(after) - set(before)
    return next(iter(fresh)) if len(fresh) == 1 else None


def gone(watched: Mapping[Hashable, ProcId], probe: Mapping[int, float | None]) -> list[Hashable]:
    """Keys of ``watched`` whose process is gone.

    ``probe`` maps a pid to the start time of the live process that has it
    now (None: no such process, or a zombie: it has exited).  A pid that
    is missing from ``probe`` counts as alive (not looked at yet).
    """
    out = []
    for key, proc in watched.items():
        if proc.pid not in probe:
            continue
        now = probe[proc.pid]
        if now is None or now != proc.started:
            out.append(key)
    return out


def _stat(pid: int) -> tuple[str, float] | None:
    """(state letter, start time in clock ticks since boot) of ``pid`` from ``/proc/<pid>/stat``; None: gone.

    One small read per process; psutil's ``Process(pid)`` does several."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return fields[0].decode(), float(fields[19])


_HAS_PROC = os.path.exists("/proc/self/stat")


def probe(pids: Iterable[int]) -> dict[int, float | None]:
    """The start time of each live process among ``pids`` (None when it has exited)."""
    out: dict[int, float | None] = {}
    for pid in pids:
        if _HAS_PROC:
            try:
                st = _stat(pid)
            except (OSError, ValueError, IndexError):
                continue  # cannot tell: alive until proven otherwise
            out[pid] = None if st is None or st[0] == "Z" else st[1]
            continue
        try:
            p = psutil.Process(pid)
            out[pid] = None if p.status() == psutil.STATUS_ZOMBIE else p.create_time()
        except psutil.NoSuchProcess:
            out[pid] = None
        except psutil.Error:
            continue
    return out


def _child_pids(pid: int) -> list[int] | None:
    """Direct children of ``pid`` from ``/proc/<pid>/task/*/children`` (None: not available here)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    except OSError:
        return None
    out: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended meanwhile
            return None  # a kernel without CONFIG_PROC_CHILDREN
        except OSError:
            continue
    return out


def _started(pids: Iterable[int]) -> set[ProcId]:
    out = set()
    for pid in pids:
        if _HAS_PROC:
            with contextlib.suppress(OSError, ValueError, IndexError):
                st = _stat(pid)
                if st is not None:
                    out.add(ProcId(pid, st[1]))
            continue
        with contextlib.suppress(psutil.Error):
            out.add(ProcId(pid, psutil.Process(pid).create_time()))
    return out


def children_of(pid: int, recursive: bool) -> set[ProcId]:
    """The children (or all descendants) of ``pid``, zombies included.

    Read from ``/proc/<pid>/task/*/children``: a cost in the size of the tree. psutil's own
    ``children()`` reads every process of the host (about 25 ms for 130 processes on a loaded
    machine), too much for a supervisor that looks several times a second.
    """
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = _child_pids(todo.pop())
        if kids is None:  # no children files: psutil's scan of the whole host
            try:
                procs = psutil.Process(pid).children(recursive=recursive)
            except psutil.Error:
                return set()
            return _started(p.pid for p in procs)
        found.extend(kids)
        if recursive:
            todo.extend(kids)
    return _started(found)


def direct_children() -> set[ProcId]:
    """This process's direct children (zombies included: a dead child not yet reaped is still 'before')."""
    return children_of(os.getpid(), recursive=False)


def kill_all(procs: Iterable[ProcId]) -> list[int]:
    """SIGKILL each of ``procs`` still running as the same process, and everything they started.

    Orphans include supervisors (a dead root leaves the model supervisor, which may restart a model
    the moment that model is killed): each is first stopped (SIGSTOP), so none can start another
    process while the others die, and the children of every stopped one join the set, until no
    new process appears; then all of them are killed.
    """
    alive = probe(p.pid for p in procs)
    todo = [p.pid for p in procs if alive.get(p.pid) == p.started]
    stopped: list[int] = []
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            continue
        stopped.append(pid)
        todo.extend(p.pid for p in children_of(pid, recursive=True))
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return stopped


class PidWatch:
    """The watched children of one actor: key -> (address, process).

    ``spawn(key, create)`` creates a child through ``create()`` and records
    its process; ``poll()`` returns the addresses of watched children whose
    process is gone and stops watching them.
    """

    def __init__(self) -> None:
        self._procs: dict[Hashable, ProcId] = {}
        self._addrs: dict[Hashable, Any] = {}

    def spawn(self, key: Hashable, create: Any) -> Any:
        before = direct_children()
        addr = create()
        proc = new_child(before, direct_children())
        self._addrs[key] = addr
        if proc is not None:
            self._procs[key] = proc
        else:
            self._procs.pop(key, None)
        return addr

    def watch(self, key: Hashable, addr: Any, pid: int) -> None:
        """Watch a process whose pid is known some other way (the child reported it)."""
        info = probe([pid]).get(pid)
        self._addrs[key] = addr
        if info is not None:
            self._procs[key] = ProcId(pid, info)

    def forget(self, key: Hashable) -> None:
        self._procs.pop(key, None)
        self._addrs.pop(key, None)

    def pid(self, key: Hashable) -> int | None:
        proc = self._procs.get(key)
        return proc.pid if proc is not None else None

    def pids(self) -> dict[Hashable, int]:
        return {k: p.pid for k, p in self._procs.items()}

    def poll(self) -> list[Any]:
        dead = gone(self._procs, probe(p.pid for p in self._procs.values()))
        addrs = [self._addrs[k] for k in dead]
        for k in dead:
            self.forget(k)
        return addrs

    def __len__(self) -> int:
        return len(self._procs)


__all__ = ["WATCH_INTERVAL_S", "WATCH_PAYLOAD", "PidWatch", "ProcId", "children_of", "direct_children", "gone",
           "kill_all", "new_child", "probe"]
