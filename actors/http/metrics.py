"""Prometheus metrics of the HTTP front door (``GET /metrics``, through ``prometheus_client``).

Request-side series are updated as requests finish.  Model and cache
series (phase, queue depth, restarts, cache hits by kind, bytes by tier)
are read at scrape time from the observability table and the cache
counter files: shared memory, so a scrape never sends a message to a
model and never waits behind a decode.  Each server has its own
registry (two servers in one process, as in the tests, never collide).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from actors.model import messages as mm

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TTFT_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_RATE_BUCKETS = (1, 5, 10, 25, 50, 100, 150, 200, 300, 500, 1000)
# cache counter -> hit kind label
_HIT_COUNTERS = {"hits_exact": "exact", "hits_resume": "resume", "hits_longest_prefix": "longest_prefix",
                 "misses": "miss"}


class _TreeCollector:
    """Scrape-time series from shared memory (observability table, cache counter files)."""

    def __init__(self, observe_all: Callable[[], list[Any]], counters: Callable[[], dict[str, int]],
                 in_flight: Callable[[], dict[str, int]]) -> None:
        self.observe_all = observe_all
        self.counters = counters
        self.in_flight = in_flight

    def collect(self) -> Iterator[Metric]:
        try:
            records = self.observe_all()
        except Exception:  # the tree is going away: report what the server itself knows
            records = []
        depth = GaugeMetricFamily("llama_actors_queue_depth", "requests admitted into sequences", labels=["model"])
        pending = GaugeMetricFamily("llama_actors_pending", "requests waiting for a sequence", labels=["model"])
        restarts = GaugeMetricFamily("llama_actors_model_restarts", "restarts of the model process", labels=["model"])
        phase = GaugeMetricFamily("llama_actors_model_phase", "1 for the model's current phase",
                                  labels=["model", "phase"])
        for r in records:
            depth.add_metric([r.model_id], r.queue_depth)
            pending.add_metric([r.model_id], r.pending_len)
            restarts.add_metric([r.model_id], r.restarts)
            phase.add_metric([r.model_id, r.phase], 1)
        inflight = GaugeMetricFamily("llama_actors_http_in_flight", "HTTP requests in flight per model",
                                     labels=["model"])
        for model, n in self.in_flight().items():
            inflight.add_metric([model], n)
        yield from (depth, pending, restarts, phase, inflight)
        try:
            c = self.counters()
        except Exception:
            return
        hits = CounterMetricFamily("llama_actors_cache_lookups", "cache lookups by result", labels=["kind"])
        for key, kind in _HIT_COUNTERS.items():
            hits.add_metric([kind], c.get(key, 0))
        tier_bytes = GaugeMetricFamily("llama_actors_cache_bytes", "bytes held per cache tier", labels=["tier"])
        tier_rows = GaugeMetricFamily("llama_actors_cache_rows", "rows held per cache tier", labels=["tier"])
        for tier in ("ram", "ram_file", "disk"):
            tier_bytes.add_metric([tier], c.get(f"bytes_{tier}", 0))
            tier_rows.add_metric([tier], c.get(f"rows_{tier}", 0))
        yield from (hits, tier_bytes, tier_rows)


class Metrics:
    def __init__(self, observe_all: Callable[[], list[Any]], counters: Callable[[], dict[str, int]],
                 in_flight: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.cache_counters = counters
        r = self.registry
        self.requests = Counter("llama_actors_http_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.rejected = Counter("llama_actors_http_rejected", "requests refused by a full model queue (429)",
                                ["model"], registry=r)
        self.ttft = Histogram("llama_actors_http_ttft_seconds",
                              "prompt sent to the model to its first event, at the server", ["model", "endpoint"],
                              buckets=_TTFT_BUCKETS, registry=r)
        self.decode_rate = Histogram("llama_actors_decode_tokens_per_second", "decode rate per request",
                                     ["model"], buckets=_RATE_BUCKETS, registry=r)
        self.tokens = Counter("llama_actors_tokens", "tokens in (prompt) and out (generated)",
                              ["model", "direction"], registry=r)
        self.hits = Counter("llama_actors_request_cache_hits", "how each request's prompt was served",
                            ["model", "kind"], registry=r)
        self.cached_tokens = Counter("llama_actors_cached_prompt_tokens", "prompt tokens read from the cache",
                                     ["model"], registry=r)
        r.register(_TreeCollector(observe_all, counters, in_flight))

    def record_completion(self, model: str, result: mm.Completion) -> None:
        self.tokens.labels(model, "in").inc(int(result.stats.get("prompt_tokens") or 0))
        self.tokens.labels(model, "out").inc(len(result.generated))
        self.hits.labels(model, result.cache_hit_kind).inc()
        self.cached_tokens.labels(model).inc(result.cache_delta.read)
        rate = result.stats.get("tokens_per_s")
        if rate:
            self.decode_rate.labels(model).observe(float(rate))

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "Metrics"]
