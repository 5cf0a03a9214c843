"""The gateway's Grafana dashboard and Prometheus alert rules, as code.

This package owns what operators look at and get paged by, split the way
grafana-foundation-sdk's red-method example splits a dashboard: shared panel
defaults (``common``), PromQL building blocks (``promql``), one module per
row (``rows``), the alert rules (``alerts``) and their thresholds
(``thresholds``), the assembly that renders the committed artefacts
(``assembly``), a reader of panel queries for the tests (``extract``) and
the command line (``cli``, run by ``grafana/dashboard.py``). Metric names
and labels follow ``CONTRACT.md``; importing has no side effects.
"""

from __future__ import annotations

from .alerts import alert_rules
from .assembly import (
    DASHBOARD_PATH,
    DASHBOARD_UID,
    HELM_RULES_PATH,
    REPO_ROOT,
    RULES_PATH,
    artefacts,
    build_dashboard,
    render_dashboard,
    render_rules,
)
from .cli import main
from .extract import DEFAULT_QUERY_VARIABLES, annotation_queries, panel_queries

__all__ = [
    "DASHBOARD_PATH",
    "DASHBOARD_UID",
    "DEFAULT_QUERY_VARIABLES",
    "HELM_RULES_PATH",
    "REPO_ROOT",
    "RULES_PATH",
    "alert_rules",
    "annotation_queries",
    "artefacts",
    "build_dashboard",
    "main",
    "panel_queries",
    "render_dashboard",
    "render_rules",
]
