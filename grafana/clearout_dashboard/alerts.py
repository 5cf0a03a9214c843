"""The Prometheus alerting rules: what pages an operator, and what they do then.

One table of alerts (name, condition, ``for``, severity, and the summary,
description and runbook the page carries), built from the thresholds in
``thresholds`` and the matchers in ``promql`` so the rules and the panels
agree. ``alert_rules()`` returns the rules file as data; the assembly writes
it as YAML. Every alert has a firing and a quiet case in
``grafana/alerts/clearout-gateway-rules.test.yml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .promql import NOT_OPERATIONAL, NOT_QUEUED, expr, sel, spend_per_day
from .thresholds import (
    CIRCUIT_OPEN_FOR,
    CREDITS_LOW_THRESHOLD,
    CREDITS_POLL_ERRORS_THRESHOLD,
    CREDITS_RUNWAY_DAYS,
    CREDITS_SPEND_WINDOW,
    ERROR_MIN_REQUESTS,
    ERROR_WINDOW,
    GATEWAY_5XX_RATIO_THRESHOLD,
    GATEWAY_JOB_REGEX,
    QUOTA_REJECTION_MIN_RATE,
    QUOTA_REJECTION_RATIO_THRESHOLD,
    UPSTREAM_ERROR_RATIO_THRESHOLD,
)

GROUP = "clearout-gateway"

_RUNBOOK_CREDITS = (
    "Top up the Clearout account, or find the team spending fastest on the "
    "dashboard's Credits row and tighten its credits_per_day in the teams file."
)

_AVAILABLE = "min(clearout_gateway_upstream_credits_available)"
_UPSTREAM = "clearout_gateway_upstream_requests_total"
_REQUESTS = "clearout_gateway_requests_total"
_CALLER_REQUESTS = f"{_REQUESTS}{sel(NOT_OPERATIONAL)}"
_CALLER_5XX = _REQUESTS + sel(NOT_OPERATIONAL, 'status=~"5.."', NOT_QUEUED)
_REJECTED = "clearout_gateway_quota_rejections_total"
_REJECTIONS = f"sum by (team, kind) (rate({_REJECTED}[{ERROR_WINDOW}]))"


@dataclass(frozen=True)
class Alert:
    """One alerting rule as the table states it; ``rule()`` is its YAML shape."""

    name: str
    condition: str
    for_: str
    severity: str
    summary: str
    description: str
    runbook: str

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": expr(self.condition),
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook": self.runbook,
            },
        }


# The table, in the order the rules file lists the alerts.
ALERTS = (
    Alert(
        "ClearoutCreditsLow",
        f"{_AVAILABLE} < {CREDITS_LOW_THRESHOLD}",
        "15m",
        "warning",
        "Clearout account is low on credits",
        'Only {{ printf "%.0f" $value }} Clearout credits are left (threshold '
        f"{CREDITS_LOW_THRESHOLD}). When they run out every uncached lookup fails "
        "with 402.",
        _RUNBOOK_CREDITS,
    ),
    Alert(
        "ClearoutCreditsRunningOut",
        f"""
        {_AVAILABLE}
        /
        ({spend_per_day(CREDITS_SPEND_WINDOW)} > 0)
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
    Alert(
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
    Alert(
        "ClearoutUpstreamErrorRatioHigh",
        f"""
        (
          sum(rate({_UPSTREAM}{{status!~"2..|524"}}[{ERROR_WINDOW}]))
          /
          sum(rate({_UPSTREAM}[{ERROR_WINDOW}]))
        ) > {UPSTREAM_ERROR_RATIO_THRESHOLD}
        and
        sum(increase({_UPSTREAM}[{ERROR_WINDOW}])) >= {ERROR_MIN_REQUESTS}
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
    Alert(
        "ClearoutGatewayServerErrorsHigh",
        f"""
        (
          sum(rate({_CALLER_5XX}[{ERROR_WINDOW}]))
          /
          sum(rate({_CALLER_REQUESTS}[{ERROR_WINDOW}]))
        ) > {GATEWAY_5XX_RATIO_THRESHOLD}
        and
        sum(increase({_CALLER_REQUESTS}[{ERROR_WINDOW}])) >= {ERROR_MIN_REQUESTS}
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
    Alert(
        "ClearoutUpstreamCircuitOpen",
        "clearout_gateway_upstream_circuit_open == 1",
        CIRCUIT_OPEN_FOR,
        "critical",
        "Circuit breaker on Clearout is open on {{ $labels.instance }}",
        "{{ $labels.instance }} has kept its circuit breaker on the upstream open for "
        f"{CIRCUIT_OPEN_FOR}: Clearout failed several calls in a row and no probe "
        "since has succeeded, so uncached lookups are answered 503 at once (cache "
        "hits are still served).",
        "See the dashboard's Upstream row (errors by code, retries) and Clearout's "
        "status page. If only this replica is affected, check its network path to "
        "Clearout (DNS, egress policy, proxy). The breaker closes by itself on the "
        "first probe that succeeds.",
    ),
    Alert(
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
    Alert(
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
    Alert(
        "ClearoutQuotaRejectionsSpiking",
        f"""
        (
          {_REJECTIONS}
          / on (team) group_left
          sum by (team) (rate({_REQUESTS}[{ERROR_WINDOW}]))
        ) > {QUOTA_REJECTION_RATIO_THRESHOLD}
        and
        {_REJECTIONS} > {QUOTA_REJECTION_MIN_RATE}
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
)


def alert_rules() -> dict[str, Any]:
    """The Prometheus rules file content (one group)."""
    return {"groups": [{"name": GROUP, "rules": [alert.rule() for alert in ALERTS]}]}
