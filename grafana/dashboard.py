"""The gateway's Grafana dashboard and Prometheus alert rules, as code.

This module owns what operators look at and get paged by: it builds the
"Clearout gateway" dashboard with grafana-foundation-sdk (one function per
panel, shared defaults in a few helpers) and the Prometheus alerting rules
(thresholds are the constants below). Running it writes the committed
artefacts; ``tests/test_grafana.py`` fails when they are stale:

    python grafana/dashboard.py          # regenerate every artefact
    python grafana/dashboard.py --check  # exit 1 if one is stale

Artefacts: ``grafana/dashboards/clearout-gateway.json`` (file-provisioning
ready, sorted keys), ``grafana/alerts/clearout-gateway-rules.yml`` and its
byte-identical copy ``helm/clearout-gateway/files/prometheus-rules.yml``.
Metric names and labels follow ``CONTRACT.md``; importing has no side effects.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)

GRAFANA_DIR = Path(__file__).resolve().parent
REPO_ROOT = GRAFANA_DIR.parent
DASHBOARD_PATH = GRAFANA_DIR / "dashboards" / "clearout-gateway.json"
RULES_PATH = GRAFANA_DIR / "alerts" / "clearout-gateway-rules.yml"
# The Helm chart embeds this copy into a PrometheusRule with .Files.Get.
HELM_RULES_PATH = REPO_ROOT / "helm" / "clearout-gateway" / "files" / "prometheus-rules.yml"

DASHBOARD_UID = "clearout-gateway"
DASHBOARD_TITLE = "Clearout gateway"

# --- Alert thresholds -------------------------------------------------------
# Upstream credits: warn below this many credits left on the Clearout account.
CREDITS_LOW_THRESHOLD = 2000
# Page when the balance lasts fewer than this many days at the recent pace...
CREDITS_RUNWAY_DAYS = 3
# ...measured over this window: long enough that one bulk upload does not
# page, short enough to notice a runaway client within the day.
CREDITS_SPEND_WINDOW = "6h"
# Error ratios (upstream answers, and the 5xx callers see) over ERROR_WINDOW.
UPSTREAM_ERROR_RATIO_THRESHOLD = 0.05
GATEWAY_5XX_RATIO_THRESHOLD = 0.05
ERROR_WINDOW = "10m"
# A ratio over a handful of requests is noise: below this many requests in
# ERROR_WINDOW the error-ratio alerts stay quiet.
ERROR_MIN_REQUESTS = 20
# A team is "spiking" when quota rejects more than this share of its requests
# and at least QUOTA_REJECTION_MIN_RATE rejections per second (3 a minute).
QUOTA_REJECTION_RATIO_THRESHOLD = 0.25
QUOTA_REJECTION_MIN_RATE = 0.05
# Consecutive failed getcredits polls tolerated within 15 minutes.
CREDITS_POLL_ERRORS_THRESHOLD = 2
# Scrape jobs that are the gateway. The chart's ServiceMonitor takes the job
# from the Service's app.kubernetes.io/name label ("clearout-gateway"); the
# regex also matches "<release>-clearout-gateway" style job names. Change it
# when nameOverride or a hand-written scrape config names the job otherwise.
GATEWAY_JOB_REGEX = ".*clearout-gateway.*"

# --- Query building blocks ---------------------------------------------------
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
TEAM = 'team=~"$team"'
ROUTE = 'route=~"$route"'
# Probes and scrapes: fast, frequent, and /readyz answers 503 by design when
# the store is down, so they would drown the latency and error panels.
NOT_OPERATIONAL = 'route!~"healthz|readyz|metrics"'
# Clearout answers 524 with a queue_id when an instant lookup outlives its
# timeout: the search continues and the caller polls queue_status. It is the
# API's normal slow path, not a failure.
NOT_QUEUED = 'status!="524"'
RATE = "$__rate_interval"
QUANTILES = (0.5, 0.95, 0.99)
ROWS = ("Overview", "Credits", "Cache", "Upstream", "Quotas")

# Values panel_queries() substitutes for the dashboard's variables, so a
# query can be sent to Prometheus as Grafana would with "All" selected.
DEFAULT_QUERY_VARIABLES: Mapping[str, str] = {
    "datasource": "prometheus",
    "team": ".*",
    "route": ".*",
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
}


def _sel(*matchers: str) -> str:
    return "{" + ", ".join(matchers) + "}" if matchers else ""


def _rate(metric: str, *matchers: str, window: str = RATE) -> str:
    return f"rate({metric}{_sel(*matchers)}[{window}])"


def _expr(text: str) -> str:
    """Dedent a multi-line PromQL expression so it reads well in JSON/YAML."""
    return textwrap.dedent(text).strip()


# --- Shared panel defaults --------------------------------------------------


def _target(expr: str, legend: str, ref_id: str) -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .datasource(DATASOURCE)
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
        .range()
    )


_Panel = TypeVar("_Panel", timeseries.Panel, stat.Panel)


def _with_targets(panel: _Panel, queries: Sequence[tuple[str, str]]) -> _Panel:
    for index, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_target(expr, legend, chr(ord("A") + index)))
    return panel


def _thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def default_timeseries(
    title: str, description: str, unit: str, queries: Sequence[tuple[str, str]]
) -> timeseries.Panel:
    """A line chart with the dashboard's look; every panel sets title, unit, text."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .draw_style(common.GraphDrawStyle.LINE)
        .gradient_mode(common.GraphGradientMode.OPACITY)
        .line_interpolation(common.LineInterpolation.LINEAR)
        .span_nulls(False)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_builder.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
        .thresholds_style(
            common_builder.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.OFF)
        )
        .span(8)
        .height(8)
    )
    return _with_targets(panel, queries)


