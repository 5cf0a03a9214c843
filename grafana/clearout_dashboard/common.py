"""Shared panel defaults: the look every panel of the dashboard has.

Like grafana-foundation-sdk's red-method example, panels start from
``default_timeseries`` or ``default_stat`` and only state what is theirs:
title, description, unit, queries, and the odd override (span, min/max,
thresholds). Every target points at the ``${datasource}`` variable, so the
JSON is provisioning-ready on any Prometheus.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode

from .promql import Query

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

# What a row module hands to the assembly.
Panel = timeseries.Panel | stat.Panel
_AnyPanel = TypeVar("_AnyPanel", timeseries.Panel, stat.Panel)


def target(expr: str, legend: str, ref_id: str) -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .datasource(DATASOURCE)
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
        .range()
    )


def with_targets(panel: _AnyPanel, queries: Sequence[Query]) -> _AnyPanel:
    """Add the queries as targets A, B, C… in order."""
    for index, (expr, legend) in enumerate(queries):
        panel = panel.with_target(target(expr, legend, chr(ord("A") + index)))
    return panel


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    """Absolute thresholds from ``(value, colour)`` steps; the first value is None."""
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def threshold_line() -> common_builder.GraphThresholdsStyleConfig:
    """Draw a time series' thresholds as lines (the default draws none)."""
    return common_builder.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)


def default_timeseries(
    title: str, description: str, unit: str, queries: Sequence[Query]
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
    return with_targets(panel, queries)


def default_stat(title: str, description: str, unit: str, queries: Sequence[Query]) -> stat.Panel:
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
        .thresholds(thresholds((None, "green")))
        .span(6)
        .height(5)
    )
    return with_targets(panel, queries)
