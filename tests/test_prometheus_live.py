"""Every dashboard query and alert rule, run by a real Prometheus against a live gateway.

``test_grafana.py`` proves the committed PromQL is well formed and names the
contract's metrics; this module proves it *shows something* when pointed at
the metrics a running gateway really exports. One scenario (a module-scoped
fixture) runs the whole stack for real:

- a private ``redis-server``, the sandbox upstream served in the test process
  (so it can answer 503, 429, 402 and 524 on demand, plus scripted answers
  on any path from a small fault layer in front of it), and ``python -m
  gateway serve`` as a child process with a two-team teams file (team
  ``beta`` has a small quota), the credit-balance poller at 1 s, a circuit
  breaker that opens after three failures for two seconds, and a half-second
  header deadline;
- ``prometheus`` scraping that gateway every second as job ``clearout-gateway``
  (what the rules' ``up{job=~".*clearout-gateway.*"}`` expects), with the
  committed alert rules loaded;
- traffic in two phases separated by a scrape, so every counter, including
  the labelled ones that appear only on first use, has a sample before and
  after an increase (``rate() > 0`` denominators need that): cache misses,
  hits in varied spellings, coalesced and bypassed lookups, upstream 503 /
  429 / 402 / 524 and a queue_status poll, a 401, a 400, a 404, role and
  not-found lookups, a bulk upload and its progress, traffic for both teams,
  lookups and bursts that exceed team ``beta``'s quota, and one lookup made
  while Redis is stopped (the only way ``store_errors_total`` gets a series);
- before those phases, the resilience traffic: a caller hanging up on a slow
  lookup (a 499), a raw socket sending half a request head (closed at the
  header deadline), and three 503s on the balance poll (a GET: retried
  twice, then the breaker opens, Prometheus scrapes it open, and the next
  poll after two seconds is the probe that closes it);
- then it waits until Prometheus scraped three times after the last request
  and evaluates everything at once while the stack is still up.

What is checked, and why this way:

- **Dashboard panels**: every target of the committed JSON (``panel_queries``,
  with ``$team``/``$route`` = ``.*``, ``$__rate_interval`` = 1m, ``$__range`` =
  5m) must parse *and return series* with a finite value (a panel of NaN,
  e.g. a quantile of an all-zero rate, draws nothing). That alone can be
  satisfied by a fallback such as ``or vector(0)``, so each metric selector
  inside the query (name plus its label matchers, exactly as written) must
  return series too.
- **Alert rules**: an alert expression is a condition (``... > 0.05 and ...
  >= 20``) that is rightly empty on a healthy gateway, so requiring the whole
  expression to return series would be wrong. The stricter check that can
  hold is: the expression parses; Prometheus itself loaded and evaluated the
  rule without error (rule health ``ok``); every *value* the condition
  compares returns series (the expression split on its top-level
  ``and``/``or``/``unless`` and cut at each part's top-level comparison:
  ``ratio > 0.05 and sum(increase(x)) >= 20`` checks ``ratio`` and
  ``sum(increase(x))``); and every metric selector in it returns series. A
  value that is empty means the alert could never fire, which is the bug
  this catches.
- **Annotations**: they are conditions too (``ready == 0``): parse, and their
  selectors return series.

Series checks on the quota metrics live in their own test, driven by a team
whose day quota and request rate the traffic exceeds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import math
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.sandbox import Sandbox, SandboxConfig
from tests.conftest import UPSTREAM_TOKEN
from tests.promtools import (
    PrometheusError,
    PrometheusServer,
    load_dashboard_module,
    rule_expressions,
    start_prometheus,
)
from tests.servers import GatewayProcess, RedisServer

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_JSON = REPO / "grafana" / "dashboards" / "clearout-gateway.json"
RULES = REPO / "grafana" / "alerts" / "clearout-gateway-rules.yml"

# The chart's ServiceMonitor names the job after the app; the rules match it.
JOB = "clearout-gateway"
SCRAPE_SECONDS = 1.0
# What Grafana would send with "All" selected and a 5-minute time range. The
# 1m rate window covers the whole scenario, which lasts well under a minute.
VARIABLES = {"team": ".*", "route": ".*", "__rate_interval": "1m", "__range": "5m"}

KEYS = {"alpha": "live-alpha-key-5c1e", "beta": "live-beta-key-93d0"}
BAD_KEY = "live-unknown-key"
# Team beta's quota: two found lookups (4 credits each) a day, 5 requests/s.
BETA_QUOTA = {"credits_per_day": 8, "requests_per_second": 5}
QUOTA_METRIC_PREFIX = "clearout_gateway_quota_"
# A request that hangs must fail the scenario in seconds, not after aiohttp's
# default five minutes.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)
# Resilience settings small enough for the scenario to trip them: the balance
# poll's three attempts (one call, two retries) open the breaker.
BREAKER_FAILURES = 3
BREAKER_OPEN_SECONDS = 2.0
HEADER_TIMEOUT_SECONDS = 0.5
GETCREDITS = "/v2/email_verify/getcredits"
CIRCUIT_OPEN = "clearout_gateway_upstream_circuit_open"


dashboard = load_dashboard_module()


# --- A little PromQL surgery -------------------------------------------------
#
# Just enough lexing to tell what is at the top level of an expression: outside
# (), [], {} and string literals. Alert rules are short and machine-written, so
# this need not be a parser; it only has to find the set operators and
# comparisons that join the parts of a condition.

_SET_OPERATOR = re.compile(r"\b(?:and|or|unless)\b")
_COMPARISON = re.compile(r"==|!=|<=|>=|<|>")
# What may follow a binary operator before its right operand.
_BINARY_MODIFIERS = re.compile(
    r"^\s*(?:bool\b\s*)?(?:(?:on|ignoring)\s*\([^)]*\)\s*)?"
    r"(?:(?:group_left|group_right)\b\s*(?:\([^)]*\))?\s*)?"
)
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")
_SELECTOR = re.compile(r"\b(?:clearout_gateway_[a-z_]+|up)\b(?:\{[^}]*\})?")


def _lex(expr: str) -> tuple[list[int], list[bool]]:
    """Per character: bracket depth, and whether it is inside a string literal."""
    depths: list[int] = []
    quoted: list[bool] = []
    depth, quote, escaped = 0, "", False
    for char in expr:
        if quote:
            depths.append(depth)
            quoted.append(True)
            if escaped:
                escaped = False
            elif char == "\\" and quote != "`":
                escaped = True
            elif char == quote:
                quote = ""
            continue
        if char in "\"'`":
            quote = char
            depths.append(depth)
            quoted.append(True)
            continue
        if char in "([{":
            depth += 1
        depths.append(depth)
        quoted.append(False)
        if char in ")]}":
            depth -= 1
    return depths, quoted


def _split_top_level(expr: str, operator: re.Pattern[str], maxsplit: int = 0) -> list[str]:
    depths, quoted = _lex(expr)
    parts, start = [], 0
    for match in operator.finditer(expr):
        if match.start() < start or depths[match.start()] or quoted[match.start()]:
            continue
        parts.append(expr[start : match.start()])
        start = match.end()
        if maxsplit and len(parts) == maxsplit:
            break
    parts.append(expr[start:])
    return parts


def _unwrap(expr: str) -> str:
    """``(x)`` → ``x`` when the outer parentheses enclose the whole expression."""
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")"):
        depths, _ = _lex(expr)
        if any(depth == 0 for depth in depths[1:-1]):
            break  # "(a) / (b)": the first ")" closes before the end
        expr = expr[1:-1].strip()
    return expr


def condition_values(expr: str) -> list[str]:
    """The expressions an alert condition compares, without the comparisons.

    ``(a / b) > 0.05 and sum(c) >= 20`` gives ``["(a / b)", "sum(c)"]``; a part
    without a comparison is kept whole; number literals are dropped.
    """
    values: list[str] = []
    for part in _split_top_level(expr, _SET_OPERATOR):
        part = _unwrap(_BINARY_MODIFIERS.sub("", part, count=1))
        sides = _split_top_level(part, _COMPARISON, maxsplit=1)
        if len(sides) == 2:
            sides[1] = _BINARY_MODIFIERS.sub("", sides[1], count=1)
        for side in sides:
            # "x > 1 < 2" is "(x > 1) < 2": what the first comparison compares
            # x with ends where the next comparison starts.
            side = _unwrap(_split_top_level(side, _COMPARISON, maxsplit=1)[0])
            if side and not _NUMBER.match(side):
                values.append(side)
    return values


def metric_selectors(expr: str) -> list[str]:
    """Each selector of a gateway metric (or ``up``) as written, label matchers included."""
    _, quoted = _lex(expr)
    found: list[str] = []
    for match in _SELECTOR.finditer(expr):
        if quoted[match.start()]:
            continue
        selector = re.sub(r"\s+", " ", match.group(0))
        if selector not in found:
            found.append(selector)
    return found


def test_promql_helpers() -> None:
    expr = (
        '(\n  sum(rate(x{status!~"2..|524"}[10m]))\n  /\n  sum(rate(x[10m]))\n) > 0.05\n'
        "and\nsum(increase(x[10m])) >= 20"
    )
    assert condition_values(expr) == [
        'sum(rate(x{status!~"2..|524"}[10m]))\n  /\n  sum(rate(x[10m]))',
        "sum(increase(x[10m]))",
    ]
    assert condition_values("x > 1 < 2") == ["x"]
    assert condition_values("min(a) / (sum(rate(b[6h])) * 86400 > 0) < 3") == [
        "min(a) / (sum(rate(b[6h])) * 86400 > 0)"
    ]
    assert condition_values('up{job=~"g"} == 0') == ['up{job=~"g"}']
    assert condition_values("(a > 1)") == ["a"]
    assert condition_values("a / on (team) group_left b > bool 2 unless c") == [
        "a / on (team) group_left b",
        "c",
    ]
    assert condition_values('x{a="and > 1"}') == ['x{a="and > 1"}']
    assert metric_selectors(
        'clearout_gateway_ready == 0 and up{job="x"} or clearout_gateway_ready'
        ' + y{l="clearout_gateway_no"} by (group_left)'
    ) == ["clearout_gateway_ready", 'up{job="x"}']


# --- The scenario ----------------------------------------------------------------


@dataclass
class Check:
    """One expression evaluated by Prometheus, and what it answered."""

    kind: str  # "panel", "annotation", "alert", "alert value", "selector"
    source: str  # panel title, annotation or alert name
    expr: str
    error: str | None = None
    series: int = 0
    numbers: int = 0  # series whose value is a number (not NaN or ±Inf)

    @property
    def quota(self) -> bool:
        return QUOTA_METRIC_PREFIX in self.expr

    def describe(self) -> str:
        outcome = self.error or f"{self.series} series, {self.numbers} with a finite value"
        return f"[{self.kind}] {self.source}: {outcome}\n    {self.expr}"


@dataclass
class Snapshot:
    """Everything the scenario observed, evaluated while the stack was live."""

    checks: list[Check] = field(default_factory=list)
    rule_health: dict[str, str] = field(default_factory=dict)
    x_cache: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    exported: list[str] = field(default_factory=list)
    resilience: dict[str, float | None] = field(default_factory=dict)
    gateway_log: str = ""
    seconds: float = 0.0

    def of(self, *kinds: str) -> list[Check]:
        return [check for check in self.checks if check.kind in kinds]

    def context(self) -> str:
        return (
            f"metrics Prometheus holds: {', '.join(self.exported)}\n"
            f"responses: {dict(self.statuses)}, X-Cache: {dict(self.x_cache)}\n"
            f"resilience traffic in Prometheus: {self.resilience}\n"
            f"gateway log tail:\n{self.gateway_log}"
        )


@dataclass
class Faults:
    """Answers the upstream gives before the sandbox sees the request, by path.

    ``script[path]`` is a list of statuses, used up one per request; an empty
    or missing list lets the request through to the sandbox. The sandbox
    itself cannot fail a GET, which is what the retry and breaker paths need.
    """

    script: dict[str, list[int]] = field(default_factory=dict)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        queued = self.script.get(request.path)
        if queued:
            return web.Response(status=queued.pop(0))
        response: web.StreamResponse = await handler(request)
        return response


class Traffic:
    """Requests to the gateway, remembering the statuses and X-Cache values seen."""

    def __init__(self, session: aiohttp.ClientSession, base: str, snapshot: Snapshot) -> None:
        self.session = session
        self.base = base
        self.snapshot = snapshot

    async def send(
        self, method: str, path: str, key: str | None, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = key
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as resp:
            raw = await resp.read()
            self.snapshot.statuses[resp.status] += 1
            if "X-Cache" in resp.headers:
                self.snapshot.x_cache[resp.headers["X-Cache"]] += 1
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            return resp.status, body if isinstance(body, dict) else {}

    async def lookup(
        self, team: str | None, name: str, domain: str, *, cache: str | None = None, **extra: Any
    ) -> tuple[int, dict[str, Any]]:
        key = KEYS[team] if team else BAD_KEY
        headers = {"X-Gateway-Cache": cache} if cache else {}
        body = {"name": name, "domain": domain, "timeout": 10_000, **extra}
        return await self.send("POST", "/v2/email_finder/instant", key, json=body, headers=headers)

    async def together(self, count: int, team: str, name: str, domain: str) -> None:
        await asyncio.gather(*(self.lookup(team, name, domain) for _ in range(count)))


def _teams_file(path: Path) -> Path:
    digest = {team: hashlib.sha256(key.encode()).hexdigest() for team, key in KEYS.items()}
    quota = ", ".join(f"{name}: {value}" for name, value in BETA_QUOTA.items())
    path.write_text(
        "teams:\n"
        f"  - name: alpha\n    key_sha256: [{digest['alpha']}]\n"
        f"  - name: beta\n    key_sha256: [{digest['beta']}]\n    quota: {{{quota}}}\n",
        encoding="utf-8",
    )
    return path


async def _query(prom: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    return await asyncio.to_thread(prom.query, expr)


async def _last_scrape(prom: PrometheusServer) -> float:
    """Timestamp of the newest scrape sample of the gateway (0 when none yet)."""
    result = await _query(prom, f'timestamp(up{{job="{JOB}"}})')
    return max((float(item["value"][1]) for item in result), default=0.0)


async def _wait_scrapes_after(
    prom: PrometheusServer, moment: float, scrapes: int, timeout: float = 20.0
) -> None:
    """Until ``scrapes`` scrapes started after the wall-clock ``moment``."""
    wanted = moment + 0.05 + (scrapes - 1) * SCRAPE_SECONDS
    deadline = time.monotonic() + timeout
    while (last := await _last_scrape(prom)) < wanted:
        if time.monotonic() > deadline:
            raise TimeoutError(f"last scrape at {last:.2f}, wanted one after {wanted:.2f}")
        await asyncio.sleep(0.2)


async def _redis_outage(traffic: Traffic, redis: RedisServer) -> None:
    """One lookup while Redis is down: the cache falls back and counts a store error."""
    await asyncio.to_thread(redis.stop)
    try:
        status, _ = await traffic.lookup("alpha", "Olga Outage", "example.com")
        assert status == 200, "a Redis outage must not fail a lookup"
    finally:
        await asyncio.to_thread(redis.start)
    deadline = time.monotonic() + 10
    while (await traffic.send("GET", "/readyz", None))[0] != 200:
        assert time.monotonic() < deadline, "gateway did not see Redis come back"
        await asyncio.sleep(0.2)


async def _bulk(traffic: Traffic, tmp: Path) -> None:
    csv = tmp / "people.csv"
    csv.write_text("Name,Domain\nSteven Morris,apple.com\nAnn Lee,example.com\n")
    form = aiohttp.FormData()
    form.add_field("file", csv.read_bytes(), filename="people.csv", content_type="text/csv")
    status, body = await traffic.send("POST", "/v2/email_finder/bulk", KEYS["alpha"], data=form)
    assert status == 200, body
    list_id = body["data"]["list_id"]
    path = f"/v2/email_finder/bulk/progress_status?list_id={list_id}"
    assert (await traffic.send("GET", path, KEYS["alpha"]))[0] == 200


async def _gateway_sample(traffic: Traffic, name: str, **labels: str) -> float | None:
    """The sum of the gateway's own ``/metrics`` samples of ``name`` with ``labels``."""
    async with traffic.session.get(traffic.base + "/metrics") as resp:
        text = await resp.text()
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    return sum(values) if values else None