def default_stat(
    title: str, description: str, unit: str, queries: Sequence[tuple[str, str]]
) -> stat.Panel:
    """A single big number (last value) with a sparkline."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .text_mode(common.BigValueTextMode.AUTO)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .orientation(common.VizOrientation.AUTO)
        .thresholds(_thresholds((None, "green")))
        .span(6)
        .height(5)
    )
    return _with_targets(panel, queries)


def _latency_queries(metric: str, *matchers: str) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (route, le) ({_rate(metric + '_bucket', *matchers)}))",
            f"p{round(q * 100)} {{{{route}}}}",
        )
        for q in QUANTILES
    ]


# --- Overview ---------------------------------------------------------------


def request_rate() -> timeseries.Panel:
    return default_timeseries(
        "Request rate by route",
        "Requests the gateway answered, per second, by route (all status codes, "
        "cache hits included). Filtered by the team and route variables.",
        "reqps",
        [
            (
                f"sum by (route) ({_rate('clearout_gateway_requests_total', TEAM, ROUTE)})",
                "{{route}}",
            )
        ],
    )


def responses_by_status() -> timeseries.Panel:
    return default_timeseries(
        "Responses by status",
        "Responses per second by HTTP status. 524 is Clearout's queued answer "
        "(poll queue_status), 402 and 429 are credits, quota or rate limits.",
        "reqps",
        [
            (
                f"sum by (status) ({_rate('clearout_gateway_requests_total', TEAM, ROUTE)})",
                "{{status}}",
            )
        ],
    ).stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL))


def error_ratio() -> timeseries.Panel:
    total = _rate("clearout_gateway_requests_total", TEAM, ROUTE, NOT_OPERATIONAL)
    server_errors = _rate(
        "clearout_gateway_requests_total", TEAM, ROUTE, NOT_OPERATIONAL, 'status=~"5.."', NOT_QUEUED
    )
    caller_errors = _rate(
        "clearout_gateway_requests_total", ROUTE, NOT_OPERATIONAL, 'status=~"[45].."'
    )
    upstream_errors = _rate(
        "clearout_gateway_upstream_requests_total", ROUTE, 'route!="getcredits"', 'status=~"[45].."'
    )
    all_routes = _rate("clearout_gateway_requests_total", ROUTE, NOT_OPERATIONAL)
    return default_timeseries(
        "Error ratio",
        "Share of caller requests (probes and /metrics excluded) answered with a 5xx "
        "other than Clearout's 524 queued answer, and share answered with a 4xx/5xx "
        "the gateway produced itself (auth, quota, its own validation, upstream "
        "unreachable): caller-facing 4xx/5xx minus those that came from the upstream. "
        "The gateway-own series ignores the team filter: upstream metrics carry no team.",
        "percentunit",
        [
            (
                _expr(f"""
                    (sum({server_errors}) or vector(0))
                    /
                    (sum({total}) > 0)
                """),
                "5xx (excluding 524 queued)",
            ),
            (
                _expr(f"""
                    clamp_min(
                      (sum({caller_errors}) or vector(0))
                      - (sum({upstream_errors}) or vector(0)),
                      0
                    )
                    /
                    (sum({all_routes}) > 0)
                """),
                "gateway-own 4xx/5xx",
            ),
        ],
    ).min(0)


def request_latency() -> timeseries.Panel:
    return default_timeseries(
        "Request latency (p50 / p95 / p99)",
        "Quantiles of the time the gateway took to answer, by route, from the "
        "request-duration histogram. Probes and /metrics are left out. The histogram "
        "has no team label, so the team filter does not apply.",
        "s",
        _latency_queries("clearout_gateway_request_duration_seconds", ROUTE, NOT_OPERATIONAL),
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


# --- Credits ----------------------------------------------------------------


def upstream_credits_available() -> stat.Panel:
    return (
        default_stat(
            "Upstream credits available",
            "Credits left on the Clearout account, as last polled from getcredits "
            "(lowest value across replicas: the freshest poll). Turns red below the "
            f"ClearoutCreditsLow alert threshold ({CREDITS_LOW_THRESHOLD}).",
            "short",
            [("min(clearout_gateway_upstream_credits_available)", "available")],
        )
        .thresholds(_thresholds((None, "red"), (CREDITS_LOW_THRESHOLD, "green")))
        .no_value("never polled")
    )


def _spend_per_day(window: str) -> str:
    """Credits spent through the gateway per day (all teams) at a window's pace."""
    return f"sum({_rate('clearout_gateway_credits_spent_total', window=window)}) * 86400"


