"""The Credits row: the Clearout balance, how long it lasts, and who spends it.

The balance as last polled, a days-left forecast at two paces, credits spent
and saved by the cache over the time range and per team. Spend is what the
gateway saw; credits spent on the same account outside it are not counted,
which the descriptions say where it matters.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.models import common

from ..common import Panel, default_stat, default_timeseries, thresholds
from ..promql import TEAM, rate, spend_per_day
from ..thresholds import CREDITS_LOW_THRESHOLD, CREDITS_RUNWAY_DAYS

TITLE = "Credits"

# Replicas poll the same account; the lowest value is the freshest poll.
AVAILABLE = "min(clearout_gateway_upstream_credits_available)"


def _increase_in_range(kind: str) -> str:
    return f"sum(increase(clearout_gateway_credits_{kind}_total{{{TEAM}}}[$__range]))"


def upstream_credits_available() -> stat.Panel:
    return (
        default_stat(
            "Upstream credits available",
            "Credits left on the Clearout account, as last polled from getcredits "
            "(lowest value across replicas: the freshest poll). Turns red below the "
            f"ClearoutCreditsLow alert threshold ({CREDITS_LOW_THRESHOLD}).",
            "short",
            [(AVAILABLE, "available")],
        )
        .thresholds(thresholds((None, "red"), (CREDITS_LOW_THRESHOLD, "green")))
        .no_value("never polled")
    )


def credits_days_left() -> stat.Panel:
    return (
        default_stat(
            "Days of credits left",
            "Forecast: credits available divided by credits spent per day through the "
            "gateway (all teams), at the last hour's pace and at the last day's pace. "
            "Empty when nothing was spent in that window (no forecast to make). Spend "
            "outside the gateway on the same Clearout account is not counted.",
            "d",
            [
                (f"{AVAILABLE}\n/\n({spend_per_day(window)} > 0)", label)
                for window, label in (("1h", "at last hour's pace"), ("1d", "at last day's pace"))
            ],
        )
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .thresholds(thresholds((None, "red"), (CREDITS_RUNWAY_DAYS, "orange"), (7, "green")))
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
        [(_increase_in_range(kind), kind) for kind in ("spent", "saved")],
    ).text_mode(common.BigValueTextMode.VALUE_AND_NAME)


def credits_saved_share() -> stat.Panel:
    spent, saved = _increase_in_range("spent"), _increase_in_range("saved")
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


def _per_team_per_hour(kind: str) -> str:
    return f"sum by (team) ({rate(f'clearout_gateway_credits_{kind}_total', TEAM)}) * 3600"


def credits_spent() -> timeseries.Panel:
    return default_timeseries(
        "Credits spent per team",
        "Credits paid to Clearout per hour, by team (a lookup the upstream charged for).",
        "suffix: credits/h",
        [(_per_team_per_hour("spent"), "{{team}}")],
    ).span(12)


def credits_saved() -> timeseries.Panel:
    return default_timeseries(
        "Credits saved per team",
        "Credits per hour the cache saved, by team: lookups answered from cache or "
        "by an identical in-flight request instead of a paid upstream call.",
        "suffix: credits/h",
        [(_per_team_per_hour("saved"), "{{team}}")],
    ).span(12)


def panels() -> list[Panel]:
    return [
        upstream_credits_available(),
        credits_days_left(),
        credits_in_range(),
        credits_saved_share(),
        credits_spent(),
        credits_saved(),
    ]
