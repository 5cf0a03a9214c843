"""Reading PromQL back out of a rendered dashboard, ready to send to Prometheus.

The tests check every panel query with promtool and against a live
Prometheus; they need each target's expression with the template variables
replaced as Grafana would with "All" selected. This module does that on the
dashboard JSON (the committed file or a fresh render), so what is checked is
what Grafana loads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

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

# $name, ${name} and ${name:format}: the spellings Grafana interpolates.
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def _panels(dashboard_json: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in dashboard_json.get("panels", []):
        yield panel
        # Collapsed rows keep their panels inside the row.
        yield from panel.get("panels", [])


def _substitute(expr: str, variables: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return _VARIABLE.sub(replace, expr)


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