def credits_days_left() -> stat.Panel:
    available = "min(clearout_gateway_upstream_credits_available)"
    return (
        default_stat(
            "Days of credits left",
            "Forecast: credits available divided by credits spent per day through the "
            "gateway (all teams), at the last hour's pace and at the last day's pace. "
            "Empty when nothing was spent in that window (no forecast to make). Spend "
            "outside the gateway on the same Clearout account is not counted.",
            "d",
            [
                (f"{available}\n/\n({_spend_per_day(window)} > 0)", label)
                for window, label in (("1h", "at last hour's pace"), ("1d", "at last day's pace"))
            ],
        )
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .thresholds(_thresholds((None, "red"), (CREDITS_RUNWAY_DAYS, "orange"), (7, "green")))
        .no_value("no recent spend")
        .decimals(1)
    )


def credits_in_range() -> stat.Panel:
    return default_stat(
        "Credits spent and saved (time range)",
        "Credits paid to Clearout, and credits the cache avoided paying (a lookup "
        "answered from cache or by joining an identical in-flight request), over the "
        "dashboard's time range, for the selected teams.",
        "short",
        [
            (
                f"sum(increase(clearout_gateway_credits_{kind}_total{{{TEAM}}}[$__range]))",
                kind,
            )
            for kind in ("spent", "saved")
        ],
    ).text_mode(common.BigValueTextMode.VALUE_AND_NAME)


