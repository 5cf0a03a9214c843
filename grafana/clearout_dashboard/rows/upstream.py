"""The Upstream row: how Clearout answers the gateway.

Call rate, error ratio and errors by Clearout error code, upstream latency,
rate limiting (429s and the headroom Clearout reports), the resilience layer
(circuit breaker state and retries), and the credit balance poller.
Upstream metrics carry a route but no team, so the team variable does not
filter this row.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import ValueMap, ValueMappingResult

from ..common import Panel, default_timeseries, threshold_line, thresholds
from ..promql import ROUTE, latency_queries, rate
from ..thresholds import CIRCUIT_OPEN_FOR, UPSTREAM_ERROR_RATIO_THRESHOLD

TITLE = "Upstream"

CALLS = "clearout_gateway_upstream_requests_total"


def upstream_request_rate() -> timeseries.Panel:
    return default_timeseries(
        "Upstream request rate",
        "Calls the gateway made to Clearout per second, by route and status "
        "(getcredits is the gateway's own balance poll).",
        "reqps",
        [(f"sum by (route, status) ({rate(CALLS, ROUTE)})", "{{route}} {{status}}")],
    )


def upstream_error_ratio() -> timeseries.Panel:
    errors = rate(CALLS, ROUTE, 'status!~"2..|524"')
    total = rate(CALLS, ROUTE)
    return (
        default_timeseries(
            "Upstream error ratio",
            "Share of upstream answers that were not 2xx, not counting 524 (Clearout's "
            "queued answer, part of the normal flow). The line is the "
            f"ClearoutUpstreamErrorRatioHigh threshold ({UPSTREAM_ERROR_RATIO_THRESHOLD:.0%}).",
            "percentunit",
            [(f"(sum({errors}) or vector(0))\n/\n(sum({total}) > 0)", "error ratio")],
        )
        .min(0)
        .thresholds(thresholds((None, "green"), (UPSTREAM_ERROR_RATIO_THRESHOLD, "red")))
        .thresholds_style(threshold_line())
    )


def upstream_errors_by_code() -> timeseries.Panel:
    # Joined with "," rather than passed as a second matcher: the committed
    # query has always been spelt without the space sel() would add.
    failures = rate("clearout_gateway_upstream_errors_total", ROUTE + ',code!="524"')
    return default_timeseries(
        "Upstream errors by code",
        "Failed upstream answers per second by route and Clearout error.code (the "
        "HTTP status where the body carries none). Queued lookups (524) are left "
        "out: they are Clearout's normal slow path, not failures.",
        "cps",
        [(f"sum by (route, code) ({failures})", "{{route}} {{code}}")],
    )


def upstream_latency() -> timeseries.Panel:
    return default_timeseries(
        "Upstream latency (p50 / p95 / p99)",
        "Quantiles of Clearout's answer time by route, from the upstream-duration "
        "histogram. Instant lookups that hit Clearout's timeout end as 524.",
        "s",
        latency_queries("clearout_gateway_upstream_duration_seconds", ROUTE),
    ).span(12)


def upstream_throttled() -> timeseries.Panel:
    throttled = rate(CALLS, ROUTE, 'status="429"')
    return default_timeseries(
        "Upstream 429 responses",
        "Upstream answers per second that were 429 (Clearout rate limit hit), by "
        "route. Compare with the rate-limit headroom panel.",
        "reqps",
        [(f"sum by (route) ({throttled})", "{{route}}")],
    ).span(6)


def upstream_ratelimit_remaining() -> timeseries.Panel:
    return default_timeseries(
        "Upstream rate-limit headroom",
        "Requests left in Clearout's current rate-limit window, from the last "
        "x-ratelimit-remaining header each replica saw (lowest across replicas).",
        "short",
        [("min(clearout_gateway_upstream_ratelimit_remaining)", "remaining")],
    ).span(6)


def circuit_breaker() -> timeseries.Panel:
    # The gauge is a state, not a quantity: name the two values and draw
    # steps, so a replica flapping open and closed reads as such.
    states = ValueMap(
        options={
            "0": ValueMappingResult(text="closed", color="green"),
            "1": ValueMappingResult(text="open", color="red"),
        }
    )
    return (
        default_timeseries(
            "Upstream circuit breaker",
            "Per replica: 1 (open) while the circuit breaker on Clearout is open or "
            "half-open, 0 (closed) otherwise. It opens after GATEWAY_BREAKER_FAILURES "
            "failed calls in a row; while open, uncached lookups are answered 503 at "
            "once (cache hits are still served) and one probe every "
            "GATEWAY_BREAKER_OPEN_SECONDS decides whether it closes. "
            f"ClearoutUpstreamCircuitOpen fires when it stays open for {CIRCUIT_OPEN_FOR}.",
            "none",
            [("max by (instance) (clearout_gateway_upstream_circuit_open)", "{{instance}}")],
        )
        .line_interpolation(common.LineInterpolation.STEP_AFTER)
        .mappings([states])
        .min(0)
        .max(1)
        .decimals(0)
        .span(12)
    )


def upstream_retries() -> timeseries.Panel:
    retries = rate("clearout_gateway_upstream_retries_total", ROUTE)
    return default_timeseries(
        "Upstream retries by route",
        "Upstream calls sent again per second, by route. Only calls that cannot have "
        "charged twice are retried (one that never reached Clearout, or a GET that "
        "met a timeout, a dropped connection or a 502/503/504), within a retry budget "
        "of about a tenth of live calls; paid POSTs never are. A steady rate means "
        "Clearout is flapping.",
        "reqps",
        [(f"sum by (route) ({retries})", "{{route}}")],
    ).span(12)


def credits_poll_errors() -> timeseries.Panel:
    poll_errors = rate("clearout_gateway_credits_poll_errors_total")
    return default_timeseries(
        "Credit balance poll errors",
        "Failed getcredits polls per second, per replica. While polls fail the "
        "credits-available figure (and the credit alerts) go stale.",
        "cps",
        [(f"sum by (instance) ({poll_errors})", "{{instance}}")],
    ).span(24)


def panels() -> list[Panel]:
    return [
        upstream_request_rate(),
        upstream_error_ratio(),
        upstream_errors_by_code(),
        upstream_latency(),
        upstream_throttled(),
        upstream_ratelimit_remaining(),
        circuit_breaker(),
        upstream_retries(),
        credits_poll_errors(),
    ]
