"""`GET /v2/email_verify/getcredits` for a team, end to end.

Gateway apps from the production factory, a real Redis for the quota
counters, the sandbox as the real upstream on loopback (or, where the
account's other details matter, a purpose-built upstream app that sends
them).  The answer is Clearout's own getcredits shape with the team's
figures in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.sandbox import Sandbox
from gateway.teams import Quota
from tests.conftest import KEYS, GatewayFactory, auth, team
from tests.servers import RedisServer

Client = TestClient[Any, Any]
GETCREDITS = "/v2/email_verify/getcredits"
INSTANT = "/v2/email_finder/instant"
# A Clearout account answer with everything a token's owner can see: none of
# it but the balance and its total may reach a team.
ACCOUNT = {
    "status": "success",
    "data": {
        "available_credits": 7321,
        "credits": {"available": 7321, "total": 10000, "subs": 5000, "recurring": 2321},
        "user_email": "owner@company.example",
        "plan": "enterprise-annual",
        "org_id": "5f0c2d9e8b",
    },
}


async def credits(client: Client, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    resp = await client.get(GETCREDITS, headers=auth() if headers is None else headers)
    return resp.status, await resp.json()


async def spend(client: Client, lookups: int) -> None:
    """`lookups` found addresses (4 credits each) for team alpha."""
    for index in range(lookups):
        resp = await client.post(
            INSTANT, json={"name": f"Spender {chr(97 + index)} Jones", "domain": "apple.com"},
            headers=auth(),
        )  # fmt: skip
        assert resp.status == 200, await resp.text()


def shape(available: float, total: float) -> dict[str, Any]:
    data = {"available_credits": available, "credits": {"available": available, "total": total}}
    return {"status": "success", "data": data}


@pytest.mark.parametrize(
    ("quota", "expected"),
    [
        # 3 lookups = 12 credits spent: day 100-12=88 < month 1000-12=988.
        (Quota(credits_per_day=100, credits_per_month=1000), (88, 100)),
        # Month 30-12=18 < day 500-12=488: the month is the tighter window.
        (Quota(credits_per_day=500, credits_per_month=30), (18, 30)),
        (Quota(credits_per_month=40), (28, 40)),
    ],
)
async def test_a_quota_team_sees_its_tightest_window(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox, quota: Quota,
    expected: tuple[int, int],
) -> None:  # fmt: skip
    """N is what is left in the window that leaves less (after spending), T that window's size;
    the upstream balance is not asked."""
    gateway = await make_gateway(teams=[team("alpha", quota)], redis_url=redis_url)
    status, body = await credits(gateway)
    assert status == 200
    assert body == shape(expected[1], expected[1])  # nothing spent yet
    await spend(gateway, 3)
    status, body = await credits(gateway)
    assert status == 200
    assert body == shape(*expected)
    assert sandbox.calls.get(GETCREDITS, 0) == 0


async def test_an_unlimited_team_sees_the_upstream_balance_polled_once(
    make_gateway: GatewayFactory, sandbox: Sandbox
) -> None:
    """No poll has run (the poller is off): the first ask polls once, later ones reuse it,
    concurrent first asks share that one poll; T is the balance when upstream sends no total."""
    gateway = await make_gateway()
    answers = await asyncio.gather(*(credits(gateway) for _ in range(5)))
    balance = sandbox.credits
    assert all(answer == (200, shape(balance, balance)) for answer in answers)
    assert (await credits(gateway, auth("beta"))) == (200, shape(balance, balance))
    assert sandbox.calls[GETCREDITS] == 1


@pytest.fixture
async def account_upstream() -> AsyncIterator[tuple[str, list[int]]]:
    """An upstream whose getcredits answers the whole account (the first call fails, 503)."""
    calls: list[int] = []

    async def getcredits(_request: web.Request) -> web.Response:
        calls.append(1)
        if len(calls) == 1:
            return web.Response(status=503)
        return web.json_response(ACCOUNT)

    app = web.Application()
    app.router.add_get("/v2/email_verify/getcredits", getcredits)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}/v2", calls
    await server.close()


async def test_no_balance_is_503_then_only_balance_and_total_of_the_account(
    make_gateway: GatewayFactory, account_upstream: tuple[str, list[int]]
) -> None:
    """A failed first poll answers 503 upstream_unavailable in the envelope; once a poll
    succeeds the team sees `available_credits` and `credits.total`, no other account field."""
    url, calls = account_upstream
    gateway = await make_gateway(upstream_url=url, upstream_retries=0)
    resp = await gateway.get(GETCREDITS, headers=auth())
    assert resp.status == 503
    assert resp.headers["X-Gateway-Error"] == "upstream_unavailable"
    body = await resp.json()
    assert body["status"] == "failed" and body["error"]["code"] == 9500
    status, body = await credits(gateway)
    assert status == 200
    assert body == shape(7321, 10000)
    assert len(calls) == 2
    assert "owner@company.example" not in str(body) and "subs" not in str(body)


async def test_a_quota_store_down_is_503_store_unavailable(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """A quota team's figures come from the store; when it cannot be read the answer is
    503 store_unavailable, never a made-up number (under either store policy)."""
    server = RedisServer(tmp_path)
    server.start()
    alpha = team("alpha", Quota(credits_per_day=50))
    try:
        gateway = await make_gateway(
            teams=[alpha], redis_url=server.url, quota_on_store_error="allow"
        )
        assert await credits(gateway) == (200, shape(50, 50))
        server.stop()
        resp = await gateway.get(GETCREDITS, headers=auth())
        assert resp.status == 503
        assert resp.headers["X-Gateway-Error"] == "store_unavailable"
        assert (await resp.json())["error"]["code"] == 9400
    finally:
        server.stop()


async def test_without_a_key_or_with_a_wrong_one_is_401(gateway: Client, sandbox: Sandbox) -> None:
    """The route needs a team key like every finder route; upstream is not asked."""
    for headers in ({}, {"Authorization": "not-a-team-key"}):
        resp = await gateway.get(GETCREDITS, headers=headers)
        assert resp.status == 401
        assert resp.headers["X-Gateway-Error"] == "unauthorized"
        assert (await resp.json())["error"]["code"] == 9001
    assert sandbox.calls.get(GETCREDITS, 0) == 0


async def test_clearouts_python_requests_call_with_only_url_and_token_changed(
    gateway: Client, sandbox: Sandbox
) -> None:
    """Clearout's documented `requests` style call, base URL and token swapped, reads
    `data.available_credits` as it would from Clearout."""
    base = str(gateway.make_url("")).rstrip("/")

    def clearout_example() -> Any:
        url = f"{base}/v2/email_verify/getcredits"
        payload: dict[str, str] = {}
        headers = {
            "Content-Type": "application/json",
            "Authorization": KEYS["alpha"][0],
        }
        response = requests.request("GET", url, data=payload, headers=headers, timeout=30)
        return response.json()

    response = await asyncio.to_thread(clearout_example)
    assert response["status"] == "success"
    assert response["data"]["available_credits"] == sandbox.credits
