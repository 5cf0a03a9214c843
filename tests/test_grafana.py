"""The dashboard-as-code and alert rules: fresh, complete, and valid PromQL.

Pins that the committed Grafana JSON and Prometheus rules are exactly what
``grafana/dashboard.py`` (the ``grafana/clearout_dashboard`` package)
generates (and the Helm chart's copy is the same bytes), that every panel is documented and uses the contract's metric names
and labels, that the rules pass ``promtool check`` and their unit tests, and
that the ``promtools`` Prometheus helper works against a real server.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import promtools
from tests.promtools import load_dashboard_module

REPO = Path(__file__).resolve().parent.parent
REGENERATE = "regenerate with: python grafana/dashboard.py"


dashboard = load_dashboard_module()

RULES_TEST = REPO / "grafana" / "alerts" / "clearout-gateway-rules.test.yml"
PROVISIONING = REPO / "grafana" / "provisioning" / "dashboards.yml"

# Labels each metric carries (CONTRACT.md, plus the extras the gateway
# exports). Prometheus adds the target labels to all of them.
TARGET_LABELS = {"instance", "job"}
CONTRACT_METRICS: dict[str, set[str]] = {
    "clearout_gateway_requests_total": {"route", "team", "status"},
    "clearout_gateway_request_duration_seconds": {"route"},
    "clearout_gateway_upstream_requests_total": {"route", "status"},
    "clearout_gateway_upstream_duration_seconds": {"route"},
    "clearout_gateway_upstream_errors_total": {"route", "code"},
    "clearout_gateway_cache_requests_total": {"result"},
    "clearout_gateway_credits_spent_total": {"team"},
    "clearout_gateway_credits_saved_total": {"team"},
    "clearout_gateway_upstream_credits_available": set(),
    "clearout_gateway_quota_rejections_total": {"team", "kind"},
}
EXTRA_METRICS: dict[str, set[str]] = {
    "clearout_gateway_ready": set(),
    "clearout_gateway_inflight_requests": set(),
    "clearout_gateway_store_errors_total": {"store"},
    "clearout_gateway_credits_poll_errors_total": set(),
    "clearout_gateway_quota_remaining_credits": {"team", "window"},
    "clearout_gateway_upstream_ratelimit_remaining": set(),
    "clearout_gateway_upstream_retries_total": {"route"},
    "clearout_gateway_upstream_circuit_open": set(),
    "clearout_gateway_connections_closed_total": {"reason"},
}
METRICS = {**CONTRACT_METRICS, **EXTRA_METRICS}
HISTOGRAMS = {
    "clearout_gateway_request_duration_seconds",
    "clearout_gateway_upstream_duration_seconds",
}
SELECTOR = re.compile(r"\b(clearout_gateway_\w+)(\{[^}]*\})?")
MATCHER_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(dashboard.render_dashboard())
    return result


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(dashboard.DASHBOARD_PATH.read_text(encoding="utf-8"))
    return result


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH; it ships with Debian's `prometheus` package "
            "(apt-get install prometheus). These checks must not be skipped."
        )
    return path


def _run_promtool(*args: str | Path) -> str:
    result = subprocess.run(
        [_promtool(), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{output}"
    return output


def _panels(dashboard_json: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard_json["panels"] if panel["type"] != "row"]


def _base_metric(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in HISTOGRAMS:
            return base
    return name


def _all_queries(dashboard_json: dict[str, Any]) -> list[tuple[str, str]]:
    variable_queries = [
        (f"variable {v['name']}", v["query"])
        for v in dashboard_json["templating"]["list"]
        if v["type"] == "query"
    ]
    return [
        *dashboard.panel_queries(dashboard_json),
        *dashboard.annotation_queries(dashboard_json),
        *variable_queries,
        *promtools.rule_expressions(dashboard.RULES_PATH),
    ]


# --- freshness ---------------------------------------------------------------


def test_committed_dashboard_matches_generator() -> None:
    """The JSON in git is byte-for-byte what the code generates today."""
    path = dashboard.DASHBOARD_PATH
    assert path.exists(), f"{path.relative_to(REPO)} is missing; {REGENERATE}"
    assert path.read_text(encoding="utf-8") == dashboard.render_dashboard(), (
        f"{path.relative_to(REPO)} is stale; {REGENERATE}"
    )


def test_committed_rules_match_generator() -> None:
    """The rules file, and the Helm chart's copy of it, are freshly generated."""
    expected = dashboard.render_rules()
    for path in (dashboard.RULES_PATH, dashboard.HELM_RULES_PATH):
        assert path.exists(), f"{path.relative_to(REPO)} is missing; {REGENERATE}"
        assert path.read_text(encoding="utf-8") == expected, (
            f"{path.relative_to(REPO)} is stale; {REGENERATE}"
        )


