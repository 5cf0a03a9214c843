"""The Cache row: how much upstream work (and credit) the cache absorbs.

Hit ratio, lookups by outcome, the coalesced and bypass rates, and errors
talking to the backing store. The cache metrics carry no team or route
label: the cache is shared by every team, so these panels ignore the
dashboard's filters.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import timeseries

from ..common import Panel, default_timeseries
from ..promql import rate

TITLE = "Cache"

LOOKUPS = "clearout_gateway_cache_requests_total"


def cache_hit_ratio() -> timeseries.Panel:
    lookups = rate(LOOKUPS, 'result=~"hit|miss|coalesced"')
    hits = rate(LOOKUPS, 'result="hit"')
    served = rate(LOOKUPS, 'result=~"hit|coalesced"')
    return (
        default_timeseries(
            "Cache hit ratio",
            "Share of instant lookups answered without a new upstream call: from the "
            "cache (hit), and from the cache or an identical in-flight request (hit + "
            "coalesced). Explicit bypasses are left out of the denominator. The cache "
            "metric has no team or route label.",
            "percentunit",
            [
                (f"(sum({hits}) or vector(0))\n/\n(sum({lookups}) > 0)", "hit"),
                (f"(sum({served}) or vector(0))\n/\n(sum({lookups}) > 0)", "hit + coalesced"),
            ],
        )
        .min(0)
        .max(1)
    )


def cache_lookups() -> timeseries.Panel:
    return default_timeseries(
        "Cache lookups by result",
        "Instant lookups per second by cache outcome: hit, miss (paid upstream "
        "call), coalesced (waited on an identical in-flight request), bypass "
        "(X-Gateway-Cache: bypass).",
        "reqps",
        [(f"sum by (result) ({rate(LOOKUPS)})", "{{result}}")],
    )


def cache_coalesced_bypass() -> timeseries.Panel:
    joined_or_skipped = rate(LOOKUPS, 'result=~"coalesced|bypass"')
    return default_timeseries(
        "Coalesced and bypass rate",
        "Lookups per second that joined an identical in-flight request (coalesced) "
        "or skipped the cache on request (bypass). A bypass rate that grows means a "
        "client is paying for every lookup.",
        "reqps",
        [(f"sum by (result) ({joined_or_skipped})", "{{result}}")],
    )


def store_errors() -> timeseries.Panel:
    return default_timeseries(
        "Backing store errors",
        "Errors talking to the backing store (Redis or memory) per second, by use. "
        "Cache errors fall back to calling the upstream, so they cost credits; quota "
        "and ownership errors can turn into refused requests.",
        "cps",
        [(f"sum by (store) ({rate('clearout_gateway_store_errors_total')})", "{{store}}")],
    ).span(24)


def panels() -> list[Panel]:
    return [cache_hit_ratio(), cache_lookups(), cache_coalesced_bypass(), store_errors()]
