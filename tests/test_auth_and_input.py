"""Team-key authentication and every bad input, refused before any upstream call."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from gateway.sandbox import Sandbox
from gateway.teams import TeamRegistry, TeamsFileError, hash_key, presented_key
from tests.conftest import GatewayFactory, auth

INSTANT = "/v2/email_finder/instant"
STEVEN = {"name": "Steven Morris", "domain": "apple.com"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": ""}, {"Authorization": "Bearer "}, {"Authorization": "wrong-key"},
     {"Authorization": "Bearer wrong-key"}, {"Authorization": hash_key("alpha-key-1")}],
)  # fmt: skip
async def test_missing_or_unknown_key_is_401_without_upstream_call(
    gateway: TestClient[Any, Any], sandbox: Sandbox, headers: dict[str, str]
) -> None:
    resp = await gateway.post(INSTANT, json=STEVEN, headers=headers)
    assert resp.status == 401
    body = await resp.json()
    assert body["status"] == "failed" and body["error"]["code"] == 9001
    assert resp.headers["X-Gateway-Error"] == "unauthorized"
    assert sandbox.calls == {}


@pytest.mark.parametrize(
    "value", ["alpha-key-1", "Bearer alpha-key-1", "bearer alpha-key-2", " alpha-key-2",
              "Bearer :alpha-key-1"],
)  # fmt: skip
async def test_every_client_form_of_a_key_is_accepted(
    gateway: TestClient[Any, Any], value: str
) -> None:
    resp = await gateway.post(INSTANT, json=STEVEN, headers={"Authorization": value})
    assert resp.status == 200


def test_presented_key_forms() -> None:
    assert presented_key("Bearer abc") == "abc"
    assert presented_key("abc") == "abc"
    assert presented_key("Bearer :abc") == "abc"
    assert presented_key("   ") is None
    assert presented_key(None) is None


def test_teams_file_validation(tmp_path: Any) -> None:
    good = tmp_path / "teams.yaml"
    good.write_text(
        "teams:\n  - name: growth\n    key_sha256: [" + hash_key("k") + "]\n"
        "    quota: {credits_per_day: 500, requests_per_second: 20}\n"
    )
    registry = TeamRegistry.from_file(good)
    assert registry.authenticate("k") is registry.teams["growth"]
    assert registry.teams["growth"].quota.credits_per_day == 500
    bad_cases = {
        "teams: {}": "top-level",
        "teams:\n  - name: Growth!\n    key_sha256: [" + hash_key("k") + "]": "name must match",
        "teams:\n  - name: g\n    key_sha256: [abc]": "64 hex",
        "teams:\n  - name: g\n    key_sha256: []": "one or more",
        f"teams:\n  - name: a\n    key_sha256: [{hash_key('k')}]\n"
        f"  - name: b\n    key_sha256: [{hash_key('k')}]": "used twice",
        f"teams:\n  - name: a\n    key_sha256: [{hash_key('k')}]\n    quota: {{daily: 1}}":
            "unknown quota keys",
        "teams: [": "not valid YAML",
    }  # fmt: skip
    for text, message in bad_cases.items():
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(TeamsFileError, match=message):
            TeamRegistry.from_file(path)


BAD_BODIES = [
    (b"not json", "value", "object.base"),
    (b"[1, 2]", "value", "object.base"),
    (b'{"domain": "apple.com"}', "name", "any.required"),
    (b'{"name": "", "domain": "apple.com"}', "name", "any.empty"),
    (b'{"name": "   ", "domain": "apple.com"}', "name", "any.empty"),
    (b'{"name": 42, "domain": "apple.com"}', "name", "string.base"),
    (b'{"name": "Steven Morris"}', "domain", "any.required"),
    (b'{"name": "Steven Morris", "domain": ""}', "domain", "any.empty"),
    (b'{"name": "Steven Morris", "domain": "apple.com", "timeout": 9999}', "timeout", "number.min"),
    (b'{"name": "Steven Morris", "domain": "apple.com", "timeout": 180001}', "timeout",
     "number.max"),
    (b'{"name": "Steven Morris", "domain": "apple.com", "timeout": "soon"}', "timeout",
     "number.base"),
    (b'{"name": "Steven Morris", "domain": "apple.com", "queue": "maybe"}', "queue",
     "boolean.base"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "field", "joi_type"), BAD_BODIES)
async def test_bad_instant_bodies_are_400_in_upstream_shape(
    gateway: TestClient[Any, Any], sandbox: Sandbox, raw: bytes, field: str, joi_type: str
) -> None:
    resp = await gateway.post(
        INSTANT, data=raw, headers={**auth(), "Content-Type": "application/json"}
    )
    assert resp.status == 400
    body = await resp.json()
    assert body["status"] == "failed" and body["error"]["message"] == "validation failed"
    assert body["error"]["reasons"][0]["field"] == [field]
    assert body["error"]["reasons"][0]["types"] == [joi_type]
    assert 9000 <= body["error"]["code"] < 10000
    assert sandbox.calls == {}


async def test_timeout_bounds_are_inclusive(gateway: TestClient[Any, Any]) -> None:
    for timeout in (10000, "180000"):
        resp = await gateway.post(INSTANT, json={**STEVEN, "timeout": timeout}, headers=auth())
        assert resp.status == 200, timeout


async def test_json_body_over_limit_is_413(gateway: TestClient[Any, Any], sandbox: Sandbox) -> None:
    big = {**STEVEN, "padding": "x" * 70_000}
    resp = await gateway.post(INSTANT, json=big, headers=auth())
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == 9101
    assert resp.headers["X-Gateway-Error"] == "payload_too_large"

    async def chunked() -> Any:
        for _ in range(10):
            yield b"x" * 10_000

    # Without Content-Length the limit is enforced while reading.
    resp = await gateway.post(
        INSTANT, data=chunked(), headers={**auth(), "Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert sandbox.calls == {}


async def test_bulk_over_limit_is_413_and_connection_released(
    make_gateway: GatewayFactory, sandbox: Sandbox
) -> None:
    gateway = await make_gateway(max_bulk_bytes=200_000)
    payload = b"Name,Domain\n" + b"Steven Morris,apple.com\n" * 20_000  # ~480 kB
    for streamed in (False, True):
        form = aiohttp.FormData()
        if streamed:

            async def chunks() -> Any:
                for i in range(0, len(payload), 65536):
                    yield payload[i : i + 65536]

            form.add_field("file", chunks(), filename="big.csv")
        else:
            form.add_field("file", payload, filename="big.csv")
        resp = await gateway.post("/v2/email_finder/bulk", data=form, headers=auth())
        assert resp.status == 413, streamed
        assert (await resp.json())["error"]["code"] == 9101
    # The gateway still answers promptly on a fresh request afterwards.
    resp = await gateway.get("/healthz")
    assert resp.status == 200
    assert sandbox.calls == {}


async def test_bulk_without_multipart_file(gateway: TestClient[Any, Any]) -> None:
    """JSON to /bulk is the wrong media type (415); a form without `file` is a 400."""
    resp = await gateway.post("/v2/email_finder/bulk", json={"file": "x"}, headers=auth())
    assert resp.status == 415
    assert resp.headers["X-Gateway-Error"] == "unsupported_media_type"
    assert (await resp.json())["error"]["code"] == 9102
    form = aiohttp.FormData()
    form.add_field("other", "x")
    form.add_field("file2", b"x", filename="x.csv")
    resp = await gateway.post("/v2/email_finder/bulk", data=form, headers=auth())
    assert resp.status == 400
    assert (await resp.json())["error"]["reasons"][0]["field"] == ["file"]


async def test_unknown_route_and_method_use_the_envelope(gateway: TestClient[Any, Any]) -> None:
    resp = await gateway.get("/v2/email_finder/nothing", headers=auth())
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == 9104
    resp = await gateway.get(INSTANT, headers=auth())
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == 9105
