"""The Quotas row: which teams hit their budgets, and how much they have left.

Rejections by team and kind (daily or monthly credits, request rate, the
shared upstream rate), each team's rejected share (the figure the
ClearoutQuotaRejectionsSpiking alert pages on), credits left in the current
windows, and requests by team for scale.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import timeseries

from ..common import Panel, default_timeseries
from ..promql import ROUTE, TEAM, rate
from ..thresholds import QUOTA_REJECTION_RATIO_THRESHOLD

TITLE = "Quotas"

REJECTIONS = "clearout_gateway_quota_rejections_total"
REQUESTS = "clearout_gateway_requests_total"


def quota_rejections() -> timeseries.Panel:
    return default_timeseries(
        "Quota rejections by team and kind",
        "Requests per second the gateway refused for a team's budget: daily or "
        "monthly credits (402), the team's request rate, or the shared upstream rate "
        "(429).",
        "reqps",
        [(f"sum by (team, kind) ({rate(REJECTIONS, TEAM)})", "{{team}} {{kind}}")],
    )


def quota_rejected_share() -> timeseries.Panel:
    rejected = rate(REJECTIONS, TEAM)
    requests = rate(REQUESTS, TEAM)
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
        [(f"sum by (team) ({rate(REQUESTS, TEAM, ROUTE)})", "{{team}}")],
    ).span(24)


def panels() -> list[Panel]:
    return [quota_rejections(), quota_rejected_share(), quota_remaining(), requests_by_team()]
