"""Prometheus metric objects, named as CONTRACT.md fixes them.

Each app gets its own `CollectorRegistry` so several gateway instances can live
in one process (the tests run two side by side).  Label values are bounded by
construction: `team` comes from the teams file (or `none` before
authentication), `route` from the route table (`gateway.http.app`, `other` for
anything unmatched), `status`/`code` from HTTP status codes and Clearout's
numeric error codes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.context import NO_TEAM

# 1 ms .. 180 s: cache hits sit in the first buckets, queued upstream lookups
# (timeout up to 180 s) in the last ones.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0,
)  # fmt: skip

__all__ = ["NO_TEAM", "Metrics"]

BULK_SOURCES = ("cache", "upstream", "duplicate")
CACHE_RESULTS = ("hit", "miss", "coalesced", "bypass")


# attribute: (type, name, help, labels).  Counter names omit `_total`, which
# prometheus_client appends.
MetricType = type[Counter] | type[Gauge] | type[Histogram]
_METRICS: dict[str, tuple[MetricType, str, str, tuple[str, ...]]] = {
    "upstream_requests": (Counter, "clearout_gateway_upstream_requests",
        "Calls made to the upstream Clearout API, by route and HTTP status.", ("route", "status")),
    "upstream_duration": (Histogram, "clearout_gateway_upstream_duration_seconds",
        "Upstream call latency, by route.", ("route",)),
    "upstream_errors": (Counter, "clearout_gateway_upstream_errors",
        "Upstream failures by route and Clearout error code (HTTP status when none).",
        ("route", "code")),
    "upstream_retries": (Counter, "clearout_gateway_upstream_retries",
        "Upstream calls sent again after a failure that could not have charged twice.",
        ("route",)),
    "upstream_circuit_open": (Gauge, "clearout_gateway_upstream_circuit_open",
        "1 while the circuit breaker on the upstream is open or half-open, else 0.", ()),
    "upstream_credits_available": (Gauge, "clearout_gateway_upstream_credits_available",
        "Credits left on the upstream Clearout account (polled).", ()),
    "upstream_ratelimit_remaining": (Gauge, "clearout_gateway_upstream_ratelimit_remaining",
        "The upstream's x-ratelimit-remaining from its latest answer.", ()),
    "credits_poll_errors": (Counter, "clearout_gateway_credits_poll_errors",
        "Failed polls of the upstream credit balance.", ()),
    "credits_spent": (Counter, "clearout_gateway_credits_spent",
        "Upstream credits charged for a team's lookups.", ("team",)),
    "quota_rejections": (Counter, "clearout_gateway_quota_rejections",
        "Requests refused by a budget, by team and kind.", ("team", "kind")),
    "quota_remaining": (Gauge, "clearout_gateway_quota_remaining_credits",
        "Credits a team has left in its current window.", ("team", "window")),
    "store_errors": (Counter, "clearout_gateway_store_errors",
        "Backing-store (Redis) failures, by the concern that met them.", ("store",)),
    "connections_closed": (Counter, "clearout_gateway_connections_closed",
        "Client connections the gateway closed itself, by reason.", ("reason",)),
    "ready": (Gauge, "clearout_gateway_ready", "1 when the gateway is ready to serve.", ()),
    "bulk_rows": (Counter, "clearout_gateway_bulk_rows",
        "Rows of bulk lists by where their answer came from (cache, upstream, duplicate).",
        ("team", "source")),
}  # fmt: skip


@dataclass
class Metrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )
    upstream_requests: Counter = field(init=False)
    upstream_duration: Histogram = field(init=False)
    upstream_errors: Counter = field(init=False)
    upstream_retries: Counter = field(init=False)
    upstream_circuit_open: Gauge = field(init=False)
    upstream_credits_available: Gauge = field(init=False)
    upstream_ratelimit_remaining: Gauge = field(init=False)
    credits_poll_errors: Counter = field(init=False)
    credits_spent: Counter = field(init=False)
    quota_rejections: Counter = field(init=False)
    quota_remaining: Gauge = field(init=False)
    store_errors: Counter = field(init=False)
    connections_closed: Counter = field(init=False)
    ready: Gauge = field(init=False)
    bulk_rows: Counter = field(init=False)
    hot: HotMetrics = field(init=False)

    def __post_init__(self) -> None:
        for attribute, (kind, name, help_text, labels) in _METRICS.items():
            metric: Counter | Gauge | Histogram
            if kind is Histogram:
                metric = Histogram(
                    name, help_text, labels, registry=self.registry, buckets=LATENCY_BUCKETS
                )
            else:
                metric = kind(name, help_text, labels, registry=self.registry)
            setattr(self, attribute, metric)
        self.hot = HotMetrics()
        self.registry.register(self.hot)

    # The hot-path metrics: plain counters behind a collector (see HotMetrics).
    def observe_request(self, route: str, team: str, status: int, seconds: float) -> None:
        hot = self.hot
        key = (route, team, status)
        hot.requests[key] = hot.requests.get(key, 0) + 1
        buckets = hot.durations.get(route)
        if buckets is None:
            buckets = hot.durations[route] = [0] * (len(LATENCY_BUCKETS) + 1)
            hot.duration_sums[route] = 0.0
        buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        hot.duration_sums[route] += seconds

    def count_cache(self, result: str) -> None:
        self.hot.cache[result] += 1

    def count_saved(self, team: str, credits: int) -> None:
        self.hot.saved[team] = self.hot.saved.get(team, 0) + credits

    def add_team(self, team: str) -> None:
        """Create a team's credit series at 0, so its first credits show in rate()."""
        self.hot.saved.setdefault(team, 0)
        self.credits_spent.labels(team)
        for source in BULK_SOURCES:
            self.bulk_rows.labels(team, source)


