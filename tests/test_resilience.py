"""Upstream faults: which calls are retried, the retry budget, and the circuit breaker.

The upstream here is a real aiohttp server on loopback whose answers each
test scripts (`FlakyUpstream`); nothing in the client is patched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.http.keys import BUDGETS
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.upstream import Upstream, open_session
from gateway.upstream.client import Resilience
from gateway.upstream.resilience import CircuitBreaker, RetryBudget
from tests.conftest import GatewayFactory, auth
from tests.servers import free_port
from tests.test_hardening import metric_value

INSTANT = "/v2/email_finder/instant"
FOUND = {
    "status": "success",
    "data": {"emails": [{"email_address": "ann.lee@apple.com", "role": "no"}], "total": 1},
}


class FlakyUpstream:
    """A Clearout stand-in whose next answers per path are scripted: `503`, `ok`, `hang`."""

    def __init__(self) -> None:
        self.script: dict[str, list[str]] = {}
        self.default = "ok"
        self.calls: dict[str, int] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/v2/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.removeprefix("/v2")
        self.calls[path] = self.calls.get(path, 0) + 1
        queue = self.script.get(path, [])
        action = queue.pop(0) if queue else self.default
        if action == "503":
            return web.Response(status=503)
        if action == "hang":
            await asyncio.sleep(30)
        if path.endswith("queue_status"):
            return web.json_response({"status": "success", "data": {"query_status": "running"}})
        return web.json_response(FOUND)


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[FlakyUpstream, str]]:
    upstream = FlakyUpstream()
    server = TestServer(upstream.app(), host="127.0.0.1")
    await server.start_server()
    yield upstream, f"http://127.0.0.1:{server.port}/v2"
    await server.close()


@pytest.fixture
async def flaky_gateway(
    flaky: tuple[FlakyUpstream, str], make_gateway: GatewayFactory
) -> TestClient[Any, Any]:
    return await make_gateway(upstream_url=flaky[1], breaker_failures=0)


async def test_get_routes_are_retried_on_5xx(
    flaky: tuple[FlakyUpstream, str], flaky_gateway: TestClient[Any, Any]
) -> None:
    """queue_status (a GET) that meets two 503s is asked again and answers the caller 200."""
    upstream, _ = flaky
    upstream.script["/email_finder/instant/queue_status"] = ["503", "503"]
    await flaky_gateway.app[BUDGETS].ownership.record("queue", "q1", "alpha")
    resp = await flaky_gateway.get("/v2/email_finder/instant/queue_status",
                                   params={"qid": "q1"}, headers=auth())  # fmt: skip
    assert resp.status == 200
    assert upstream.calls["/email_finder/instant/queue_status"] == 3
    retries = await metric_value(flaky_gateway, "clearout_gateway_upstream_retries_total",
                                 route="queue_status")  # fmt: skip
    assert retries == 2


async def test_a_paid_post_that_reached_upstream_is_never_retried(
    flaky: tuple[FlakyUpstream, str], flaky_gateway: TestClient[Any, Any]
) -> None:
    """An instant lookup answered 503 is relayed as is: a second send could pay twice."""
    upstream, _ = flaky
    upstream.script["/email_finder/instant"] = ["503"]
    resp = await flaky_gateway.post(INSTANT, json={"name": "Ann Lee", "domain": "apple.com"},
                                    headers=auth())  # fmt: skip
    assert resp.status == 503
    assert upstream.calls["/email_finder/instant"] == 1


async def test_a_call_that_never_reached_upstream_is_retried_even_if_paid(
    make_gateway: GatewayFactory,
) -> None:
    """Connection refused means nothing was sent: the paid lookup is tried again (3 attempts)."""
    closed = f"http://127.0.0.1:{free_port()}/v2"
    gateway = await make_gateway(upstream_url=closed, breaker_failures=0)
    resp = await gateway.post(INSTANT, json={"name": "Ann Lee", "domain": "apple.com"},
                              headers=auth())  # fmt: skip
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == 9500
    attempts = await metric_value(gateway, "clearout_gateway_upstream_requests_total",
                                  route="instant", status="unreachable")  # fmt: skip
    assert attempts == 3


async def test_retries_stop_when_the_budget_is_spent(flaky: tuple[FlakyUpstream, str]) -> None:
    """With an empty retry budget a failing GET is sent once: retries never amplify a storm."""
    upstream, url = flaky
    upstream.default = "503"
    session = await open_session()
    try:
        empty = RetryBudget(ratio=0.0, floor_per_second=0.0)
        client = Upstream(session, url, "token", Metrics(), Resilience(retries=5, budget=empty))
        answer = await client.call("progress_status", "GET", "/email_finder/bulk/progress_status",
                                   params={"list_id": "x"}, timeout=5)  # fmt: skip
        assert answer.status == 503
        assert upstream.calls["/email_finder/bulk/progress_status"] == 1
        # A budget of 10% lets 1 retry through per 10 calls, plus its small floor.
        budget = RetryBudget(ratio=0.1, floor_per_second=0.0)
        client = Upstream(session, url, "token", Metrics(), Resilience(retries=5, budget=budget))
        upstream.calls.clear()
        for _ in range(20):
            await client.call("progress_status", "GET", "/email_finder/bulk/progress_status",
                              params={"list_id": "x"}, timeout=5)  # fmt: skip
        assert upstream.calls["/email_finder/bulk/progress_status"] == 20 + 2
    finally:
        await session.close()


async def test_retries_stay_within_the_callers_timeout(flaky: tuple[FlakyUpstream, str]) -> None:
    """A GET that times out is not retried past the call's own deadline."""
    upstream, url = flaky
    upstream.default = "hang"
    session = await open_session()
    try:
        generous = RetryBudget(floor_per_second=100.0, cap=100.0)
        client = Upstream(session, url, "token", Metrics(), Resilience(retries=5, budget=generous))
        started = asyncio.get_running_loop().time()
        with pytest.raises(Exception, match="did not answer"):
            await client.call("getcredits", "GET", "/email_verify/getcredits", timeout=1.0)
        assert asyncio.get_running_loop().time() - started < 1.5
        assert upstream.calls["/email_verify/getcredits"] == 1
    finally:
        await session.close()


