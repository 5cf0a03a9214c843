"""PromQL building blocks shared by the panels and the alert rules.

The label matchers every query agrees on (which routes are operational noise,
which status is Clearout's normal slow path), the dashboard's template
variables as matchers, and small helpers that assemble selectors, rates,
latency quantiles and the credits-per-day pace. Plain strings in, plain
strings out: nothing here knows about Grafana.
"""

from __future__ import annotations

import textwrap

TEAM = 'team=~"$team"'
ROUTE = 'route=~"$route"'
# Probes and scrapes: fast, frequent, and /readyz answers 503 by design when
# the store is down, so they would drown the latency and error panels.
NOT_OPERATIONAL = 'route!~"healthz|readyz|metrics"'
# Clearout answers 524 with a queue_id when an instant lookup outlives its
# timeout: the search continues and the caller polls queue_status. It is the
# API's normal slow path, not a failure.
NOT_QUEUED = 'status!="524"'
# Grafana widens this to at least four scrape intervals, so a rate never
# spans too few samples whatever the zoom.
RATE = "$__rate_interval"
QUANTILES = (0.5, 0.95, 0.99)

# One PromQL query and the legend its series get: what a panel target needs.
Query = tuple[str, str]


def sel(*matchers: str) -> str:
    """``{a, b}`` from label matchers; nothing at all when there are none."""
    return "{" + ", ".join(matchers) + "}" if matchers else ""


def rate(metric: str, *matchers: str, window: str = RATE) -> str:
    return f"rate({metric}{sel(*matchers)}[{window}])"


def expr(text: str) -> str:
    """Dedent a multi-line PromQL expression so it reads well in JSON/YAML."""
    return textwrap.dedent(text).strip()


def spend_per_day(window: str) -> str:
    """Credits spent through the gateway per day (all teams) at a window's pace."""
    return f"sum({rate('clearout_gateway_credits_spent_total', window=window)}) * 86400"


def latency_queries(metric: str, *matchers: str) -> list[Query]:
    """p50/p95/p99 of a duration histogram, one series per route."""
    return [
        (
            f"histogram_quantile({q}, sum by (route, le) ({rate(metric + '_bucket', *matchers)}))",
            f"p{round(q * 100)} {{{{route}}}}",
        )
        for q in QUANTILES
    ]