def test_helm_rules_are_a_byte_identical_copy() -> None:
    """The chart ships exactly the rules that promtool tests here."""
    assert dashboard.HELM_RULES_PATH.read_bytes() == dashboard.RULES_PATH.read_bytes(), (
        f"helm copy differs from the plain rules file; {REGENERATE}"
    )


def test_dashboard_json_has_sorted_keys_and_trailing_newline() -> None:
    text = dashboard.render_dashboard()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


# --- dashboard content ---------------------------------------------------------


def test_dashboard_is_provisioning_ready(generated: dict[str, Any]) -> None:
    """Fixed uid, no numeric id, and every panel and query on ${datasource}."""
    assert generated["uid"] == "clearout-gateway"
    assert "id" not in generated
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    for panel in _panels(generated):
        assert panel["datasource"] == datasource, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == datasource, panel["title"]


def test_every_panel_has_unit_description_and_queries(generated: dict[str, Any]) -> None:
    panels = _panels(generated)
    assert len(panels) >= 20
    for panel in panels:
        title = panel["title"]
        assert panel.get("description", "").strip(), f"{title}: no description"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids, f"{title}: no query"
        assert len(set(ref_ids)) == len(ref_ids) and all(ref_ids), f"{title}: refIds {ref_ids}"
    titles = [panel["title"] for panel in panels]
    assert len(set(titles)) == len(titles), "panel titles must be unique"


def test_panel_ids_are_unique(generated: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in generated["panels"]]
    assert len(set(ids)) == len(ids) and all(ids)


def test_expected_rows_exist_in_order(generated: dict[str, Any]) -> None:
    rows = [panel for panel in generated["panels"] if panel["type"] == "row"]
    assert [row["title"] for row in rows] == [
        "Overview",
        "Credits",
        "Cache",
        "Upstream",
        "Quotas",
    ]
    # Each row is followed by at least one panel of its own.
    kinds = [panel["type"] for panel in generated["panels"]]
    for index, kind in enumerate(kinds):
        if kind == "row":
            assert index + 1 < len(kinds) and kinds[index + 1] != "row"


@pytest.mark.parametrize(
    ("title", "needle"),
    [
        ("Request latency (p50 / p95 / p99)", "histogram_quantile(0.99"),
        ("Error ratio", 'status=~"5.."'),
        ("Error ratio", 'status!="499"'),
        ("Days of credits left", "* 86400 > 0"),
        ("Cache hit ratio", 'result="hit"'),
        ("Coalesced and bypass rate", "coalesced|bypass"),
        ("Upstream errors by code", "sum by (route, code)"),
        ("Upstream 429 responses", 'status="429"'),
        ("Quota rejections by team and kind", "sum by (team, kind)"),
        ("Quota credits remaining", "min by (team, window)"),
        ("Upstream circuit breaker", "max by (instance) (clearout_gateway_upstream_circuit_open)"),
        ("Upstream retries by route", "sum by (route)"),
        ("Connections closed and hang-ups", 'status="499"'),
        ("Connections closed and hang-ups", "sum by (reason)"),
    ],
)
def test_panel_answers_its_question(generated: dict[str, Any], title: str, needle: str) -> None:
    """Spot checks that the key panels query what their titles promise."""
    exprs = [
        expr for panel_title, expr in dashboard.panel_queries(generated) if panel_title == title
    ]
    assert exprs, f"no panel titled {title!r}"
    assert any(needle in expr for expr in exprs), f"{title}: {needle!r} not in {exprs}"


