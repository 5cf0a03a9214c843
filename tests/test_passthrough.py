"""Upstream answers reach the caller as sent; transport failures become 503 envelopes.

The upstream here is a purpose-built fake aiohttp app on loopback that answers
whatever a test scripts, and records what the gateway sent it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.sandbox import Sandbox
from tests.conftest import ADMIN_TOKEN, UPSTREAM_TOKEN, GatewayFactory, auth
from tests.servers import free_port

STEVEN = {"name": "Steven Morris", "domain": "apple.com"}


@dataclass
class FakeUpstream:
    status: int = 200
    body: bytes = b'{"status":"success","data":{}}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            {"path": request.path, "headers": dict(request.headers), "body": await request.read()}
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, body=self.body, headers=self.headers)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield fake, f"http://127.0.0.1:{server.port}/v2"
    await server.close()


UPSTREAM_ERRORS = [
    (400, b'{"status":"failed","error":{"message":"validation failed","reasons":[{"field":'
          b'["name"],"location":"body","messages":["\\"name\\" is not allowed to be empty"],'
          b'"types":["any.empty"]}]}}'),
    (402, b'{"status":"failed","error":{"code":1099,"message":"You do not have sufficient '
          b'credits for instant email finder"}}'),
    (401, b'{"status":"failed","error":{"code":1000,"message":"Invalid API Token, please '
          b'generate new token"}}'),
    (429, b'{"status":"failed","error":{"message":"You have reached API rate limit"}}'),
    (503, b""),
    (524, b'{"status":"failed","error":{"message":"Timeout occurred","additional_info":'
          b'{"resource_name":"email_finder","resource_value":"","queue_id":"61008c4597947d45700f4bb2"}}}'),
    (200, b'{"status":"failed","error":{"code":1088,"message":"Unsupported characters in name fields"}}'),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body"), UPSTREAM_ERRORS)
async def test_upstream_answers_are_relayed_byte_for_byte(
    make_gateway: GatewayFactory, fake: tuple[FakeUpstream, str], status: int, body: bytes
) -> None:
    upstream, url = fake
    upstream.status, upstream.body = status, body
    upstream.headers = {"Content-Type": "application/json", "X-RateLimit-Reset": "30"}
    gateway = await make_gateway(upstream_url=url)
    resp = await gateway.post("/v2/email_finder/instant", json=STEVEN, headers=auth())
    assert resp.status == status
    assert await resp.read() == body
    assert "X-Gateway-Error" not in resp.headers
    if status == 429:
        assert resp.headers["Retry-After"] == "30"


async def test_token_injected_and_caller_headers_not_forwarded(
    make_gateway: GatewayFactory, fake: tuple[FakeUpstream, str]
) -> None:
    """Upstream sees the real token, never the team key, cookies or hop-by-hop headers."""
    upstream, url = fake
    upstream.headers = {
        "Connection": "keep-alive, X-Hop-Secret",
        "X-Hop-Secret": "1",
        "Set-Cookie": "upstream=1",
        "X-RateLimit-Remaining": "41",
    }
    gateway = await make_gateway(upstream_url=url)
    resp = await gateway.post(
        "/v2/email_finder/instant",
        json=STEVEN,
        headers={**auth(), "Cookie": "session=abc", "X-Forwarded-For": "10.1.2.3",
                 "User-Agent": "clearout-client/1.0"},
    )  # fmt: skip
    assert resp.status == 200
    sent = upstream.seen[0]["headers"]
    assert sent["Authorization"] == UPSTREAM_TOKEN
    assert "Cookie" not in sent and "X-Forwarded-For" not in sent
    assert sent["User-Agent"] == "clearout-client/1.0"
    assert "X-Hop-Secret" not in resp.headers and "Set-Cookie" not in resp.headers
    assert resp.headers["X-RateLimit-Remaining"] == "41"


async def test_bearer_colon_form_from_the_csharp_example(gateway: Any, sandbox: Sandbox) -> None:
    resp = await gateway.post(
        "/v2/email_finder/instant", json=STEVEN,
        headers={"Authorization": "Bearer :alpha-key-1"},
    )  # fmt: skip
    assert resp.status == 200


async def test_upstream_unreachable_is_503_envelope(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(upstream_url=f"http://127.0.0.1:{free_port()}/v2")
    resp = await gateway.post("/v2/email_finder/instant", json=STEVEN, headers=auth())
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "failed" and body["error"]["code"] == 9500
    assert resp.headers["X-Gateway-Error"] == "upstream_unavailable"


async def test_upstream_timeout_is_503_envelope(
    make_gateway: GatewayFactory, fake: tuple[FakeUpstream, str]
) -> None:
    upstream, url = fake
    upstream.delay = 2.0
    gateway = await make_gateway(upstream_url=url, upstream_timeout=0.3)
    # The admin token may name any list id, so the call reaches the slow upstream.
    resp = await gateway.get(
        "/v2/email_finder/bulk/progress_status?list_id=abc",
        headers={"Authorization": ADMIN_TOKEN},
    )
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == 9501
    assert resp.headers["X-Gateway-Error"] == "upstream_timeout"


async def test_instant_upstream_timeout_follows_callers_timeout(
    make_gateway: GatewayFactory, fake: tuple[FakeUpstream, str]
) -> None:
    """The instant call may take the caller's timeout plus the margin, no less."""
    upstream, url = fake
    upstream.delay = 0.6
    gateway = await make_gateway(upstream_url=url, upstream_timeout=0.1,
                                 upstream_timeout_margin=0.0)  # fmt: skip
    # 10 s caller timeout: a 0.6 s upstream is well within it.
    resp = await gateway.post(
        "/v2/email_finder/instant", json={**STEVEN, "timeout": 10000}, headers=auth()
    )
    assert resp.status == 200
