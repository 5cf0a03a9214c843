"""The Overview row: what callers get from the gateway.

Request rate, answers by status, the error ratios that matter (server errors
Clearout's queued 524 aside, and errors the gateway produced itself), request
latency, load and readiness. Most panels honour the team and route variables;
where a metric has no team label the description says so.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.models import common

from ..common import Panel, default_stat, default_timeseries
from ..promql import NOT_OPERATIONAL, NOT_QUEUED, ROUTE, TEAM, Query, expr, latency_queries, rate

TITLE = "Overview"

REQUESTS = "clearout_gateway_requests_total"
# nginx's convention, which the gateway follows: the caller hung up first.
HUNG_UP = 'status="499"'
HUNG_UP_NOT = 'status!="499"'


def request_rate() -> timeseries.Panel:
    return default_timeseries(
        "Request rate by route",
        "Requests the gateway answered, per second, by route (all status codes, "
        "cache hits included). Filtered by the team and route variables.",
        "reqps",
        [(f"sum by (route) ({rate(REQUESTS, TEAM, ROUTE)})", "{{route}}")],
    )


def responses_by_status() -> timeseries.Panel:
    return default_timeseries(
        "Responses by status",
        "Responses per second by HTTP status. 524 is Clearout's queued answer "
        "(poll queue_status), 402 and 429 are credits, quota or rate limits, 499 a "
        "caller that hung up before its answer.",
        "reqps",
        [(f"sum by (status) ({rate(REQUESTS, TEAM, ROUTE)})", "{{status}}")],
    ).stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL))


def _server_error_ratio() -> Query:
    total = rate(REQUESTS, TEAM, ROUTE, NOT_OPERATIONAL)
    server_errors = rate(REQUESTS, TEAM, ROUTE, NOT_OPERATIONAL, 'status=~"5.."', NOT_QUEUED)
    return (
        expr(f"""
            (sum({server_errors}) or vector(0))
            /
            (sum({total}) > 0)
        """),
        "5xx (excluding 524 queued)",
    )


def _gateway_own_error_ratio() -> Query:
    # Caller-facing 4xx/5xx minus the upstream's: what is left the gateway
    # produced. Neither side may carry a team matcher (upstream metrics have
    # no team), or the subtraction would mix filtered and unfiltered traffic.
    # A 499 is the caller leaving, not an answer the gateway chose to give.
    caller_errors = rate(REQUESTS, ROUTE, NOT_OPERATIONAL, 'status=~"[45].."', HUNG_UP_NOT)
    upstream_errors = rate(
        "clearout_gateway_upstream_requests_total", ROUTE, 'route!="getcredits"', 'status=~"[45].."'
    )
    all_routes = rate(REQUESTS, ROUTE, NOT_OPERATIONAL)
    return (
        expr(f"""
            clamp_min(
              (sum({caller_errors}) or vector(0))
              - (sum({upstream_errors}) or vector(0)),
              0
            )
            /
            (sum({all_routes}) > 0)
        """),
        "gateway-own 4xx/5xx",
    )


def error_ratio() -> timeseries.Panel:
    return default_timeseries(
        "Error ratio",
        "Share of caller requests (probes and /metrics excluded) answered with a 5xx "
        "other than Clearout's 524 queued answer, and share answered with a 4xx/5xx "
        "the gateway produced itself (auth, quota, its own validation, upstream "
        "unreachable): caller-facing 4xx/5xx minus those that came from the upstream, "
        "and not counting 499 (the caller hung up). The gateway-own series ignores the "
        "team filter: upstream metrics carry no team.",
        "percentunit",
        [_server_error_ratio(), _gateway_own_error_ratio()],
    ).min(0)


def request_latency() -> timeseries.Panel:
    return default_timeseries(
        "Request latency (p50 / p95 / p99)",
        "Quantiles of the time the gateway took to answer, by route, from the "
        "request-duration histogram. Probes and /metrics are left out. The histogram "
        "has no team label, so the team filter does not apply.",
        "s",
        latency_queries("clearout_gateway_request_duration_seconds", ROUTE, NOT_OPERATIONAL),
    ).span(12)


def inflight_requests() -> timeseries.Panel:
    return default_timeseries(
        "In-flight requests",
        "Requests being handled right now, per gateway replica.",
        "short",
        [("sum by (instance) (clearout_gateway_inflight_requests)", "{{instance}}")],
    ).span(6)


def ready_replicas() -> stat.Panel:
    return (
        default_stat(
            "Ready replicas",
            "Replicas reporting ready (backing store reachable) out of all replicas "
            "Prometheus scrapes. Fewer ready than total means a replica cannot reach "
            "Redis and is out of the load balancer.",
            "none",
            [
                ("sum(clearout_gateway_ready)", "ready"),
                ("count(clearout_gateway_ready)", "total"),
            ],
        )
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .height(8)
    )


def connections_closed_and_hang_ups() -> timeseries.Panel:
    closed = rate("clearout_gateway_connections_closed_total")
    hung_up = rate(REQUESTS, TEAM, ROUTE, HUNG_UP)
    return default_timeseries(
        "Connections closed and hang-ups",
        "Per second: client connections the gateway closed itself, by reason "
        "(header_timeout: a request head still incomplete after "
        "GATEWAY_HEADER_TIMEOUT_SECONDS, a slow or stuck client), and requests whose "
        "caller hung up before the answer, by route (status 499: not a server error, "
        "and left out of the error ratio). Hang-ups that rise with latency are callers "
        "giving up on slow answers; header timeouts point at clients or the network "
        "in front of the gateway. The connection series has no team or route label.",
        "cps",
        [
            (f"sum by (reason) ({closed})", "closed: {{reason}}"),
            (f"sum by (route) ({hung_up})", "hung up (499): {{route}}"),
        ],
    ).span(24)


def panels() -> list[Panel]:
    return [
        request_rate(),
        responses_by_status(),
        error_ratio(),
        request_latency(),
        inflight_requests(),
        ready_replicas(),
        connections_closed_and_hang_ups(),
    ]