async def _wait_sample(
    traffic: Traffic, name: str, wanted: Callable[[float | None], bool], **labels: str
) -> None:
    deadline = time.monotonic() + 10
    while not wanted(value := await _gateway_sample(traffic, name, **labels)):
        assert time.monotonic() < deadline, f"{name}{labels} stuck at {value}"
        await asyncio.sleep(0.1)


async def _hang_up(traffic: Traffic) -> None:
    """A caller leaves a slow lookup; the gateway finishes it and counts a 499."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await traffic.lookup("alpha", "Hana Hangup", "slow.test")
    requests = "clearout_gateway_requests_total"
    await _wait_sample(traffic, requests, lambda value: bool(value), status="499")


async def _slow_head(port: int) -> None:
    """Half a request head, then silence: the gateway closes it at its header deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n")
        await writer.drain()
        async with asyncio.timeout(HEADER_TIMEOUT_SECONDS * 20):
            await reader.read()  # until the gateway closes the connection
    finally:
        writer.close()


async def _breaker_flap(traffic: Traffic, faults: Faults, prom: PrometheusServer) -> None:
    """The balance poll meets 503s until the breaker opens; a later poll closes it."""
    faults.script[GETCREDITS] = [503] * BREAKER_FAILURES
    await _wait_sample(traffic, CIRCUIT_OPEN, lambda value: value == 1)
    # Prometheus must hold an "open" sample, or the panel never shows one.
    await _wait_scrapes_after(prom, time.time(), 1)
    await _wait_sample(traffic, CIRCUIT_OPEN, lambda value: value == 0)
    assert not faults.script[GETCREDITS], "the poller did not use up the scripted 503s"