def credits_saved_share() -> stat.Panel:
    spent = f"sum(increase(clearout_gateway_credits_spent_total{{{TEAM}}}[$__range]))"
    saved = f"sum(increase(clearout_gateway_credits_saved_total{{{TEAM}}}[$__range]))"
    return (
        default_stat(
            "Share of credits saved",
            "Saved / (spent + saved) over the dashboard's time range: how much of the "
            "would-be Clearout bill the cache absorbed, for the selected teams.",
            "percentunit",
            [(f"{saved}\n/\n(({spent} + {saved}) > 0)", "saved share")],
        )
        .min(0)
        .max(1)
    )


def credits_spent() -> timeseries.Panel:
    return default_timeseries(
        "Credits spent per team",
        "Credits paid to Clearout per hour, by team (a lookup the upstream charged for).",
        "suffix: credits/h",
        [
            (
                f"sum by (team) ({_rate('clearout_gateway_credits_spent_total', TEAM)}) * 3600",
                "{{team}}",
            )
        ],
    ).span(12)


def credits_saved() -> timeseries.Panel:
    return default_timeseries(
        "Credits saved per team",
        "Credits per hour the cache saved, by team: lookups answered from cache or "
        "by an identical in-flight request instead of a paid upstream call.",
        "suffix: credits/h",
        [
            (
                f"sum by (team) ({_rate('clearout_gateway_credits_saved_total', TEAM)}) * 3600",
                "{{team}}",
            )
        ],
    ).span(12)


# --- Cache ------------------------------------------------------------------


def cache_hit_ratio() -> timeseries.Panel:
    lookups = _rate("clearout_gateway_cache_requests_total", 'result=~"hit|miss|coalesced"')
    hits = _rate("clearout_gateway_cache_requests_total", 'result="hit"')
    served = _rate("clearout_gateway_cache_requests_total", 'result=~"hit|coalesced"')
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
        [
            (
                f"sum by (result) ({_rate('clearout_gateway_cache_requests_total')})",
                "{{result}}",
            )
        ],
    )


def cache_coalesced_bypass() -> timeseries.Panel:
    return default_timeseries(
        "Coalesced and bypass rate",
        "Lookups per second that joined an identical in-flight request (coalesced) "
        "or skipped the cache on request (bypass). A bypass rate that grows means a "
        "client is paying for every lookup.",
        "reqps",
        [
            (
                "sum by (result) ("
                + _rate("clearout_gateway_cache_requests_total", 'result=~"coalesced|bypass"')
                + ")",
                "{{result}}",
            )
        ],
    )


def store_errors() -> timeseries.Panel:
    return default_timeseries(
        "Backing store errors",
        "Errors talking to the backing store (Redis or memory) per second, by use. "
        "Cache errors fall back to calling the upstream, so they cost credits; quota "
        "and ownership errors can turn into refused requests.",
        "cps",
        [
            (
                f"sum by (store) ({_rate('clearout_gateway_store_errors_total')})",
                "{{store}}",
            )
        ],
    ).span(24)


# --- Upstream ---------------------------------------------------------------


def upstream_request_rate() -> timeseries.Panel:
    return default_timeseries(
        "Upstream request rate",
        "Calls the gateway made to Clearout per second, by route and status "
        "(getcredits is the gateway's own balance poll).",
        "reqps",
        [
            (
                "sum by (route, status) ("
                + _rate("clearout_gateway_upstream_requests_total", ROUTE)
                + ")",
                "{{route}} {{status}}",
            )
        ],
    )


def upstream_error_ratio() -> timeseries.Panel:
    errors = _rate("clearout_gateway_upstream_requests_total", ROUTE, 'status!~"2..|524"')
    total = _rate("clearout_gateway_upstream_requests_total", ROUTE)
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
        .thresholds(_thresholds((None, "green"), (UPSTREAM_ERROR_RATIO_THRESHOLD, "red")))
        .thresholds_style(
            common_builder.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)
        )
    )


def upstream_errors_by_code() -> timeseries.Panel:
    return default_timeseries(
        "Upstream errors by code",
        "Failed upstream answers per second by route and Clearout error.code (the "
        "HTTP status where the body carries none). Queued lookups (524) are left "
        "out: they are Clearout's normal slow path, not failures.",
        "cps",
        [
            (
                "sum by (route, code) ("
                + _rate("clearout_gateway_upstream_errors_total", ROUTE + ',code!="524"')
                + ")",
                "{{route}} {{code}}",
            )
        ],
    )


