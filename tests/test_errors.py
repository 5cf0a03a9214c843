"""Unforeseen failures and aiohttp's HTTP errors in the envelope: no leak, no 4xx called internal.

Every other gateway error has a request that provokes it; this one is what
the request wrapper gives when a handler fails in a way nobody foresaw, so
the test serves the production app with one extra route whose handler
fails, wrapped in the same `Endpoint` as every route.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.http.app import create_app
from gateway.http.endpoint import Endpoint
from gateway.settings import Settings
from gateway.teams import TeamDirectory, TeamRegistry
from tests.conftest import GatewayTestServer, LogCapture, team


async def broken(_request: web.Request) -> web.StreamResponse:
    raise KeyError("internal-detail-7f3a")


async def test_an_unforeseen_failure_is_a_500_envelope_with_its_request_id_logged(
    settings: Settings, log_output: LogCapture
) -> None:
    """500, code 9000, `X-Gateway-Error: internal_error`, the caller's request id echoed and
    in the logged traceback line; the exception's text stays out of the answer."""
    effective = replace(settings, admin_token=None)
    app = create_app(effective, teams=TeamDirectory(TeamRegistry([team("alpha")])))
    app.router.add_get("/v2/broken", Endpoint(app, "other", broken, team_auth=False).serve)
    client: TestClient[Any, Any] = TestClient(GatewayTestServer(app, effective))
    await client.start_server()
    try:
        resp = await client.get("/v2/broken", headers={"X-Request-ID": "bug-report-1"})
        body = await resp.text()
        assert resp.status == 500
        assert resp.headers["X-Gateway-Error"] == "internal_error"
        assert resp.headers["X-Request-ID"] == "bug-report-1"
        assert (await resp.json()) == {
            "status": "failed",
            "error": {"code": 9000, "message": "Internal gateway error"},
        }
        assert "internal-detail-7f3a" not in body
        still = await client.get("/healthz")
        assert still.status == 200, "one failed request leaves the gateway serving"
    finally:
        await client.close()
    logged = [line for line in log_output.text().splitlines() if '"unhandled_error"' in line]
    assert len(logged) == 1 and "bug-report-1" in logged[0] and "KeyError" in logged[0]


def raising(exc: web.HTTPException) -> Any:
    async def handler(_request: web.Request) -> web.StreamResponse:
        raise exc

    return handler


async def test_aiohttp_http_errors_keep_their_status_with_a_fitting_code(
    settings: Settings,
) -> None:
    """A 4xx aiohttp raises is the caller's error (a specific code, else 9106 `bad_request`),
    not an internal one; a 5xx is 9000."""
    effective = replace(settings, admin_token=None)
    app = create_app(effective, teams=TeamDirectory(TeamRegistry([team("alpha")])))
    cases = {
        "/v2/slow": (web.HTTPRequestTimeout(), 408, 9103, "request_timeout"),
        "/v2/media": (web.HTTPUnsupportedMediaType(), 415, 9102, "unsupported_media_type"),
        "/v2/gone": (web.HTTPGone(), 410, 9106, "bad_request"),
        "/v2/unprocessable": (web.HTTPUnprocessableEntity(), 422, 9106, "bad_request"),
        "/v2/unavailable": (web.HTTPServiceUnavailable(), 503, 9000, "internal_error"),
    }
    for path, (exc, *_expected) in cases.items():
        app.router.add_get(path, Endpoint(app, "other", raising(exc), team_auth=False).serve)
    client: TestClient[Any, Any] = TestClient(GatewayTestServer(app, effective))
    await client.start_server()
    try:
        for path, (_exc, status, code, reason) in cases.items():
            resp = await client.get(path)
            assert (resp.status, resp.headers["X-Gateway-Error"]) == (status, reason), path
            assert (await resp.json())["error"]["code"] == code, path
    finally:
        await client.close()
