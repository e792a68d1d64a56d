"""Token-exact KV cache for llama.cpp sequence states.

Interface for the model actor
=============================

Once per model (after load, and again whenever adapters change)::

    from actors.cache import (CacheClient, RowMeta, cache_key, ctx_params_hash,
                              effective_fingerprint, quant_byte)

    fp = effective_fingerprint(gguf_sha256, [(adapter_sha256, scale), ...])
    quant = quant_byte(gguf_general_file_type)          # llama_ftype number or name
    ctx = ctx_params_hash({"n_ctx": 8192, "type_k": "f16", "type_v": "f16",
                           "flash_attn": True, ...})     # resolved values

    # inside the model actor (thespian):
    self.cache = CacheClient.in_actor(config, self.send, meta_address)
    # ... and first thing in receiveMessage:
    if self.cache.handles(msg):
        self.cache.handle(msg)
        return

Per request::

    hit = self.cache.lookup(fp, quant, ctx, prompt_tokens, parent_key=None)
    if hit is not None:
        loaded = self.cache.load(hit)        # None -> the row vanished: prefill cold
        # llama_state_seq_set_data(ctx, ffi.from_buffer(loaded.kv), ...)
        # if hit.needs_truncation: llama_memory_seq_rm(mem, seq, hit.matched, -1)
        # if hit.logits_usable: sample from loaded.logits, no decode needed
        # prefill prompt_tokens[hit.matched:]

    self.cache.save("cold" | "continued" | "finish" | "evict" | "shutdown",
                    RowMeta(fingerprint=fp, quant=quant, ctx_hash=ctx, tokens=context_tokens,
                            context_size=n_ctx, model=name),
                    kv=state_bytes, logits=last_logits_f32_bytes_or_None,
                    tier=None)                   # None -> config.default_tier
    # returns SaveResult(key, accepted, tier, detail) immediately; never blocks on I/O

    self.cache.pin(key); self.cache.unpin(key); self.cache.get_counters()

``SaveResult.key`` of a finish save is the ``parent_key`` for the next
turn.  ``actors.cache.policy`` has the save gates (``should_save``,
``cold_split``, ``continued_save_length``); ``save`` does not apply them.

Without an actor system (tests, tools, the smoke example) use
``CacheService(config)`` and ``service.client()``: same client, same
meta logic, threads instead of processes.  Inside an actor system the
operator API is ``CacheAdmin`` (``actors.cache.admin``).
"""

from actors.cache.client import CacheClient, CacheError, Hit, Loaded, SaveResult
from actors.cache.config import CacheConfig, ConfigError, TierConfig
from actors.cache.counters import read_counters
from actors.cache.key import (
    Adapter,
    cache_key,
    ctx_params_hash,
    effective_fingerprint,
    namespace,
    quant_byte,
)
from actors.cache.kvc import KvcError, RowMeta, SaveReason
from actors.cache.policy import PolicyError, SavePolicy
from actors.cache.service import CacheService

__all__ = [
    "Adapter",
    "CacheClient",
    "CacheConfig",
    "CacheError",
    "CacheService",
    "ConfigError",
    "Hit",
    "KvcError",
    "Loaded",
    "PolicyError",
    "RowMeta",
    "SavePolicy",
    "SaveReason",
    "SaveResult",
    "TierConfig",
    "cache_key",
    "ctx_params_hash",
    "effective_fingerprint",
    "namespace",
    "quant_byte",
    "read_counters",
]
