"""Thin thespian actors around the cache logic.

* ``CacheMetaActor``: sole writer of the index (wraps
  :class:`~actors.cache.meta.MetaCore`), creates and supervises the writer
  pool, runs periodic sweeps.  A dead writer is replaced (the pool stays
  at its size) whether thespian's exit notice comes or not: the meta also
  watches the writers' pids (``actors.supervisor.watch``), since thespian
  drops the notices of children that die together.
* ``CacheWriterActor``: one file-I/O worker (publish protocol, demotion).
  Separate processes, so an fsync on a slow disk never stalls the meta
  or a model.
* ``PressureActor``: polls a memory source and asks the meta to evict.
* ``CacheClientHost``: the smallest actor embedding a ``CacheClient``, the
  pattern a model actor follows (also what the tests drive).

Every reply to an outside request echoes its ``req_id``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from thespian.actors import (
    Actor,
    ActorExitRequest,
    ChildActorExited,
    PoisonMessage,
    WakeupMessage,
)

from actors.cache import messages as m
from actors.cache.client import CacheClient
from actors.cache.config import CacheConfig
from actors.cache.kvc import RowMeta
from actors.cache.meta import MetaCore
from actors.cache.pressure import PressureMonitor
from actors.cache.writer import execute
from actors.supervisor.watch import WATCH_INTERVAL_S, WATCH_PAYLOAD, PidWatch


class _ActorOutbox:
    def __init__(self, actor: Actor) -> None:
        self._actor = actor

    def send(self, dest: Any, msg: Any) -> None:
        self._actor.send(dest, msg)


class CacheMetaActor(Actor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.core: MetaCore | None = None
        self.config: CacheConfig | None = None
        self.stopping = False
        self.watch = PidWatch()
        self.writers: dict[int, Any] = {}  # slot key -> current writer address
        self._keys = 0

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, m.MetaStart):
            self._start(msg, sender)
        elif isinstance(msg, WakeupMessage) and msg.payload == WATCH_PAYLOAD:
            for dead in self.watch.poll():
                self._writer_died(dead)
                self.send(self.myAddress, ChildActorExited(dead))  # thespian's own child list (see watch.py)
            if not self.stopping:
                self.wakeupAfter(timedelta(seconds=WATCH_INTERVAL_S), payload=WATCH_PAYLOAD)
        elif isinstance(msg, WakeupMessage):
            if self.core is not None and self.config is not None:
                self.core.sweep()
                self.wakeupAfter(timedelta(seconds=self.config.sweep_interval_s))
        elif isinstance(msg, ChildActorExited):
            self._writer_died(msg.childAddress)
        elif isinstance(msg, ActorExitRequest):
            self.stopping = True
        elif isinstance(msg, PoisonMessage):
            # A message our handler crashed on twice; drop it, keep serving.
            pass
        elif self.core is None:
            self.send(sender, m.ErrorReply(getattr(msg, "req_id", ""), "not_ready",
                                           "cache meta not started (send MetaStart)"))
        else:
            self.core.handle(msg, sender)

    def _start(self, msg: m.MetaStart, sender: Any) -> None:
        if self.core is not None:
            self.send(sender, m.MetaReady(msg.req_id, self.core.config.run_dir, len(self.core.index), 0, 0))
            return
        try:
            config = msg.config.validate()
        except ValueError as exc:
            self.send(sender, m.ErrorReply(msg.req_id, "bad_config", str(exc)))
            return
        writers = [self._new_writer() for _ in range(config.writers)]
        self.wakeupAfter(timedelta(seconds=WATCH_INTERVAL_S), payload=WATCH_PAYLOAD)
        self.config = config
        self.core = MetaCore(config, _ActorOutbox(self), writers)
        stats = self.core.start()
        self.send(
            sender,
            m.MetaReady(msg.req_id, config.run_dir, stats["rows"], stats["corrupt_files"], stats["tmp_removed"]),
        )
        self.wakeupAfter(timedelta(seconds=config.sweep_interval_s))


    def _new_writer(self) -> Any:
        self._keys += 1
        addr = self.watch.spawn(self._keys, lambda: self.createActor(CacheWriterActor))
        self.writers[self._keys] = addr
        return addr

    def _writer_died(self, addr: Any) -> None:
        """Replace a dead writer once, whichever of its exit notice and the pid watch comes first."""
        key = next((k for k, a in self.writers.items() if a == addr), None)
        if key is None or self.core is None or self.stopping:
            return
        del self.writers[key]
        self.watch.forget(key)
        self.core.replace_writer(addr, self._new_writer())


class CacheWriterActor(Actor):
    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, m.WriteJob):
            try:
                done = execute(msg)
            except Exception as exc:  # report, never leave the meta waiting
                done = m.WriteDone(msg.job_id, msg.key, "failed", "", 0, repr(exc))
            self.send(sender, done)


class PressureActor(Actor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.monitor: PressureMonitor | None = None
        self.meta: Any = None
        self.interval_s = 5.0

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, m.PressureStart):
            try:
                self.monitor = PressureMonitor(msg.source, msg.high, msg.low, tuple(msg.tiers))  # type: ignore[arg-type]
            except ValueError as exc:
                self.send(sender, m.ErrorReply(msg.req_id, "bad_option", str(exc)))
                return
            self.meta = msg.meta
            self.interval_s = msg.interval_s
            self.send(sender, self._report(msg.req_id))
            self.wakeupAfter(timedelta(seconds=self.interval_s))
        elif isinstance(msg, WakeupMessage):
            if self.monitor is not None:
                need = self.monitor.poll()
                if need:
                    self.send(self.meta, m.EvictBytes(need, self.monitor.tiers, "pressure"))
                self.wakeupAfter(timedelta(seconds=self.interval_s))
        elif isinstance(msg, m.PressureStatus):
            self.send(sender, self._report(msg.req_id))
        # Evicted replies from the meta need no action.

    def _report(self, req_id: str) -> m.PressureReport:
        mon = self.monitor
        if mon is None:
            return m.PressureReport(req_id, False, None, 0, 0, "not started")
        return m.PressureReport(
            req_id,
            mon.available,
            mon.last_fraction,
            mon.evictions_requested,
            mon.bytes_requested,
            getattr(mon.source, "last_error", ""),
            mon.polls,
        )


# --- a host actor embedding a CacheClient ------------------------------------------


class CacheClientHost(Actor):
    """Reference embedding of ``CacheClient`` in an actor.

    The pattern for the model actor: build the client with
    ``CacheClient.in_actor(config, self.send, meta_addr)`` once, then at
    the top of ``receiveMessage`` forward ``if client.handles(msg):
    client.handle(msg); return``.  Requests below exist for tests and
    tools; KV bytes reach this actor as a file path, never in a message.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client: CacheClient | None = None

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if self.client is not None and CacheClient.handles(msg):
            self.client.handle(msg)
            return
        if isinstance(msg, m.ClientStart):
            self.client = CacheClient.in_actor(msg.config, self.send, msg.meta)
            self.send(sender, m.HostReply(msg.req_id, {"client_id": self.client.client_id, "pid": os.getpid()}))
        elif isinstance(msg, ActorExitRequest):
            if self.client is not None:
                self.client.close()
        elif isinstance(msg, m.HostCall):
            self.send(sender, self._call(msg))

    def _call(self, msg: m.HostCall) -> m.HostReply:
        c = self.client
        if c is None:
            return m.HostReply(msg.req_id, None, "client not started")
        try:
            a = msg.args
            if msg.op == "lookup":
                hit = c.lookup(a["fingerprint"], a["quant"], a["ctx_hash"], a["tokens"], a.get("parent_key"))
                return m.HostReply(msg.req_id, hit)
            if msg.op == "load":
                loaded = c.load(a["hit"])
                if loaded is None:
                    return m.HostReply(msg.req_id, None)
                # The test reads the bytes back from a file, like any blob hand-off.
                path = a["out_path"]
                with open(path, "wb") as f:
                    f.write(loaded.kv)
                return m.HostReply(msg.req_id, {"path": path, "logits": bytes(loaded.logits or b"")})
            if msg.op == "save":
                with open(a["kv_path"], "rb") as f:
                    kv = f.read()
                meta: RowMeta = a["meta"]
                return m.HostReply(msg.req_id, c.save(a["reason"], meta, kv, a.get("logits"), a.get("tier")))
            if msg.op == "pin":
                return m.HostReply(msg.req_id, c.pin(a["key"]))
            if msg.op == "unpin":
                return m.HostReply(msg.req_id, c.unpin(a["key"]))
            if msg.op == "known":
                return m.HostReply(msg.req_id, c.known(a["key"]))
            if msg.op == "rows":
                return m.HostReply(msg.req_id, c.rows())
            if msg.op == "flush":
                return m.HostReply(msg.req_id, c.flush_writes(a.get("timeout", 20.0)))
            if msg.op == "ram_keys":
                return m.HostReply(msg.req_id, [] if c.ram is None else c.ram.keys())
        except Exception as exc:
            return m.HostReply(msg.req_id, None, f"{type(exc).__name__}: {exc}")
        return m.HostReply(msg.req_id, None, f"unknown op {msg.op!r}")