def upstream_latency() -> timeseries.Panel:
    return default_timeseries(
        "Upstream latency (p50 / p95 / p99)",
        "Quantiles of Clearout's answer time by route, from the upstream-duration "
        "histogram. Instant lookups that hit Clearout's timeout end as 524.",
        "s",
        _latency_queries("clearout_gateway_upstream_duration_seconds", ROUTE),
    ).span(12)


def upstream_throttled() -> timeseries.Panel:
    return default_timeseries(
        "Upstream 429 responses",
        "Upstream answers per second that were 429 (Clearout rate limit hit), by "
        "route. Compare with the rate-limit headroom panel.",
        "reqps",
        [
            (
                "sum by (route) ("
                + _rate("clearout_gateway_upstream_requests_total", ROUTE, 'status="429"')
                + ")",
                "{{route}}",
            )
        ],
    ).span(6)


def upstream_ratelimit_remaining() -> timeseries.Panel:
    return default_timeseries(
        "Upstream rate-limit headroom",
        "Requests left in Clearout's current rate-limit window, from the last "
        "x-ratelimit-remaining header each replica saw (lowest across replicas).",
        "short",
        [("min(clearout_gateway_upstream_ratelimit_remaining)", "remaining")],
    ).span(6)


def credits_poll_errors() -> timeseries.Panel:
    return default_timeseries(
        "Credit balance poll errors",
        "Failed getcredits polls per second, per replica. While polls fail the "
        "credits-available figure (and the credit alerts) go stale.",
        "cps",
        [
            (
                f"sum by (instance) ({_rate('clearout_gateway_credits_poll_errors_total')})",
                "{{instance}}",
            )
        ],
    ).span(24)


# --- Quotas -----------------------------------------------------------------


def quota_rejections() -> timeseries.Panel:
    return default_timeseries(
        "Quota rejections by team and kind",
        "Requests per second the gateway refused for a team's budget: daily or "
        "monthly credits (402), the team's request rate, or the shared upstream rate "
        "(429).",
        "reqps",
        [
            (
                "sum by (team, kind) ("
                + _rate("clearout_gateway_quota_rejections_total", TEAM)
                + ")",
                "{{team}} {{kind}}",
            )
        ],
    )


def quota_rejected_share() -> timeseries.Panel:
    rejected = _rate("clearout_gateway_quota_rejections_total", TEAM)
    requests = _rate("clearout_gateway_requests_total", TEAM)
    return (
        default_timeseries(
            "Share of requests rejected by quota",
            "Per team, quota rejections divided by all its requests. The "
            "ClearoutQuotaRejectionsSpiking alert fires above "
            f"{QUOTA_REJECTION_RATIO_THRESHOLD:.0%}.",
            "percentunit",
            [
                (
                    f"sum by (team) ({rejected})\n/\n(sum by (team) ({requests}) > 0)",
                    "{{team}}",
                )
            ],
        )
        .min(0)
        .max(1)
    )


def quota_remaining() -> timeseries.Panel:
    return default_timeseries(
        "Quota credits remaining",
        "Credits each team may still spend in the current day and month window "
        "(teams without that quota are absent).",
        "short",
        [
            (
                f"min by (team, window) (clearout_gateway_quota_remaining_credits{{{TEAM}}})",
                "{{team}} ({{window}})",
            )
        ],
    )


def requests_by_team() -> timeseries.Panel:
    return default_timeseries(
        "Requests by team",
        "Requests per second by calling team ('none' is unauthenticated traffic).",
        "reqps",
        [
            (
                f"sum by (team) ({_rate('clearout_gateway_requests_total', TEAM, ROUTE)})",
                "{{team}}",
            )
        ],
    ).span(24)


# --- Assembly ---------------------------------------------------------------


