"""Prometheus metric objects, named as CONTRACT.md fixes them.

Each app gets its own `CollectorRegistry` so several gateway instances can live
in one process (the tests run two side by side).  Label values are bounded by
construction: `team` comes from the teams file (or `none` before
authentication), `route` from the route table (`ROUTES` below, `other` for
anything unmatched), `status`/`code` from HTTP status codes and Clearout's
numeric error codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# 1 ms .. 180 s: cache hits sit in the first buckets, queued upstream lookups
# (timeout up to 180 s) in the last ones.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0,
)  # fmt: skip

ROUTES = (
    "instant",
    "queue_status",
    "bulk",
    "progress_status",
    "download_result",
    "list_cancel",
    "list_remove",
    "getcredits",
    "admin",
    "healthz",
    "readyz",
    "metrics",
    "other",
)

NO_TEAM = "none"
CACHE_RESULTS = ("hit", "miss", "coalesced", "bypass")


@dataclass
class Metrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "clearout_gateway_requests",
            "Requests answered by the gateway, by route, team and HTTP status.",
            ["route", "team", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "clearout_gateway_request_duration_seconds",
            "Time from request received to response ready, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_requests = Counter(
            "clearout_gateway_upstream_requests",
            "Calls made to the upstream Clearout API, by route and HTTP status.",
            ["route", "status"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "clearout_gateway_upstream_duration_seconds",
            "Upstream call latency, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "clearout_gateway_upstream_errors",
            "Upstream failures by route and Clearout error code (HTTP status when none).",
            ["route", "code"],
            registry=r,
        )
        self.cache_requests = Counter(
            "clearout_gateway_cache_requests",
            "Instant lookups by cache outcome.",
            ["result"],
            registry=r,
        )
        self.credits_spent = Counter(
            "clearout_gateway_credits_spent",
            "Upstream credits charged for a team's lookups.",
            ["team"],
            registry=r,
        )
        self.credits_saved = Counter(
            "clearout_gateway_credits_saved",
            "Credits a team's cache hits would have cost upstream.",
            ["team"],
            registry=r,
        )
        self.upstream_credits_available = Gauge(
            "clearout_gateway_upstream_credits_available",
            "Credits left on the upstream Clearout account (polled).",
            registry=r,
        )
        self.quota_rejections = Counter(
            "clearout_gateway_quota_rejections",
            "Requests refused by a budget, by team and kind.",
            ["team", "kind"],
            registry=r,
        )
        self.ready = Gauge(
            "clearout_gateway_ready", "1 when the gateway is ready to serve.", registry=r
        )
        self.inflight = Gauge(
            "clearout_gateway_inflight_requests", "Requests being handled now.", registry=r
        )
        self.store_errors = Counter(
            "clearout_gateway_store_errors",
            "Backing-store (Redis) failures, by the concern that met them.",
            ["store"],
            registry=r,
        )
        self.credits_poll_errors = Counter(
            "clearout_gateway_credits_poll_errors",
            "Failed polls of the upstream credit balance.",
            registry=r,
        )
        self.quota_remaining = Gauge(
            "clearout_gateway_quota_remaining_credits",
            "Credits a team has left in its current window.",
            ["team", "window"],
            registry=r,
        )
        self.upstream_ratelimit_remaining = Gauge(
            "clearout_gateway_upstream_ratelimit_remaining",
            "The upstream's x-ratelimit-remaining from its latest answer.",
            registry=r,
        )
        for result in ("hit", "miss", "coalesced", "bypass"):
            self.cache_requests.labels(result)
        # `.labels()` hashes and validates its arguments on every call; the
        # per-request metrics keep their children (bounded label sets).
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}
        self._cache_children = {r: self.cache_requests.labels(r) for r in CACHE_RESULTS}
        self._saved_children: dict[str, Counter] = {}

    def observe_request(self, route: str, team: str, status: int, seconds: float) -> None:
        child = self._request_children.get((route, team, status))
        if child is None:
            child = self.requests.labels(route, team, str(status))
            self._request_children[(route, team, status)] = child
        child.inc()
        duration = self._duration_children.get(route)
        if duration is None:
            duration = self._duration_children[route] = self.request_duration.labels(route)
        duration.observe(seconds)

    def count_cache(self, result: str) -> None:
        self._cache_children[result].inc()

    def count_saved(self, team: str, credits: int) -> None:
        child = self._saved_children.get(team)
        if child is None:
            child = self._saved_children[team] = self.credits_saved.labels(team)
        child.inc(credits)