async def _resilience(
    traffic: Traffic, faults: Faults, prom: PrometheusServer, gateway_port: int
) -> None:
    # The hang-up's lookup must not meet an open breaker (it would be answered
    # at once, before the caller leaves), nor close it early by succeeding.
    await asyncio.gather(_hang_up(traffic), _slow_head(gateway_port))
    await _breaker_flap(traffic, faults, prom)


async def _phase(traffic: Traffic, phase: int, tmp: Path) -> None:
    """A round of every kind of traffic; names differ per phase so misses recur."""
    suffix = ("", " Second")[phase - 1]
    people = [("Steven Morris", "apple.com"), ("Jane Doe", "example.com")]
    name, domain = people[phase - 1]
    # Miss, then hits: the same person again and in other spellings.
    await traffic.lookup("alpha", name, domain)
    await traffic.lookup("alpha", name, domain)
    await traffic.lookup("alpha", f"  {name.upper()} ", domain.upper())
    last, first = name.split()[1], name.split()[0]
    await traffic.lookup("alpha", f"{last}, {first}", f"https://www.{domain}/")
    # Coalesced: identical asks while the first is still upstream (slow.test).
    await traffic.together(3, "alpha", f"Slow Person{suffix}", "slow.test")
    # Bypass and refresh.
    await traffic.lookup("alpha", name, domain, cache="bypass")
    await traffic.lookup("alpha", name, domain, cache="refresh")
    # Upstream errors: 503, 429, 402; and a queued 524 followed by its poll.
    for bad_domain in ("unavailable.test", "ratelimited.test", "nocredits.test"):
        await traffic.lookup("alpha", f"Ann Lee{suffix}", bad_domain)
    status, body = await traffic.lookup("alpha", f"Quinn Queue{suffix}", "queued.test", queue=True)
    assert status == 524, body
    qid = body["error"]["additional_info"]["queue_id"]
    await traffic.send("GET", f"/v2/email_finder/instant/queue_status?qid={qid}", KEYS["alpha"])
    # Role and not-found lookups, an unsupported name (1088).
    await traffic.lookup("alpha", ("info", "sales")[phase - 1], domain)
    await traffic.lookup("alpha", f"nobody here{suffix}", domain)
    await traffic.lookup("alpha", "R2 D2", domain)
    # The gateway's own refusals: unknown key, validation, no such route.
    await traffic.lookup(None, name, domain)
    await traffic.send("POST", "/v2/email_finder/instant", KEYS["alpha"], json={"name": name})
    await traffic.send("GET", "/v2/no_such_route", KEYS["alpha"])
    await traffic.send("GET", "/healthz", None)
    await traffic.send("GET", "/readyz", None)
    if phase == 1:
        await _bulk(traffic, tmp)
    # Team beta: hits on alpha's lookups (shared cache: credits saved for beta),
    # found people worth 4 credits each against 8 a day, then a burst over 5/s.
    await traffic.lookup("beta", name, domain)
    for person in (("Tim Cook",), ("Craig Federighi", "Phil Schiller", "Lisa Jackson"))[phase - 1]:
        await traffic.lookup("beta", person, "apple.com")
        await asyncio.sleep(0.25)  # under beta's request rate: these are credit checks
    await traffic.together(12, "beta", name, domain)