def test_template_variables(generated: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in generated["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("team", "route"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["query"] == f"label_values(clearout_gateway_requests_total, {name})"
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        assert variable["datasource"]["uid"] == "${datasource}"
    exprs = [panel_target["expr"] for p in _panels(generated) for panel_target in p["targets"]]
    assert any('team=~"$team"' in expr for expr in exprs)
    assert any('route=~"$route"' in expr for expr in exprs)


def test_panel_queries_substitutes_every_variable(generated: dict[str, Any]) -> None:
    queries = dashboard.panel_queries(generated)
    assert len(queries) == sum(len(p["targets"]) for p in _panels(generated))
    for title, expr in queries:
        assert "$" not in expr, f"{title}: unsubstituted variable in {expr}"
    custom = dashboard.panel_queries(generated, {"team": "growth", "__rate_interval": "30s"})
    assert any('team=~"growth"' in expr and "[30s]" in expr for _, expr in custom)


def test_only_known_metrics_and_labels_are_queried(generated: dict[str, Any]) -> None:
    """Typo guard: every clearout_gateway_* name and matcher label exists."""
    for where, expr in _all_queries(generated):
        for name, matchers in SELECTOR.findall(expr):
            base = _base_metric(name)
            assert base in METRICS, f"{where}: unknown metric {name}"
            allowed = (
                METRICS[base] | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
            )
            for label in MATCHER_LABEL.findall(matchers):
                assert label in allowed, f"{where}: {name} has no label {label!r}"


def test_dashboard_covers_every_contract_metric(generated: dict[str, Any]) -> None:
    used = {
        _base_metric(name)
        for _, expr in dashboard.panel_queries(generated)
        for name, _ in SELECTOR.findall(expr)
    }
    assert set(CONTRACT_METRICS) <= used, f"not on the dashboard: {set(CONTRACT_METRICS) - used}"


def test_every_panel_query_is_valid_promql(generated: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses each panel query (as a recording rule) after substitution."""
    rules = [
        {"record": f"dashboard:query_{index}", "expr": expr}
        for index, (_, expr) in enumerate(
            dashboard.panel_queries(generated) + dashboard.annotation_queries(generated)
        )
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run_promtool("check", "rules", path)


def test_provisioning_points_at_the_dashboards_folder() -> None:
    config = yaml.safe_load(PROVISIONING.read_text(encoding="utf-8"))
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]


# --- alert rules -----------------------------------------------------------------


def test_rules_pass_promtool_check() -> None:
    output = _run_promtool("check", "rules", dashboard.RULES_PATH)
    assert "SUCCESS" in output


def test_rules_pass_promtool_unit_tests() -> None:
    output = _run_promtool("test", "rules", RULES_TEST)
    assert "SUCCESS" in output


def test_every_alert_is_documented_and_unit_tested() -> None:
    """Each alert has for/severity/annotations and a firing and a quiet test."""
    document = yaml.safe_load(dashboard.RULES_PATH.read_text(encoding="utf-8"))
    alerts = [rule for group in document["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in alerts} >= {
        "ClearoutCreditsLow",
        "ClearoutCreditsRunningOut",
        "ClearoutUpstreamErrorRatioHigh",
        "ClearoutGatewayNotReady",
        "ClearoutGatewayDown",
        "ClearoutQuotaRejectionsSpiking",
        "ClearoutUpstreamCircuitOpen",
    }
    cases = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    for rule in alerts:
        name = rule["alert"]
        assert rule["for"], name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"][key].strip(), f"{name}: no {key}"
        mine = [check for check in checks if check["alertname"] == name]
        assert any(check["exp_alerts"] for check in mine), f"{name}: no firing test"
        assert any(not check["exp_alerts"] for check in mine), f"{name}: no quiet test"


def test_rule_expressions_lists_every_alert() -> None:
    expressions = promtools.rule_expressions(dashboard.RULES_PATH)
    names = [name for name, _ in expressions]
    assert len(names) == len(set(names)) >= 6
    assert all(expr.strip() for _, expr in expressions)


# --- the Prometheus helper -------------------------------------------------------


def test_start_prometheus_scrapes_itself(tmp_path: Path) -> None:
    """The helper starts a real server that scrapes and answers queries."""
    port = promtools.free_port()
    target = f"127.0.0.1:{port}"
    with promtools.start_prometheus(tmp_path, [target], job="self", port=port) as prometheus:
        assert prometheus.url == f"http://{target}"
        prometheus.wait_target_up(timeout=30)
        series = prometheus.query("up")
        assert len(series) == 1
        assert series[0]["metric"] == {"__name__": "up", "instance": target, "job": "self"}
        assert series[0]["value"][1] == "1"
        with pytest.raises(promtools.PrometheusError, match="parse error"):
            prometheus.query("sum(")
        process = prometheus.process
    assert process.poll() is not None, "prometheus still running after the block"
