"""Liveness, readiness against a real Redis, metrics text, and the secrets rule."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from gateway.http.keys import LIFECYCLE
from tests.conftest import ADMIN_TOKEN, UPSTREAM_TOKEN, GatewayFactory, LogCapture, auth
from tests.servers import RedisServer, free_port


async def test_healthz_and_metrics(gateway: TestClient[Any, Any]) -> None:
    assert (await gateway.get("/healthz")).status == 200
    await gateway.post("/v2/email_finder/instant", json={"name": "A B", "domain": "x.io"},
                       headers=auth())  # fmt: skip
    await gateway.post("/v2/email_finder/instant", json={}, headers={"Authorization": "nope"})
    resp = await gateway.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert 'clearout_gateway_requests_total{route="instant",status="200",team="alpha"} 1.0' in text
    assert 'clearout_gateway_requests_total{route="instant",status="401",team="none"} 1.0' in text
    assert 'clearout_gateway_upstream_requests_total{route="instant",status="200"} 1.0' in text
    assert "clearout_gateway_request_duration_seconds_bucket" in text
    assert "clearout_gateway_upstream_credits_available" in text


async def test_readyz_follows_redis_and_draining(
    make_gateway: GatewayFactory, tmp_path: Any
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        gateway = await make_gateway(redis_url=server.url)
        resp = await gateway.get("/readyz")
        assert resp.status == 200, await resp.text()
        server.stop()
        resp = await gateway.get("/readyz")
        assert resp.status == 503
        assert (await resp.json())["reason"] == "redis unreachable"
        server.start()
        resp = await gateway.get("/readyz")
        assert resp.status == 200
        gateway.app[LIFECYCLE].draining = True
        resp = await gateway.get("/readyz")
        assert resp.status == 503 and (await resp.json())["reason"] == "draining"
        assert (await gateway.get("/healthz")).status == 200
    finally:
        server.stop()


async def test_readyz_without_redis_listening(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert (await gateway.get("/readyz")).status == 503


async def test_secrets_never_leave_the_process(
    log_output: LogCapture, make_gateway: GatewayFactory
) -> None:
    """No response (any route, any outcome) nor log line carries the upstream token."""
    gateway = await make_gateway()
    seen: list[str] = []

    async def record(resp: aiohttp.ClientResponse) -> None:
        seen.append(json.dumps(dict(resp.headers)) + (await resp.text()))

    calls = [
        ("POST", "/v2/email_finder/instant", {"name": "Steven Morris", "domain": "apple.com"}),
        ("POST", "/v2/email_finder/instant", {"name": "Ann Lee", "domain": "queued.test"}),
        ("POST", "/v2/email_finder/instant", {"name": "Ann Lee", "domain": "unavailable.test"}),
        ("POST", "/v2/email_finder/instant", {"name": "R2 D2", "domain": "apple.com"}),
        ("POST", "/v2/email_finder/instant", {"name": ""}),
        ("GET", "/v2/email_finder/instant/queue_status?qid=x", None),
        ("GET", "/v2/email_finder/bulk/progress_status?list_id=x", None),
        ("POST", "/v2/email_finder/download/result", {"list_id": "x"}),
        ("POST", "/v2/email_finder/list/cancel", {"list_id": "x"}),
        ("POST", "/v2/email_finder/list/remove", {"list_id": "x"}),
        ("GET", "/metrics", None),
        ("GET", "/nowhere", None),
    ]
    for method, path, body in calls:
        for headers in (auth(), {"Authorization": "bad"}):
            await record(await gateway.request(method, path, json=body, headers=headers))
    bad_upstream = await make_gateway(api_token="not-" + UPSTREAM_TOKEN)
    await record(
        await bad_upstream.post(
            "/v2/email_finder/instant", json={"name": "A B", "domain": "c.io"}, headers=auth()
        )
    )
    logged = log_output.text()
    events = [json.loads(line) for line in logged.splitlines()]
    assert any(e["event"] == "request" and e["request_id"] for e in events)
    for text in [*seen, logged]:
        assert UPSTREAM_TOKEN not in text
        assert ADMIN_TOKEN not in text
        assert "alpha-key-1" not in text
