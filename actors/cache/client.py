"""``CacheClient``: the cache as seen from inside a model process.

It holds the process's ``ram`` tier and a read-only mirror of the index
(rows plus a prefix index) that the meta actor keeps current by pushing
deltas.  A lookup is therefore answered locally with zero actor round
trips; only one-way notifications (hit touches, saves) leave the
process, and none of them waits for an answer or carries KV bytes.

Transport-agnostic: the client is given a ``send(msg)`` callable to reach
the meta.  Inside a thespian actor that is ``lambda msg: self.send(meta,
msg)`` and the actor forwards cache messages to :meth:`handle`; in plain
Python the :class:`~actors.cache.service.CacheService` wires it up.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from actors.cache import kvc
from actors.cache import messages as m
from actors.cache.config import FILE_TIERS, RAM, RAM_FILE, CacheConfig
from actors.cache.counters import Counters, read_counters, read_gauges
from actors.cache.key import cache_key, encode_tokens, namespace, quant_byte
from actors.cache.kvc import RowMeta, SaveReason
from actors.cache.prefix import PrefixChain, PrefixIndex
from actors.cache.publish import write_parts
from actors.cache.results import EXACT, PREFIX, RESUME, Hit, Loaded, SaveResult
from actors.cache.tiers import LoadBuffer, RamEntry, RamTier, load_file, read_tokens
from actors.cache.write_behind import WriteBehind, WriteOutcome, WriteRequest, wait_while_exists
from actors.cache.write_policy import CopyState, EvictAction, QueueLimits, Verdict, on_evict, spill_order

_HIT_COUNTER = {EXACT: "hits_exact", RESUME: "hits_resume", PREFIX: "hits_longest_prefix"}
_TOKEN_CACHE = 32


class CacheError(ValueError):
    """Bad use of the client (unknown tier, malformed input)."""


class CacheClient:
    """One per model process, used from one thread (the actor's).

    Not thread-safe by design: the mirror and the ram tier are touched only
    from the owning actor's message loop; messages arriving from other
    threads (standalone mode) go through :meth:`deliver` and are applied at
    the start of the next call.
    """

    def __init__(
        self,
        config: CacheConfig,
        send: Callable[[Any], None],
        client_id: str | None = None,
        send_threadsafe: bool = True,
    ) -> None:
        """``send_threadsafe``: ``send`` may be called from the write-behind
        thread; otherwise its notices wait for this client's next call."""
        self.config = config.validate()
        self.client_id = client_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._send = send
        ram = config.tier(RAM)
        self.ram: RamTier | None = RamTier(ram.quota_bytes) if ram else None
        self._rows: dict[bytes, m.RowInfo] = {}
        self._prefix = PrefixIndex(config.max_candidates)
        self._tokens: OrderedDict[bytes, bytes] = OrderedDict()
        self._inbox: deque[Any] = deque()
        self._last_chain: PrefixChain | None = None
        self._load_buffer = LoadBuffer()
        os.makedirs(config.staging_dir, exist_ok=True)
        self.counters = Counters.for_dir(config.counters_dir)
        self._closed = False
        behind = config.behind_tier()
        self._can_demote = behind is not None and config.demote_to_disk
        self._send_threadsafe = send_threadsafe
        self.behind: WriteBehind | None = None
        if behind is not None and (config.write_behind or config.demote_to_disk):
            self.behind = WriteBehind(
                behind.name, behind.path or "", QueueLimits(config.write_behind_queue, config.write_behind_bytes),
                send if send_threadsafe else None, self.counters, self.client_id,
                ttl_s=config.reservation_ttl_s, fsync=config.fsync, nice=config.write_behind_nice,
                hook=wait_while_exists(config.write_behind_gate) if config.write_behind_gate else None,
            )
        self._send(m.Subscribe(self.client_id, os.getpid()))

    @classmethod
    def in_actor(
        cls, config: CacheConfig, actor_send: Callable[[Any, Any], None], meta: Any, client_id: str | None = None
    ) -> CacheClient:
        """Client for a thespian actor: pass ``self.send`` and the meta address;
        forward messages for which :meth:`handles` is true to :meth:`handle`."""
        return cls(config, lambda msg: actor_send(meta, msg), client_id, send_threadsafe=False)

    # -- incoming ----------------------------------------------------------------

    @staticmethod
    def handles(msg: object) -> bool:
        return isinstance(msg, (m.Snapshot, m.IndexDelta, m.DropRamRows))

    def deliver(self, msg: object) -> None:
        """Queue a message from another thread; applied at the next call."""
        self._inbox.append(msg)

    def handle(self, msg: object) -> None:
        """Apply a meta message now (actor mode: call from receiveMessage)."""
        if isinstance(msg, m.IndexDelta):
            for key in msg.removed:
                self._on_removed(key)
            for info in msg.added:
                self._remember(info)
        elif isinstance(msg, m.Snapshot):
            rows: Sequence[m.RowInfo] = msg.rows
            if msg.path:
                with open(msg.path, "rb") as f:
                    rows = [m.row_info_from_list(r) for r in msgpack.unpackb(f.read(), raw=False)]
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(msg.path)
            for info in rows:
                self._remember(info)
        elif isinstance(msg, m.DropRamRows):
            self._drop_ram(msg.keys)

    def _drain(self) -> None:
        while self._inbox:
            self.handle(self._inbox.popleft())
        if self.behind is not None:
            self._apply_written(self.behind.completed())

    def apply_pending(self) -> None:
        """Apply delivered messages now (the owner's thread, when it is otherwise idle).

        A ``DropRamRows`` from an operator or from memory pressure must free the
        rows even while the model has no request to trigger the next call.
        """
        self._drain()

    def _remember(self, info: m.RowInfo) -> None:
        if info.tier == RAM and (self.ram is None or info.key not in self.ram):
            return  # another process's ram row, or one we already dropped
        entry = self.ram.get(info.key, touch=False) if self.ram is not None and info.tier != RAM else None
        if entry is not None:
            # The file copy of one of our ram rows: keep serving the ram copy,
            # and remember that evicting it now loses nothing.
            entry.copy, entry.file_info = CopyState.DURABLE, info
            return
        old = self._rows.pop(info.key, None)
        if old is not None:
            self._prefix.remove(info.key, old.blocks)
        self._rows[info.key] = info
        self._prefix.add(info.key, info.blocks)

    def _on_removed(self, key: bytes) -> None:
        entry = self.ram.get(key, touch=False) if self.ram is not None else None
        if entry is None:
            self._forget(key)
        elif entry.copy in (CopyState.DURABLE, CopyState.WRITTEN):
            # Our ram row stays; its file copy went (evicted, or failed a check).
            entry.copy, entry.file_info = CopyState.NONE, None

    def _forget(self, key: bytes) -> None:
        info = self._rows.pop(key, None)
        if info is not None:
            self._prefix.remove(key, info.blocks)
        self._tokens.pop(key, None)

    def _drop_ram(self, keys: Sequence[bytes]) -> None:
        if self.ram is None:
            return
        dropped: list[bytes] = []
        kept: list[m.RowInfo] = []
        for key in keys:
            entry = self.ram.get(key, touch=False)
            if entry is None:
                dropped.append(key)
            elif entry.pins and entry.info is not None:
                kept.append(entry.info)  # pinned here: re-announce instead of dropping
            else:
                self.ram.remove(key, force=True)
                self._unlist_ram(entry)
                dropped.append(key)
        readd = tuple(kept)
        if dropped or readd:
            self._send(m.RamRowsChanged(self.client_id, readd, tuple(dropped)))

    # -- lookup --------------------------------------------------------------------

    def _row_tokens(self, key: bytes) -> bytes | None:
        toks = self._tokens.get(key)
        if toks is not None:
            self._tokens.move_to_end(key)
            return toks
        info = self._rows.get(key)
        if info is None:
            return None
        if info.tier == RAM:
            entry = self.ram.get(key, touch=False) if self.ram else None
            return entry.tokens if entry else None
        try:
            toks = read_tokens(info.location)
        except (OSError, kvc.KvcError):
            return None
        self._tokens[key] = toks
        if len(self._tokens) > _TOKEN_CACHE:
            self._tokens.popitem(last=False)
        return toks

    def _hit(self, kind: str, info: m.RowInfo, matched: int) -> Hit:
        return Hit(kind, info.key, matched, info.n_tokens, info.tier, info.location, info.size, info.has_logits)

    def lookup(
        self,
        fingerprint: bytes,
        quant: int | str,
        ctx_hash: bytes,
        tokens: Sequence[int] | bytes,
        parent_key: bytes | None = None,
        record: bool = True,
    ) -> Hit | None:
        """Best cached state for ``tokens``: exact row, else the ``parent_key``
        row if it is a prefix of the prompt, else the longest shared prefix.

        ``fingerprint`` is the effective fingerprint (adapters folded).
        Costs no actor round trip; a hit sends one one-way touch.
        ``record=False`` is an inspection: no counters, no touch, no LRU change.
        """
        self._drain()
        t0 = time.perf_counter_ns()
        tb = encode_tokens(tokens)
        n = len(tb) // 4
        q = quant_byte(quant)
        key = cache_key(fingerprint, q, ctx_hash, tb)
        probes = 1
        hit: Hit | None = None
        info = self._rows.get(key)
        if info is not None:
            hit = self._hit(EXACT, info, n)
        else:
            ns = namespace(fingerprint, q, ctx_hash)
            if parent_key is not None:
                probes += 1
                parent = self._rows.get(parent_key)
                if parent is not None and parent.ns == ns and 0 < parent.n_tokens < n:
                    ptoks = self._row_tokens(parent_key)
                    if ptoks is not None and tb[: len(ptoks)] == ptoks:
                        hit = self._hit(RESUME, parent, parent.n_tokens)
            if hit is None and n >= self.config.block_size:
                chain = PrefixChain(ns, tb, self.config.block_size, reuse=self._last_chain)
                self._last_chain = chain
                match, walk_probes = self._prefix.longest(chain, self._row_tokens)
                probes += walk_probes
                if match is not None:
                    hit = self._hit(PREFIX, self._rows[match.key], min(match.matched, n))
        elapsed = time.perf_counter_ns() - t0
        if not record:
            return hit
        self.counters.add_many(
            {
                _HIT_COUNTER[hit.kind] if hit else "misses": 1,
                "lookup_ns_total": elapsed,
                "lookup_count": 1,
                "lookup_probes": probes,
            }
        )
        if hit is not None:
            if hit.tier == RAM and self.ram is not None:
                self.ram.get(hit.key)  # local LRU
            self._send(m.Touch(hit.key))
        return hit

    def load(self, hit: Hit) -> Loaded | None:
        """Read a hit's state.  None if the row vanished or failed its checks
        since the lookup (counted in ``load_failures``); the caller then
        prefills cold."""
        self._drain()
        t0 = time.perf_counter_ns()
        loaded: Loaded | None = None
        if hit.tier == RAM:
            entry = self.ram.get(hit.key) if self.ram else None
            if entry is not None:
                loaded = Loaded(
                    hit,
                    memoryview(entry.kv).toreadonly(),
                    memoryview(entry.logits).toreadonly() if entry.logits else None,
                    entry.tokens,
                )
        else:
            try:
                row = load_file(hit.location, hit.key, use_mmap=hit.tier == RAM_FILE, buffer=self._load_buffer)
                loaded = Loaded(hit, row.kv, row.logits, row.info.meta.tokens)
            except (OSError, kvc.KvcError):
                self._forget(hit.key)
                self._send(m.RowFailed(hit.key))
        elapsed = time.perf_counter_ns() - t0
        if loaded is None:
            self.counters.inc("load_failures")
            return None
        nbytes = loaded.kv.nbytes + (loaded.logits.nbytes if loaded.logits is not None else 0)
        self.counters.add_many({"load_ns_total": elapsed, "load_count": 1, "load_bytes": nbytes})
        return loaded

    # -- save ----------------------------------------------------------------------

    def save(
        self,
        reason: SaveReason | str,
        meta: RowMeta,
        kv: bytes | bytearray | memoryview,
        logits: bytes | bytearray | memoryview | None = None,
        tier: str | None = None,
    ) -> SaveResult:
        """Store a state without blocking on I/O.

        ``ram``: the blob is kept in this process (LRU within the tier's
        quota).  File tiers: the row is encoded once into a tmpfs staging
        file and handed to the writer pool by path; fsync, link and
        validation happen in a writer process.  A full pool or a save that
        cannot fit its quota is dropped and counted (``saves_dropped``),
        never waited for.  Evict/shutdown saves aimed at ``ram`` go to the
        first file tier instead, since ram dies with the process.
        """
        self._drain()
        reason = SaveReason.parse(reason)
        tier = tier or self.config.default_tier
        if tier == RAM and reason in (SaveReason.EVICT, SaveReason.SHUTDOWN):
            files = self.config.file_tiers()
            if not files:
                return self._dropped(meta.key, tier, "no file tier for an evict/shutdown save")
            tier = files[0].name
        if self.config.tier(tier) is None:
            raise CacheError(f"tier {tier!r} is not configured")
        kv = kv if isinstance(kv, (bytes, bytearray)) else memoryview(kv).cast("B")
        if logits is not None:
            logits = logits if isinstance(logits, bytes) else memoryview(logits).cast("B")
            if len(logits) % 4:
                raise CacheError("logits: length is not a whole number of float32")
        key = meta.key
        if key in self._rows:
            self.counters.inc("duplicate_dropped")
            return SaveResult(key, False, tier, "duplicate")
        ns = namespace(meta.fingerprint, meta.quant, meta.ctx_hash)
        chain = PrefixChain(ns, meta.tokens, self.config.block_size, reuse=self._last_chain)
        blocks = b"".join(chain.all())
        created = time.time_ns()
        if tier == RAM:
            return self._save_ram(reason, meta, key, ns, blocks, created, kv, logits)
        return self._save_file(reason, meta, key, ns, blocks, created, tier, kv, logits)

    def _dropped(self, key: bytes, tier: str, detail: str) -> SaveResult:
        self.counters.inc("saves_dropped")
        return SaveResult(key, False, tier, detail)

    def _save_ram(
        self,
        reason: SaveReason,
        meta: RowMeta,
        key: bytes,
        ns: bytes,
        blocks: bytes,
        created: int,
        kv: bytes | bytearray | memoryview,
        logits: bytes | bytearray | memoryview | None,
    ) -> SaveResult:
        assert self.ram is not None
        t0 = time.perf_counter_ns()
        # The packed state is handed over, not copied: a 2k-token row is ~45 MB and a copy per save cost
        # as much as the pack itself (profiled on the interleaved chat). The engine never touches it again.
        entry = RamEntry(key, kv if isinstance(kv, (bytes, bytearray)) else bytes(kv),
                         bytes(logits) if logits else None, meta.tokens, meta=meta)
        stored, evicted = self.ram.put(entry)
        if not stored:
            return self._dropped(key, RAM, "does not fit the ram quota")
        demote = [e for e in evicted if self._leave_ram(e) is EvictAction.DEMOTE]
        info = m.RowInfo(
            key,
            ns,
            RAM,
            self.client_id,
            meta.n_tokens,
            entry.size,
            bool(logits),
            int(reason),
            blocks,
            created,
            self.client_id,
        )
        entry.info = info
        # Visible to this process's next lookup at once (read-your-writes); the meta's echo
        # of the same row is idempotent.
        self._remember(info)
        self.counters.add_many(
            {"pack_ns_total": time.perf_counter_ns() - t0, "pack_count": 1, "pack_bytes": entry.size}
        )
        # The meta hears of the row before any copy of it can be announced (one lane, in order).
        self._send(m.RamRowsChanged(self.client_id, (info,), tuple(e.key for e in evicted)))
        for e in demote:
            if self._offer(e, demotion=True) is Verdict.FULL:
                self.counters.inc("evictions")  # no room to demote it: dropped after all
        if self.behind is not None and self.config.write_behind:
            self._offer(entry, demotion=False)
        return SaveResult(key, True, RAM)

    # -- copies to the file tier (write-behind, demotion, spill) -----------------------

    def _leave_ram(self, entry: RamEntry) -> EvictAction:
        """An entry the ram quota just evicted: list its file copy instead, queue
        its demotion (the caller offers it), or drop it."""
        action = on_evict(entry.copy, self._can_demote)
        self._unlist_ram(entry)
        if action is EvictAction.RELEASE:
            self.counters.inc("demotions")
        elif action is EvictAction.DROP:
            self.counters.inc("evictions")
        return action

    def _unlist_ram(self, entry: RamEntry) -> None:
        """The mirror after a ram entry is gone: its durable file copy, else nothing
        (a copy written but not yet listed arrives with the meta's next delta)."""
        if entry.copy is CopyState.DURABLE and entry.file_info is not None:
            self._remember(entry.file_info)
        else:
            self._forget(entry.key)

    def _offer(self, entry: RamEntry, demotion: bool, force: bool = False) -> Verdict:
        assert self.behind is not None
        req = WriteRequest(entry.info, entry.meta, entry.kv, entry.logits, demotion)
        adm = self.behind.offer(req, force=force)
        if adm.verdict is Verdict.QUEUED:
            entry.copy = CopyState.QUEUED
        for key in adm.displaced:
            other = self.ram.get(key, touch=False) if self.ram is not None else None
            if other is not None and other.copy is CopyState.QUEUED:
                other.copy = CopyState.NONE
        return adm.verdict

    def _apply_written(self, outcomes: Sequence[WriteOutcome]) -> None:
        for o in outcomes:
            entry = self.ram.get(o.key, touch=False) if self.ram is not None else None
            if entry is not None and entry.copy is CopyState.QUEUED:
                entry.copy = CopyState.WRITTEN if o.written else CopyState.NONE
            if o.notice is not None and not self._send_threadsafe:
                self._send(o.notice)

    def flush_writes(self, timeout: float = 30.0) -> bool:
        """Wait until every queued copy is written (tests, tools); True when done."""
        if self.behind is None:
            return True
        done = self.behind.wait_idle(timeout)
        self._drain()
        return done

    def _spill(self) -> None:
        """Graceful shutdown: write what only ram holds, within ``spill_budget_s``."""
        if self.behind is None:
            return
        if self.ram is not None and self.config.spill_budget_s > 0:
            self._drain()
            entries = {e.key: e for e in self.ram.entries()}
            for key in spill_order(list(entries), {k: e.copy for k, e in entries.items()}):
                self._offer(entries[key], demotion=False, force=True)
        report = self.behind.close(self.config.spill_budget_s)
        self.counters.add_many({"spilled": report.written, "spill_skipped": report.skipped})
        self._apply_written(self.behind.completed())

    def _writers_full(self) -> bool:
        g = read_gauges(self.config.counters_dir)
        return g["writer_capacity"] > 0 and g["writer_busy"] + g["writer_queued"] >= g["writer_capacity"]

    def _save_file(
        self,
        reason: SaveReason,
        meta: RowMeta,
        key: bytes,
        ns: bytes,
        blocks: bytes,
        created: int,
        tier: str,
        kv: bytes | bytearray | memoryview,
        logits: bytes | bytearray | memoryview | None,
    ) -> SaveResult:
        if self._writers_full():
            return self._dropped(key, tier, "writer pool full")
        t0 = time.perf_counter_ns()
        logits_b = logits if logits else b""
        prefix = kvc.encode_prefix(reason, meta, len(kv), len(logits_b), kvc.payload_crc(kv, logits_b or None), created)
        path = os.path.join(self.config.staging_dir, f"{key.hex()}.{uuid.uuid4().hex[:12]}.stage")
        size = len(prefix) + len(kv) + len(logits_b)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                write_parts(fd, (prefix, kv, logits_b))
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return self._dropped(key, tier, f"staging failed: {exc}")
        info = m.RowInfo(key, ns, tier, "", meta.n_tokens, size, bool(logits_b), int(reason), blocks, created)
        self.counters.add_many({"pack_ns_total": time.perf_counter_ns() - t0, "pack_count": 1, "pack_bytes": size})
        self._send(m.SaveStaged(info, path, self.client_id))
        return SaveResult(key, True, tier, "staged")

    # -- pins, counters, lifecycle ----------------------------------------------------

    def pin(self, key: bytes) -> bool:
        """Protect a row from eviction until :meth:`unpin` (or this client closes)."""
        self._drain()
        if self.ram is not None:
            self.ram.pin(key)
        self._send(m.Pin(key, self.client_id))
        return key in self._rows

    def unpin(self, key: bytes) -> bool:
        self._drain()
        if self.ram is not None:
            self.ram.unpin(key)
        self._send(m.Unpin(key, self.client_id))
        return key in self._rows

    def known(self, key: bytes) -> bool:
        """Whether the mirror currently lists ``key`` (after pending updates)."""
        self._drain()
        return key in self._rows

    def rows(self) -> int:
        self._drain()
        return len(self._rows)

    def get_counters(self) -> dict[str, int]:
        return read_counters(self.config.counters_dir)

    def close(self, spill: bool = False) -> None:
        """Release pins and ram rows; the meta forgets this client.

        ``spill`` (a graceful unload): first write the ram rows that have no
        file copy yet, within ``spill_budget_s``, so a restart on the same
        cache directory finds them.  Without it, queued copies are abandoned.
        """
        if self._closed:
            return
        self._closed = True
        if spill:
            self._spill()
        elif self.behind is not None:
            self.behind.close()
            self._apply_written(self.behind.completed())
        with contextlib.suppress(Exception):
            self._send(m.Unsubscribe(self.client_id))
        if self.ram is not None:
            self.ram.clear()
        self._rows.clear()
        self._prefix = PrefixIndex(self.config.max_candidates)


__all__ = ["FILE_TIERS", "CacheClient", "CacheError", "Hit", "Loaded", "SaveResult"]