async def _check(prom: PrometheusServer, kind: str, source: str, expr: str) -> Check:
    check = Check(kind, source, expr)
    try:
        result = await _query(prom, expr)
    except PrometheusError as exc:
        check.error = str(exc)
    else:
        check.series = len(result)
        check.numbers = sum(math.isfinite(float(item["value"][1])) for item in result)
    return check


async def _query_checks(prom: PrometheusServer) -> list[Check]:
    """Every panel, annotation and alert query, alert values, then each selector once."""
    document = json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))
    checks: list[Check] = []
    selectors: dict[str, str] = {}  # selector -> where it first occurs

    async def run(kind: str, source: str, expr: str, where: str | None = None) -> None:
        checks.append(await _check(prom, kind, source, expr))
        if where is not None:
            for selector in metric_selectors(expr):
                selectors.setdefault(selector, where)

    for title, expr in dashboard.panel_queries(document, VARIABLES):
        await run("panel", title, expr, f"panel {title!r}")
    for name, expr in dashboard.annotation_queries(document, VARIABLES):
        await run("annotation", name, expr, f"annotation {name!r}")
    for name, expr in rule_expressions(RULES):
        await run("alert", name, expr, f"alert {name}")
        for value in condition_values(expr):
            await run("alert value", name, value)
    for selector, source in selectors.items():
        await run("selector", source, selector)
    return checks