async def test_circuit_breaker_opens_half_opens_and_closes(
    flaky: tuple[FlakyUpstream, str], make_gateway: GatewayFactory, redis_url: str
) -> None:
    """3 failures open it (fast 503 9502, gauge 1, hits still served); a good probe closes it."""
    upstream, url = flaky
    gateway = await make_gateway(upstream_url=url, redis_url=redis_url, breaker_failures=3,
                                 breaker_open_seconds=1.0)  # fmt: skip
    cached = {"name": "Cached Person", "domain": "apple.com"}
    assert (await gateway.post(INSTANT, json=cached, headers=auth())).status == 200
    upstream.default = "503"
    for i in range(3):
        body = {"name": f"Person {chr(65 + i)}", "domain": "apple.com"}
        assert (await gateway.post(INSTANT, json=body, headers=auth())).status == 503
    calls = upstream.calls["/email_finder/instant"]
    resp = await gateway.post(INSTANT, json={"name": "New Person", "domain": "apple.com"},
                              headers=auth())  # fmt: skip
    assert resp.status == 503
    assert resp.headers["X-Gateway-Error"] == "upstream_circuit_open"
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["error"]["code"] == 9502
    assert upstream.calls["/email_finder/instant"] == calls, "no call while open"
    assert await metric_value(gateway, "clearout_gateway_upstream_circuit_open") == 1
    hit = await gateway.post(INSTANT, json=cached, headers=auth())
    assert (hit.status, hit.headers["X-Cache"]) == (200, "HIT")
    # After the open period a probe goes through; the upstream is healthy again.
    upstream.default = "ok"
    await asyncio.sleep(1.1)
    resp = await gateway.post(INSTANT, json={"name": "New Person", "domain": "apple.com"},
                              headers=auth())  # fmt: skip
    assert resp.status == 200
    assert await metric_value(gateway, "clearout_gateway_upstream_circuit_open") == 0


async def test_a_failed_probe_opens_the_breaker_again() -> None:
    """Half-open lets exactly one probe through; its failure re-opens at once."""
    breaker = CircuitBreaker(threshold=2, open_seconds=0.2)
    for _ in range(2):
        probe = breaker.admit()
        breaker.failed(probe)
    assert breaker.state == "open"
    with pytest.raises(Exception, match="failing"):
        breaker.admit()
    await asyncio.sleep(0.25)
    probe = breaker.admit()
    # str(): mypy narrowed `state` to "open" above and cannot see admit() change it.
    assert probe and str(breaker.state) == "half_open"
    assert breaker.is_open, "half-open counts as open for the gauge"
    with pytest.raises(Exception, match="failing"):
        breaker.admit()  # a second caller during the probe is refused
    breaker.failed(probe)
    assert breaker.state == "open"


def test_breaker_settings_are_read_from_the_environment() -> None:
    """GATEWAY_BREAKER_* and GATEWAY_UPSTREAM_RETRIES reach the settings."""
    settings = Settings.from_env({
        "GATEWAY_SANDBOX": "1", "GATEWAY_BREAKER_FAILURES": "7",
        "GATEWAY_BREAKER_OPEN_SECONDS": "3.5", "GATEWAY_UPSTREAM_RETRIES": "1",
    })  # fmt: skip
    assert (settings.breaker_failures, settings.breaker_open_seconds) == (7, 3.5)
    assert replace(settings, upstream_retries=0).upstream_retries == 0
    assert settings.upstream_retries == 1