class HotMetrics(Collector):
    """Per-request metrics kept as plain numbers and turned into samples at scrape time.

    prometheus_client takes a lock and validates labels on every update,
    which on the cache-hit path cost several microseconds per request; the
    gateway updates these from its single event-loop thread, so plain dict
    increments are safe and the exposition is identical (same names, types,
    labels and buckets).
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.durations: dict[str, list[int]] = {}
        self.duration_sums: dict[str, float] = {}
        self.cache: dict[str, int] = dict.fromkeys(CACHE_RESULTS, 0)
        self.saved: dict[str, int] = {}
        self.inflight = 0

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "clearout_gateway_requests",
            "Requests answered by the gateway, by route, team and HTTP status.",
            labels=["route", "team", "status"],
        )
        for (route, team, status), value in self.requests.items():
            requests.add_metric([route, team, str(status)], value)
        yield requests
        duration = HistogramMetricFamily(
            "clearout_gateway_request_duration_seconds",
            "Time from request received to response ready, by route.",
            labels=["route"],
        )
        bounds = [*(repr(b) for b in LATENCY_BUCKETS), "+Inf"]
        for route, counts in self.durations.items():
            cumulative = list(accumulate(counts))
            duration.add_metric(
                [route], list(zip(bounds, cumulative, strict=True)), self.duration_sums[route]
            )
        yield duration
        cache = CounterMetricFamily(
            "clearout_gateway_cache_requests",
            "Instant lookups by cache outcome.",
            labels=["result"],
        )
        for result, value in self.cache.items():
            cache.add_metric([result], value)
        yield cache
        saved = CounterMetricFamily(
            "clearout_gateway_credits_saved",
            "Credits a team's cache hits would have cost upstream.",
            labels=["team"],
        )
        for team, value in self.saved.items():
            saved.add_metric([team], value)
        yield saved
        yield GaugeMetricFamily(
            "clearout_gateway_inflight_requests", "Requests being handled now.", value=self.inflight
        )