def _rows() -> list[tuple[str, list[Any]]]:
    return [
        (
            "Overview",
            [
                request_rate(),
                responses_by_status(),
                error_ratio(),
                request_latency(),
                inflight_requests(),
                ready_replicas(),
            ],
        ),
        (
            "Credits",
            [
                upstream_credits_available(),
                credits_days_left(),
                credits_in_range(),
                credits_saved_share(),
                credits_spent(),
                credits_saved(),
            ],
        ),
        ("Cache", [cache_hit_ratio(), cache_lookups(), cache_coalesced_bypass(), store_errors()]),
        (
            "Upstream",
            [
                upstream_request_rate(),
                upstream_error_ratio(),
                upstream_errors_by_code(),
                upstream_latency(),
                upstream_throttled(),
                upstream_ratelimit_remaining(),
                credits_poll_errors(),
            ],
        ),
        (
            "Quotas",
            [quota_rejections(), quota_rejected_share(), quota_remaining(), requests_by_team()],
        ),
    ]


def _variables() -> list[Any]:
    def label_variable(name: str, label: str) -> dashboard.QueryVariable:
        return (
            dashboard.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(f"label_values(clearout_gateway_requests_total, {name})")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            # "All" as a regex rather than the list of values seen, so series
            # that appear after the variable was refreshed are still shown.
            .all_value(".*")
        )

    return [
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label_variable("team", "Team"),
        label_variable("route", "Route"),
    ]


