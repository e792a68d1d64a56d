"""Meta logic shared by the thespian meta actor and the standalone service.

``MetaCore`` owns the :class:`~actors.cache.index.CacheIndex`, the
file tiers' deletions, the write jobs (which writer runs which is
:class:`~actors.cache.writer_pool.WriterPool`'s) and the pushes to
client mirrors.  It talks to the world only through an ``Outbox``
(``send(dest, msg)``), so the same code runs behind a thespian actor
(dest = actor addresses) and in plain Python (dest = objects with a
``deliver`` method).  One message is handled at a time; callers
serialise (an actor does by construction, the service with a lock).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgpack
import psutil

from actors.cache import messages as m
from actors.cache import publish
from actors.cache.config import DISK, FILE_TIERS, RAM, RAM_FILE, TIER_NAMES, CacheConfig
from actors.cache.counters import Counters, Gauges, read_counters
from actors.cache.index import CacheIndex, Row, Status
from actors.cache.kvc import KvcError, SaveReason
from actors.cache.tiers import DirTier, bump_hits, load_file
from actors.cache.writer_pool import Job, Outbox, WriterPool
from actors.private_files import ensure_own_private_dir, make_private_dirs


@dataclass
class _Subscriber:
    dest: Any
    pid: int


class MetaCore:
    def __init__(
        self,
        config: CacheConfig,
        outbox: Outbox,
        writers: Sequence[Any],
        inline_snapshot_limit: int = 256,
    ) -> None:
        self.config = config.validate()
        self.outbox = outbox
        quotas: dict[str, int | None] = {t.name: t.quota_bytes for t in config.file_tiers()}
        quotas[RAM] = None  # each owner enforces its own ram quota
        self.index = CacheIndex(quotas)
        self.dirs = {t.name: DirTier(t.name, t.path or "", t.quota_bytes) for t in config.file_tiers()}
        ensure_own_private_dir(config.run_dir)  # staging copies and index snapshots hold prompt tokens
        for d in (config.staging_dir, config.snapshot_dir, config.counters_dir):
            make_private_dirs(d)
        self.counters = Counters.for_dir(config.counters_dir)
        self.gauges = Gauges(config.counters_dir)
        self.subscribers: dict[str, _Subscriber] = {}
        # Ram copies of rows the index lists in a file tier (written behind):
        # key -> (owning client, bytes in its ram).  Counted in the ram gauges,
        # released first by ram evictions, and listed again as the owner's ram
        # row if the file copy goes.
        self.hot: dict[bytes, tuple[str, int]] = {}
        self.pool = WriterPool(writers, self.config.writer_queue, outbox)
        self._added: list[m.RowInfo] = []
        self._removed: list[tuple[bytes, str | None]] = []
        self.inline_snapshot_limit = inline_snapshot_limit
        self._update_gauges()

    # -- lifecycle ---------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self.pool.capacity

    @property
    def in_flight(self) -> int:
        return self.pool.in_flight

    def start(self) -> dict[str, int]:
        """Scan the file tiers and register what survived the last run."""
        stats = {"rows": 0, "corrupt_files": 0, "tmp_removed": 0, "reservations_removed": 0}
        for tier in (RAM_FILE, DISK):
            d = self.dirs.get(tier)
            if d is None:
                continue
            res = d.scan(self.config.block_size, self.config.reservation_ttl_s, self.config.tmp_ttl_s)
            pairs = []
            for s in res.rows:
                hdr = s.info.header
                info = m.RowInfo(
                    key=s.info.key,
                    ns=s.ns,
                    tier=tier,
                    location=s.path,
                    n_tokens=hdr.token_count,
                    size=s.size,
                    has_logits=hdr.logits_len > 0,
                    reason=hdr.reason,
                    blocks=s.blocks,
                    created_ns=hdr.created_ns,
                )
                if info.key in self.index:  # same row in both tiers: keep the faster copy
                    d.remove(info.key)
                    continue
                pairs.append((info, hdr.hits))
            self.index.add_scanned(pairs)
            stats["rows"] += len(pairs)
            stats["corrupt_files"] += res.corrupt
            stats["tmp_removed"] += res.tmp_removed
            stats["reservations_removed"] += res.reservations_removed
        self.counters.add_many(
            {
                "corrupt_files": stats["corrupt_files"],
                "tmp_removed": stats["tmp_removed"],
                "reservations_removed": stats["reservations_removed"],
            }
        )
        swept = publish.sweep_staging(self.config.staging_dir, 0.0)
        stats["staging_removed"] = swept
        for tier in FILE_TIERS:
            self._enforce_quota(tier)
        self._flush()
        return stats

    # -- dispatch ------------------------------------------------------------------

    def handle(self, msg: Any, sender: Any) -> None:
        try:
            self._dispatch(msg, sender)
        finally:
            self._flush()

    def _dispatch(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, m.SaveStaged):
            self._on_save(msg)
        elif isinstance(msg, m.WriteDone):
            self._on_write_done(msg, sender)
        elif isinstance(msg, m.Touch):
            self._on_touch(msg.key)
        elif isinstance(msg, m.RamRowsChanged):
            self._on_ram_rows(msg, sender)
        elif isinstance(msg, m.RowWritten):
            self._on_row_written(msg)
        elif isinstance(msg, m.RowFailed):
            self._on_row_failed(msg.key)
        elif isinstance(msg, m.Pin):
            self.index.pin(msg.key, msg.owner)
        elif isinstance(msg, m.Unpin):
            self.index.unpin(msg.key, msg.owner)
        elif isinstance(msg, m.Subscribe):
            self._on_subscribe(msg, sender)
        elif isinstance(msg, m.Unsubscribe):
            self.drop_client(msg.client_id)
        elif isinstance(msg, m.EvictBytes):
            self._reply_evict(msg, sender)
        elif isinstance(msg, m.Gc):
            self.outbox.send(sender, m.GcDone(msg.req_id, self.gc()))
        elif isinstance(msg, m.Dump):
            self.outbox.send(sender, m.DumpReply(msg.req_id, tuple(self._dump())))
        elif isinstance(msg, m.GetCounters):
            self.outbox.send(sender, m.CountersReply(msg.req_id, read_counters(self.config.counters_dir)))
        elif isinstance(msg, m.WaitIdle):
            self.pool.wait_idle(sender, msg.req_id)
        elif isinstance(msg, m.SweepTick):
            self.sweep()
        else:
            req_id = getattr(msg, "req_id", "")
            self.outbox.send(sender, m.ErrorReply(req_id, "bad_request", f"unknown message {type(msg).__name__}"))

    def replace_writer(self, dead: Any, replacement: Any) -> None:
        """A writer process died: fail its job (the row was never published,
        or is re-found by the next scan) and put a fresh writer in its slot."""
        for failed in self.pool.replace(dead, replacement):
            self._on_write_done(failed, None)
        self.pool.idle.append(replacement)
        self.pool.drain()
        self._flush()

    # -- saves ---------------------------------------------------------------------

    def _drop_staged(self, path: str, counter: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.counters.inc(counter)

    def _on_save(self, msg: m.SaveStaged) -> None:
        info = msg.info
        tier = self.dirs.get(info.tier)
        if tier is None:
            return self._drop_staged(msg.staged_path, "saves_dropped")
        if info.key in self.index:
            return self._drop_staged(msg.staged_path, "duplicate_dropped")
        if self.in_flight >= self.capacity:
            return self._drop_staged(msg.staged_path, "saves_dropped")
        victims = self.index.plan_space(info.tier, info.size)
        if victims is None:
            return self._drop_staged(msg.staged_path, "saves_dropped")
        demotions = self._evict(victims, demote=True)
        row_info = replace(info, location=tier.path(info.key), owner=None)
        self.index.add(row_info, Status.WRITING)
        job = m.WriteJob(
            job_id=self.pool.next_id(),
            tier=info.tier,
            directory=tier.directory,
            key=info.key,
            staged_path=msg.staged_path,
            demotions=tuple(demotions),
            ttl_s=self.config.reservation_ttl_s,
            fsync=self.config.fsync,
        )
        self.pool.submit(job, info.reason)

    def _on_write_done(self, msg: m.WriteDone, sender: Any) -> None:
        state = self.pool.done(msg.job_id, sender)
        for d in msg.demoted:
            row = self.index.get(d.key)
            if row is None:
                continue
            if publish.PublishOutcome(d.outcome).row_available:
                moved = self.index.make_available(d.key, replace(row.info, location=d.path, size=d.size))
                self._added.append(moved.info)
                self.counters.inc("demotions")
            else:
                self._drop_file_row(d.key)
                self.counters.inc("evictions")
        if msg.key is not None and state is not None:
            self._finish_save(msg, state)
        if msg.elapsed_ns:
            self.counters.add_many({"write_ns_total": msg.elapsed_ns, "write_count": 1})
        self.pool.drain()

    def _finish_save(self, msg: m.WriteDone, state: Job) -> None:
        key = msg.key
        assert key is not None
        row = self.index.get(key)
        if row is None:
            return
        outcome = publish.PublishOutcome(msg.outcome)
        if outcome.row_available:
            published = self.index.make_available(key, replace(row.info, location=msg.path, size=msg.size))
            self._added.append(published.info)
            if outcome is publish.PublishOutcome.ADOPTED:
                self.counters.inc("duplicate_dropped")
            else:
                reason = SaveReason(state.reason).name.lower()
                self.counters.inc(f"saves_{reason}")
            if msg.size != row.size:  # adopted a file of another size
                self._enforce_quota(row.tier)
        else:
            self.index.remove(key)
            self.counters.inc("duplicate_dropped" if outcome is publish.PublishOutcome.BUSY else "saves_dropped")

    # -- eviction --------------------------------------------------------------------

    def _evict(self, rows: Iterable[Row], demote: bool) -> list[m.Demotion]:
        """Evict rows now; ram_file rows may be demoted to disk instead.

        Demotions are returned for the caller to bundle into a write job:
        the writer copies them out *before* writing the new row, so the
        ram_file directory never holds more than its quota.
        """
        demotions: list[m.Demotion] = []
        drop_ram: dict[str, list[bytes]] = {}
        disk = self.dirs.get(DISK)
        for row in rows:
            if row.status is not Status.AVAILABLE:
                continue
            if row.tier == RAM:
                owner = row.info.owner or ""
                self.index.mark_evicting(row.key)
                self._removed.append((row.key, owner))
                if owner in self.subscribers:
                    drop_ram.setdefault(owner, []).append(row.key)
                else:
                    self.index.remove(row.key)
                self.counters.inc("evictions")
                continue
            if demote and row.tier == RAM_FILE and disk is not None and self.config.demote_to_disk:
                plan = self.index.plan_space(DISK, row.size, exclude=(row.key,))
                if plan is not None:
                    self._evict(plan, demote=False)
                    src = row.info.location
                    self.index.move(row.key, replace(row.info, tier=DISK, location=disk.path(row.key)))
                    self._removed.append((row.key, None))
                    demotions.append(m.Demotion(row.key, src, disk.directory))
                    continue
            self.dirs[row.tier].remove(row.key)
            self._drop_file_row(row.key)
            self.counters.inc("evictions")
        for owner, keys in drop_ram.items():
            self.outbox.send(self.subscribers[owner].dest, m.DropRamRows(tuple(keys)))
        return demotions

    def evict_bytes(self, n_bytes: int, tiers: Sequence[str]) -> tuple[int, list[bytes]]:
        """Free at least ``n_bytes`` (LRU first, pinned rows never) from ``tiers``."""
        unknown = [t for t in tiers if t not in TIER_NAMES]
        if unknown:
            raise ValueError(f"tiers: unknown {unknown}")
        hot_freed, keys = self._release_hot(n_bytes) if RAM in tiers else (0, [])
        rows = self.index.reclaimable(tiers, n_bytes - hot_freed)
        # Demoting into a tier that is itself being emptied would be wasted I/O.
        can_demote = DISK not in tiers and self.in_flight < self.capacity
        freed = hot_freed + sum(r.size for r in rows)
        keys += [r.key for r in rows]
        self._submit_demotions(self._evict(rows, demote=can_demote))
        return freed, keys

    def _submit_demotions(self, demotions: list[m.Demotion]) -> None:
        if demotions:
            job = m.WriteJob(
                job_id=self.pool.next_id(),
                tier=DISK,
                directory=self.dirs[DISK].directory,
                demotions=tuple(demotions),
                ttl_s=self.config.reservation_ttl_s,
                fsync=self.config.fsync,
            )
            self.pool.submit(job, 0)

    def _release_hot(self, n_bytes: int) -> tuple[int, list[bytes]]:
        """Free ram by dropping copies whose row is safe in a file tier (oldest first, pinned rows never)."""
        freed = 0
        keys: list[bytes] = []
        drop: dict[str, list[bytes]] = {}
        for key, (owner, size) in list(self.hot.items()):
            if freed >= n_bytes:
                break
            row = self.index.get(key)
            if row is not None and row.pins:
                continue
            del self.hot[key]
            drop.setdefault(owner, []).append(key)
            freed += size
            keys.append(key)
        for owner, dropped in drop.items():
            if owner in self.subscribers:
                self.outbox.send(self.subscribers[owner].dest, m.DropRamRows(tuple(dropped)))
        if keys:
            self.counters.inc("demotions", len(keys))  # the rows now live in their file tier only
        return freed, keys

    def _drop_file_row(self, key: bytes) -> None:
        """Unlist a file row whose file is gone; a ram copy its owner still holds
        becomes the listed row again (the owner's private ram row)."""
        row = self.index.remove(key)
        self._removed.append((key, None))
        hot = self.hot.pop(key, None)
        if hot is not None and row is not None and hot[0] in self.subscribers:
            owner, size = hot
            ram = self.index.add(replace(row.info, tier=RAM, location=owner, owner=owner, size=size))
            for pin_owner in row.pins:
                self.index.pin(key, pin_owner)
            self._added.append(ram.info)

    def _dump(self) -> list[dict[str, object]]:
        """Every row; ``ram_copy`` names the process that also holds a row written behind in its ram."""
        rows = self.index.dump()
        for row in rows:
            hot = self.hot.get(bytes.fromhex(str(row["key"])))
            row["ram_copy"] = hot[0] if hot is not None else None
        return rows

    def _on_row_written(self, msg: m.RowWritten) -> None:
        """A model's write-behind thread published a copy: charge it to its tier
        (evicting for room), list it for everyone; the owner keeps its ram copy."""
        info = msg.info
        tier = self.dirs.get(info.tier)
        if tier is None:
            return
        row = self.index.get(info.key)
        if row is not None and row.tier != RAM:
            return  # already listed there (the same path: a file tier has one file per key)
        victims = self.index.plan_space(info.tier, info.size, exclude=(info.key,))
        if victims is None:  # cannot fit (the rest is pinned or busy): the copy goes, the ram row stays
            tier.remove(info.key)
            self.counters.inc("saves_dropped")
            return
        self._submit_demotions(self._evict(victims, demote=True))
        if row is None:  # a demotion: its ram copy is already gone
            self.index.add(info)
        else:
            owner = row.info.owner or ""
            self.index.move(info.key, info)
            self.index.make_available(info.key)
            if owner in self.subscribers:
                self.hot[info.key] = (owner, row.size)
        self._added.append(info)

    def _reply_evict(self, msg: m.EvictBytes, sender: Any) -> None:
        try:
            freed, keys = self.evict_bytes(msg.n_bytes, msg.tiers)
        except ValueError as exc:
            self.outbox.send(sender, m.ErrorReply(msg.req_id, "bad_option", str(exc)))
            return
        self.outbox.send(sender, m.Evicted(msg.req_id, freed, tuple(keys)))

    def _enforce_quota(self, tier: str) -> int:
        over = self.index.over_quota(tier)
        if over <= 0:
            return 0
        rows = self.index.victims(tier, over) or self.index.reclaimable([tier], over)
        self._evict(rows, demote=False)
        return len(rows)

    # -- ram rows, touches, clients -------------------------------------------------

    def _on_ram_rows(self, msg: m.RamRowsChanged, sender: Any) -> None:
        for key in msg.removed:
            hot = self.hot.get(key)
            if hot is not None and hot[0] == msg.client_id:
                del self.hot[key]
            row = self.index.get(key)
            if row is not None and row.tier == RAM and row.info.owner == msg.client_id:
                self.index.remove(key)
                self._removed.append((key, msg.client_id))
        conflicts = []
        for info in msg.added:
            existing = self.index.get(info.key)
            if existing is not None and existing.tier == RAM and existing.info.owner == msg.client_id:
                # The owner kept a row we asked it to drop (pinned there
                # meanwhile): it is available again.
                if existing.status is not Status.AVAILABLE:
                    self.index.make_available(info.key)
                    self._added.append(existing.info)
                continue
            if existing is not None and existing.tier == RAM and existing.info.owner != msg.client_id:
                # Another model process holds this key in its own ram, which this one
                # cannot read: the second copy stays private to its process (its own
                # lookups use it, its ram quota bounds it) instead of being dropped,
                # which left a second model on the same GGUF cold forever.
                self.counters.inc(f"saves_{SaveReason(info.reason).name.lower()}")
                continue
            if existing is not None:
                conflicts.append(info.key)
                continue
            added = self.index.add(replace(info, tier=RAM, owner=msg.client_id, location=msg.client_id))
            self._added.append(added.info)
            self.counters.inc(f"saves_{SaveReason(info.reason).name.lower()}")
        if conflicts:
            self.counters.inc("duplicate_dropped", len(conflicts))
            sub = self.subscribers.get(msg.client_id)
            self.outbox.send(sub.dest if sub else sender, m.DropRamRows(tuple(conflicts)))

    def _on_row_failed(self, key: bytes) -> None:
        row = self.index.get(key)
        if row is None or row.tier not in FILE_TIERS or row.status is not Status.AVAILABLE:
            return
        try:
            load_file(row.info.location, key)
            return  # fine after all (e.g. a transient read error in the client)
        except FileNotFoundError:
            pass
        except (OSError, KvcError):
            self.dirs[row.tier].remove(key)
            self.counters.inc("corrupt_files")
        self._drop_file_row(key)

    def _on_touch(self, key: bytes) -> None:
        row = self.index.touch(key)
        if row is not None and row.tier in FILE_TIERS:
            bump_hits(row.info.location, row.hits)

    def _on_subscribe(self, msg: m.Subscribe, sender: Any) -> None:
        self.subscribers[msg.client_id] = _Subscriber(sender, msg.pid)
        rows = tuple(r.info for r in self.index.available() if r.tier in FILE_TIERS)
        if len(rows) <= self.inline_snapshot_limit:
            self.outbox.send(sender, m.Snapshot(rows=rows))
            return
        # Big indexes travel as a file, like blobs: a multi-megabyte
        # pickled message would stall both actors.
        path = os.path.join(self.config.snapshot_dir, f"{msg.client_id}-{time.monotonic_ns()}.msgpack")
        with open(path + ".part", "wb") as f:
            f.write(msgpack.packb([m.row_info_to_list(i) for i in rows], use_bin_type=True))
        os.replace(path + ".part", path)
        self.outbox.send(sender, m.Snapshot(path=path))

    def drop_client(self, client_id: str) -> None:
        """Forget a client: its ram rows died with it, its pins are released."""
        self.subscribers.pop(client_id, None)
        self.index.release_owner(client_id)
        self.hot = {k: v for k, v in self.hot.items() if v[0] != client_id}
        for row in self.index.rows():
            if row.tier == RAM and row.info.owner == client_id:
                self.index.remove(row.key)

    # -- housekeeping ------------------------------------------------------------------

    def sweep(self) -> dict[str, int]:
        stats = {"tmp_removed": 0, "reservations_removed": 0, "staging_removed": 0, "clients_dropped": 0,
                 "corrupt_files": 0}
        for d in self.dirs.values():
            s = d.sweep(self.config.reservation_ttl_s, self.config.tmp_ttl_s)
            stats["tmp_removed"] += s.tmp_removed
            stats["reservations_removed"] += s.reservations_removed
            stats["corrupt_files"] += s.foreign_removed  # a stray *.kvc is a row file no reader can use
        stats["staging_removed"] = publish.sweep_staging(self.config.staging_dir, self.config.tmp_ttl_s)
        publish.sweep_staging(self.config.snapshot_dir, self.config.tmp_ttl_s)
        for cid, sub in list(self.subscribers.items()):
            if sub.pid and not psutil.pid_exists(sub.pid):
                self.drop_client(cid)
                stats["clients_dropped"] += 1
        self.counters.add_many(
            {"tmp_removed": stats["tmp_removed"], "reservations_removed": stats["reservations_removed"],
             "corrupt_files": stats["corrupt_files"]}
        )
        return stats

    def gc(self) -> dict[str, int]:
        """Full pass: sweep debris, forget rows whose file vanished, re-apply quotas."""
        stats = self.sweep()
        vanished = 0
        for row in self.index.rows():
            if row.tier in FILE_TIERS and row.status is Status.AVAILABLE and not os.path.exists(row.info.location):
                self._drop_file_row(row.key)
                vanished += 1
        stats["vanished"] = vanished
        stats["evicted_over_quota"] = sum(self._enforce_quota(t) for t in FILE_TIERS if t in self.dirs)
        return stats

    def _flush(self) -> None:
        if self._added or self._removed:
            public_add = tuple(i for i in self._added if i.tier != RAM)
            public_rm = tuple(k for k, owner in self._removed if owner is None)
            per_owner: dict[str, tuple[list[m.RowInfo], list[bytes]]] = {}
            for i in self._added:
                if i.tier == RAM and i.owner:
                    per_owner.setdefault(i.owner, ([], []))[0].append(i)
            for k, owner in self._removed:
                if owner:
                    per_owner.setdefault(owner, ([], []))[1].append(k)
            self._added, self._removed = [], []
            for cid, sub in self.subscribers.items():
                own_add, own_rm = per_owner.get(cid, ([], []))
                if public_add or public_rm or own_add or own_rm:
                    delta = m.IndexDelta(public_add + tuple(own_add), public_rm + tuple(own_rm))
                    self.outbox.send(sub.dest, delta)
        self._update_gauges()

    def _update_gauges(self) -> None:
        values: dict[str, int] = {}
        for tier in TIER_NAMES:
            values[f"bytes_{tier}"] = self.index.used(tier) if tier in self.index.quotas else 0
            values[f"rows_{tier}"] = self.index.count(tier) if tier in self.index.quotas else 0
        # Ram copies of written-behind rows hold ram too.
        values["bytes_ram"] += sum(size for _, size in self.hot.values())
        values["rows_ram"] += len(self.hot)
        values["writer_busy"] = len(self.pool.jobs)
        values["writer_queued"] = len(self.pool.queue)
        values["writer_capacity"] = self.capacity
        self.gauges.set_many(values)

    def close(self) -> None:
        self.gauges.close()