async def _rule_health(prom: PrometheusServer) -> dict[str, str]:
    health: dict[str, str] = {}
    groups = (await asyncio.to_thread(prom.api, "rules", type="alert"))["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        state = rule.get("health", "?")
        health[rule["name"]] = f"{state}: {rule['lastError']}" if rule.get("lastError") else state
    return health


# What the resilience traffic must have left in Prometheus (see _resilience).
RESILIENCE_QUERIES = {
    "breaker seen open": f"max_over_time({CIRCUIT_OPEN}[5m])",
    "breaker now": f"max({CIRCUIT_OPEN})",
    "getcredits retries": 'sum(clearout_gateway_upstream_retries_total{route="getcredits"})',
    "header timeouts": 'sum(clearout_gateway_connections_closed_total{reason="header_timeout"})',
    "hang-ups": 'sum(clearout_gateway_requests_total{status="499"})',
}


async def _evaluate(prom: PrometheusServer, snapshot: Snapshot) -> None:
    snapshot.checks = await _query_checks(prom)
    snapshot.rule_health = await _rule_health(prom)
    names = await _query(prom, 'count by (__name__) ({__name__=~"clearout_gateway_.*"})')
    snapshot.exported = sorted(item["metric"]["__name__"] for item in names)
    for label, expr in RESILIENCE_QUERIES.items():
        result = await _query(prom, expr)
        snapshot.resilience[label] = float(result[0]["value"][1]) if result else None


async def _scenario(tmp: Path) -> Snapshot:
    snapshot = Snapshot()
    started = time.monotonic()
    sandbox = Sandbox(
        SandboxConfig(
            token=UPSTREAM_TOKEN, slow_seconds=1.0, queue_seconds=0.5, bulk_seconds=0.5,
            spool_dir=tmp,
        )
    )  # fmt: skip
    faults = Faults()
    upstream_app = sandbox.make_app()
    upstream_app.middlewares.append(faults.middleware)
    upstream = TestServer(upstream_app, host="127.0.0.1")
    await upstream.start_server()
    redis = RedisServer(tmp)
    gateway: GatewayProcess | None = None
    try:
        await asyncio.to_thread(redis.start)
        gateway = GatewayProcess(
            {
                "CLEAROUT_API_TOKEN": UPSTREAM_TOKEN,
                "GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{upstream.port}/v2",
                "GATEWAY_TEAMS_FILE": str(_teams_file(tmp / "teams.yaml")),
                "GATEWAY_REDIS_URL": redis.url,
                "GATEWAY_CREDITS_POLL_SECONDS": "1",
                "GATEWAY_QUEUE_POLL_SECONDS": "1",
                "GATEWAY_SPOOL_DIR": str(tmp),
                "GATEWAY_SHUTDOWN_GRACE_SECONDS": "2",
                # Team alpha's lookup during the Redis outage must not be refused
                # for a store error; the deny policy is another test's business.
                "GATEWAY_QUOTA_ON_STORE_ERROR": "allow",
                "GATEWAY_UPSTREAM_RETRIES": "2",
                "GATEWAY_BREAKER_FAILURES": str(BREAKER_FAILURES),
                "GATEWAY_BREAKER_OPEN_SECONDS": str(BREAKER_OPEN_SECONDS),
                "GATEWAY_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_SECONDS),
            },
            tmp,
        )
        target = f"127.0.0.1:{gateway.port}"
        with start_prometheus(
            tmp, [target], f"{SCRAPE_SECONDS:g}s", job=JOB, rule_files=[RULES]
        ) as prom:
            try:
                await asyncio.to_thread(gateway.start)
                await asyncio.to_thread(prom.wait_target_up, 20.0, JOB)
                async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
                    traffic = Traffic(session, gateway.url, snapshot)
                    await _redis_outage(traffic, redis)
                    await _resilience(traffic, faults, prom, gateway.port)
                    await _phase(traffic, 1, tmp)
                    await _wait_scrapes_after(prom, time.time(), 1)
                    await _phase(traffic, 2, tmp)
                    await _wait_scrapes_after(prom, time.time(), 3)
                await _evaluate(prom, snapshot)
            finally:
                await asyncio.to_thread(_stop_gateway, gateway)
                with contextlib.suppress(OSError):
                    snapshot.gateway_log = _log_digest(gateway.output())
    finally:
        if gateway is not None:
            await asyncio.to_thread(_stop_gateway, gateway)
        await asyncio.to_thread(redis.stop)
        await upstream.close()
    snapshot.seconds = time.monotonic() - started
    return snapshot


def _log_digest(log: str) -> str:
    """The gateway's warnings and errors, then its last lines (access lines are many)."""
    lines = log.splitlines()
    trouble = [line for line in lines if '"level": "warning"' in line or '"level": "error"' in line]
    return "\n".join([*trouble[-10:], "...", *lines[-5:]])


def _stop_gateway(gateway: GatewayProcess) -> None:
    try:
        gateway.stop(timeout=15)
    except subprocess.TimeoutExpired:
        assert gateway.proc is not None
        gateway.proc.kill()
        gateway.proc.wait()
        gateway.proc = None


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    """Run the scenario once, on its own event loop in a worker thread.

    Its own loop keeps the module-scoped stack independent of the per-test
    loops pytest-asyncio manages; the thread keeps the main thread's event
    loop state untouched.
    """
    tmp = tmp_path_factory.mktemp("prometheus-live")

    def run() -> Snapshot:
        return asyncio.run(_scenario(tmp))

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def _report(title: str, failed: list[Check], snapshot: Snapshot) -> str:
    lines = "\n".join(check.describe() for check in failed)
    return f"{title} ({len(failed)}):\n{lines}\n\n{snapshot.context()}"


# --- The checks ---------------------------------------------------------------


def test_the_traffic_reached_every_path(live: Snapshot) -> None:
    """The scenario did what the queries below rely on (a cheap first diagnosis)."""
    assert {"MISS", "HIT", "COALESCED", "BYPASS"} <= set(live.x_cache), live.context()
    assert {200, 400, 401, 402, 404, 429, 503, 524} <= set(live.statuses), live.context()
    assert live.seconds < 60, f"scenario took {live.seconds:.1f} s"


def test_the_resilience_traffic_moved_the_new_metrics(live: Snapshot) -> None:
    """Prometheus saw the breaker open and close, retries, a header timeout and a 499."""
    seen = live.resilience
    assert seen["breaker seen open"] == 1, live.context()
    assert seen["breaker now"] == 0, live.context()
    # One poll: the call and two retries, all 503, opened the breaker.
    assert seen["getcredits retries"] == BREAKER_FAILURES - 1, live.context()
    assert (seen["header timeouts"] or 0) >= 1, live.context()
    assert (seen["hang-ups"] or 0) >= 1, live.context()


def test_every_query_parses(live: Snapshot) -> None:
    """Panels, annotations, alert rules and their parts: all valid PromQL (quota ones too)."""
    assert live.of("panel"), "no panel queries found in the dashboard JSON"
    assert len(live.of("alert")) == len(rule_expressions(RULES))
    failed = [check for check in live.checks if check.error]
    assert not failed, _report("queries Prometheus refused", failed, live)


def test_prometheus_evaluates_every_alert_rule(live: Snapshot) -> None:
    names = [name for name, _ in rule_expressions(RULES)]
    assert sorted(live.rule_health) == sorted(names), live.rule_health
    unhealthy = {name: health for name, health in live.rule_health.items() if health != "ok"}
    assert not unhealthy, unhealthy


def _empty(check: Check) -> bool:
    """Parsed, but nothing to draw or compare: no series, or only NaN / ±Inf values."""
    return check.error is None and check.numbers == 0


def test_every_panel_query_and_every_selector_returns_series(live: Snapshot) -> None:
    """Panel queries, and each selector in any panel, annotation or alert rule."""
    failed = [c for c in live.of("panel", "selector") if not c.quota and _empty(c)]
    assert not failed, _report("dashboard queries and selectors without series", failed, live)


def test_every_alert_compares_values_that_exist(live: Snapshot) -> None:
    values = live.of("alert value")
    assert {check.source for check in values} == {name for name, _ in rule_expressions(RULES)}
    failed = [check for check in values if not check.quota and _empty(check)]
    assert not failed, _report("alert values without series", failed, live)


def test_quota_queries_return_series(live: Snapshot) -> None:
    """The quota panels and the quota alert's values return series."""
    quota = [check for check in live.of("panel", "selector", "alert value") if check.quota]
    assert quota, "no quota queries found: the dashboard or the rules lost them"
    failed = [check for check in quota if _empty(check)]
    assert not failed, _report("quota queries without series", failed, live)