def build_dashboard() -> dashboard.Dashboard:
    """The dashboard builder: variables, an annotation, then one row per area."""
    builder = (
        dashboard.Dashboard(DASHBOARD_TITLE)
        .uid(DASHBOARD_UID)
        .description(
            "Caching reverse proxy in front of Clearout's Email Finder API: traffic, "
            "credits, cache, upstream health and team quotas. Generated by "
            "grafana/dashboard.py; edit the code, not this dashboard."
        )
        .tags(["clearout-gateway", "generated"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .timezone("browser")
        .refresh("30s")
        .variables(_variables())
        .annotation(
            dashboard.AnnotationQuery()
            .name("Replica not ready")
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("red")
            .expr("clearout_gateway_ready == 0")
        )
    )
    panel_id = 1
    for title, panels in _rows():
        builder = builder.with_row(dashboard.Row(title).id(panel_id))
        panel_id += 1
        for panel in panels:
            builder = builder.with_panel(panel.id(panel_id))
            panel_id += 1
    return builder


def render_dashboard() -> str:
    """The dashboard JSON exactly as committed: sorted keys, trailing newline."""
    return JSONEncoder(sort_keys=True, indent=2).encode(build_dashboard().build()) + "\n"


def _panels(dashboard_json: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in dashboard_json.get("panels", []):
        yield panel
        # Collapsed rows keep their panels inside the row.
        yield from panel.get("panels", [])


def _substitute(expr: str, variables: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)


def panel_queries(
    dashboard_json: Mapping[str, Any], variables: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """Every panel target's PromQL as ``(panel title, expr)``, ready to run.

    Template variables are replaced as Grafana would with "All" selected
    (``$team`` and ``$route`` become ``.*``, ``$__rate_interval`` a fixed
    window); ``variables`` overrides or adds values (see
    DEFAULT_QUERY_VARIABLES).
    """
    values = {**DEFAULT_QUERY_VARIABLES, **(variables or {})}
    return [
        (panel["title"], _substitute(target["expr"], values))
        for panel in _panels(dashboard_json)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def annotation_queries(
    dashboard_json: Mapping[str, Any], variables: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """The dashboard's PromQL annotations as ``(name, expr)``, variables replaced."""
    values = {**DEFAULT_QUERY_VARIABLES, **(variables or {})}
    return [
        (item["name"], _substitute(item["expr"], values))
        for item in dashboard_json.get("annotations", {}).get("list", [])
        if item.get("expr")
    ]


# --- Alert rules ------------------------------------------------------------

_RUNBOOK_CREDITS = (
    "Top up the Clearout account, or find the team spending fastest on the "
    "dashboard's Credits row and tighten its credits_per_day in the teams file."
)


def _alert(
    name: str,
    expr: str,
    for_: str,
    severity: str,
    summary: str,
    description: str,
    runbook: str,
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": _expr(expr),
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook": runbook,
        },
    }


def alert_rules() -> dict[str, Any]:
    """The Prometheus rules file content (one group)."""
    available = "min(clearout_gateway_upstream_credits_available)"
    spend_per_day = _spend_per_day(CREDITS_SPEND_WINDOW)
    upstream = "clearout_gateway_upstream_requests_total"
    requests = "clearout_gateway_requests_total"
    caller_requests = f"{requests}{_sel(NOT_OPERATIONAL)}"
    caller_5xx = requests + _sel(NOT_OPERATIONAL, 'status=~"5.."', NOT_QUEUED)
    rejections = (
        f"sum by (team, kind) (rate(clearout_gateway_quota_rejections_total[{ERROR_WINDOW}]))"
    )
    rules = [
        _alert(
            "ClearoutCreditsLow",
            f"{available} < {CREDITS_LOW_THRESHOLD}",
            "15m",
            "warning",
            "Clearout account is low on credits",
            'Only {{ printf "%.0f" $value }} Clearout credits are left (threshold '
            f"{CREDITS_LOW_THRESHOLD}). When they run out every uncached lookup fails "
            "with 402.",
            _RUNBOOK_CREDITS,
        ),
        _alert(
            "ClearoutCreditsRunningOut",
            f"""
            {available}
            /
            ({spend_per_day} > 0)
            < {CREDITS_RUNWAY_DAYS}
            """,
            "30m",
            "critical",
            'Clearout credits will run out within {{ printf "%.1f" $value }} days',
            "At the pace of the last "
            f"{CREDITS_SPEND_WINDOW} the Clearout balance lasts "
            '{{ printf "%.1f" $value }} more days '
            f"(alert below {CREDITS_RUNWAY_DAYS}).",
            _RUNBOOK_CREDITS,
        ),
        _alert(
            "ClearoutCreditsPollFailing",
            "increase(clearout_gateway_credits_poll_errors_total[15m]) > "
            f"{CREDITS_POLL_ERRORS_THRESHOLD}",
            "15m",
            "warning",
            "Gateway cannot poll the Clearout credit balance",
            '{{ $labels.instance }} failed {{ printf "%.0f" $value }} getcredits polls '
            "in 15 minutes. The credits-available gauge is stale, so the credit alerts "
            "are blind.",
            "Check the replica's logs for getcredits errors; a 401 means the upstream "
            "token (CLEAROUT_API_TOKEN) is wrong or revoked.",
        ),
        _alert(
            "ClearoutUpstreamErrorRatioHigh",
            f"""
            (
              sum(rate({upstream}{{status!~"2..|524"}}[{ERROR_WINDOW}]))
              /
              sum(rate({upstream}[{ERROR_WINDOW}]))
            ) > {UPSTREAM_ERROR_RATIO_THRESHOLD}
            and
            sum(increase({upstream}[{ERROR_WINDOW}])) >= {ERROR_MIN_REQUESTS}
            """,
            "5m",
            "warning",
            "Clearout upstream is failing {{ $value | humanizePercentage }} of calls",
            "{{ $value | humanizePercentage }} of the gateway's calls to Clearout over "
            f"the last {ERROR_WINDOW} were not 2xx (threshold "
            f"{UPSTREAM_ERROR_RATIO_THRESHOLD:.0%}). 524 answers are not counted: they "
            "mean the lookup was queued and the caller polls queue_status.",
            "See the dashboard's Upstream row (errors by code) and Clearout's status "
            "page; 402 means the account is out of credits, 429 that its rate limit "
            "is hit, 401 that the upstream token is bad.",
        ),
        _alert(
            "ClearoutGatewayServerErrorsHigh",
            f"""
            (
              sum(rate({caller_5xx}[{ERROR_WINDOW}]))
              /
              sum(rate({caller_requests}[{ERROR_WINDOW}]))
            ) > {GATEWAY_5XX_RATIO_THRESHOLD}
            and
            sum(increase({caller_requests}[{ERROR_WINDOW}])) >= {ERROR_MIN_REQUESTS}
            """,
            "5m",
            "critical",
            "Gateway answers {{ $value | humanizePercentage }} of requests with 5xx",
            "{{ $value | humanizePercentage }} of caller requests over the last "
            f"{ERROR_WINDOW} got a 5xx (threshold {GATEWAY_5XX_RATIO_THRESHOLD:.0%}; "
            "524 queued answers and health/metrics probes not counted).",
            "Check the Overview and Upstream rows: 503 with X-Gateway-Error means the "
            "upstream is unreachable, otherwise look for store errors and the "
            "gateway's error logs.",
        ),
        _alert(
            "ClearoutGatewayNotReady",
            "clearout_gateway_ready == 0",
            "5m",
            "critical",
            "Gateway replica {{ $labels.instance }} is not ready",
            "{{ $labels.instance }} has reported not ready for 5 minutes: it cannot "
            "reach its backing store and is out of the load balancer.",
            "Check Redis (GATEWAY_REDIS_URL) reachability from the pod and the "
            "replica's /readyz answer and logs.",
        ),
        _alert(
            "ClearoutGatewayDown",
            f'up{{job=~"{GATEWAY_JOB_REGEX}"}} == 0',
            "5m",
            "critical",
            "Prometheus cannot scrape gateway {{ $labels.instance }}",
            "Scrapes of {{ $labels.instance }} (job {{ $labels.job }}) have failed for "
            "5 minutes: the process is down or /metrics is unreachable.",
            "Check the pod's status, restarts and logs (kubectl describe pod, kubectl "
            "logs --previous).",
        ),
        _alert(
            "ClearoutQuotaRejectionsSpiking",
            f"""
            (
              {rejections}
              / on (team) group_left
              sum by (team) (rate({requests}[{ERROR_WINDOW}]))
            ) > {QUOTA_REJECTION_RATIO_THRESHOLD}
            and
            {rejections} > {QUOTA_REJECTION_MIN_RATE}
            """,
            "10m",
            "warning",
            "Team {{ $labels.team }} is being rejected by its {{ $labels.kind }} quota",
            "{{ $value | humanizePercentage }} of team {{ $labels.team }}'s requests over "
            f"the last {ERROR_WINDOW} were refused by the {{{{ $labels.kind }}}} limit "
            f"(threshold {QUOTA_REJECTION_RATIO_THRESHOLD:.0%}).",
            "Ask the team whether the traffic is expected (a bulk job, a retry loop); "
            "raise its quota in the teams file only if it is.",
        ),
    ]
    return {"groups": [{"name": "clearout-gateway", "rules": rules}]}


class _RulesDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL) as literal blocks, readable in review."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_RulesDumper.add_representer(str, _represent_str)


def render_rules() -> str:
    """The rules file exactly as committed (and copied into the Helm chart)."""
    header = (
        "# Prometheus alerting rules for clearout-gateway.\n"
        "# Generated by grafana/dashboard.py (thresholds are constants there);\n"
        "# regenerate with `python grafana/dashboard.py`, do not edit by hand.\n"
    )
    body = yaml.dump(
        alert_rules(), Dumper=_RulesDumper, sort_keys=False, width=1000, allow_unicode=True
    )
    return header + body


def artefacts() -> dict[Path, str]:
    """Every generated file and its expected content."""
    rules = render_rules()
    return {DASHBOARD_PATH: render_dashboard(), RULES_PATH: rules, HELM_RULES_PATH: rules}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a committed artefact is stale"
    )
    args = parser.parse_args(argv)
    stale = []
    for path, content in artefacts().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    for path in stale:
        verb = "stale" if args.check else "wrote"
        print(f"{verb}: {path.relative_to(REPO_ROOT)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
