"""All seven Clearout routes through the gateway, against the sandbox upstream."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.sandbox import Sandbox
from tests.conftest import auth, contacts_csv

Client = TestClient[web.Request, web.Application]
STEVEN = {"name": "Steven Morris", "domain": "apple.com", "timeout": 30000}


async def upload(client: Client, data: bytes, filename: str = "contacts.csv", **fields: str) -> Any:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type="text/csv")
    for key, value in fields.items():
        form.add_field(key, value)
    resp = await client.post("/v2/email_finder/bulk", data=form, headers=auth())
    return resp.status, await resp.json()


async def test_instant_found_is_relayed_unchanged(gateway: Client, sandbox: Sandbox) -> None:
    """A found address comes back with the upstream's status, body and rate headers."""
    resp = await gateway.post("/v2/email_finder/instant", json=STEVEN, headers=auth())
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "success"
    assert body["data"]["emails"][0]["email_address"] == "steven.morris@apple.com"
    assert resp.headers["X-RateLimit-Limit"] == "10000"
    assert "X-RateLimit-Remaining" in resp.headers
    assert resp.headers["X-Request-ID"]
    assert sandbox.calls_to("instant") == 1


async def test_instant_not_found_and_role(gateway: Client) -> None:
    resp = await gateway.post(
        "/v2/email_finder/instant", json={"name": "Nobody Here", "domain": "apple.com"},
        headers=auth(),
    )  # fmt: skip
    body = await resp.json()
    assert resp.status == 200 and body["data"]["emails"] == [] and body["data"]["total"] == 0
    resp = await gateway.post(
        "/v2/email_finder/instant", json={"name": "info", "domain": "apple.com"}, headers=auth()
    )
    body = await resp.json()
    assert body["data"]["emails"][0] == {
        "email_address": "info@apple.com", "role": "yes", "business": "yes"
    }  # fmt: skip


async def test_request_id_is_echoed(gateway: Client) -> None:
    resp = await gateway.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = await gateway.get("/healthz", headers={"X-Request-ID": "bad id <script>"})
    assert resp.headers["X-Request-ID"] != "bad id <script>"


async def test_queued_lookup_then_queue_status(gateway: Client) -> None:
    """A 524 with queue_id reaches the caller as sent; queue_status later completes."""
    resp = await gateway.post(
        "/v2/email_finder/instant", json={"name": "Ann Lee", "domain": "queued.test"},
        headers=auth(),
    )  # fmt: skip
    assert resp.status == 524
    assert resp.reason == "A Timeout Occurred"
    body = await resp.json()
    qid = body["error"]["additional_info"]["queue_id"]
    assert len(qid) == 24
    resp = await gateway.get(f"/v2/email_finder/instant/queue_status?qid={qid}", headers=auth())
    assert (await resp.json())["data"]["query_status"] == "running"
    await asyncio.sleep(0.35)
    resp = await gateway.get(f"/v2/email_finder/instant/queue_status?qid={qid}", headers=auth())
    data = (await resp.json())["data"]
    assert data["query_status"] == "completed"
    assert data["emails"][0]["email_address"] == "ann.lee@queued.test"
    resp = await gateway.get("/v2/email_finder/instant/queue_status?qid=nope", headers=auth())
    assert (await resp.json())["error"]["code"] == 1104


async def test_bulk_lifecycle_end_to_end(gateway: Client) -> None:
    """Upload → progress → download link → result file → cancel refused → remove."""
    status, body = await upload(
        gateway, contacts_csv([("Steven Morris", "apple.com"), ("Nobody Else", "apple.com")])
    )
    assert status == 200, body
    list_id = body["data"]["list_id"]
    resp = await gateway.get(
        f"/v2/email_finder/bulk/progress_status?list_id={list_id}", headers=auth()
    )
    assert (await resp.json())["data"]["progress_status"] == "running"
    resp = await gateway.post(
        "/v2/email_finder/download/result", json={"list_id": list_id}, headers=auth()
    )
    assert (await resp.json())["error"]["code"] == 1029  # not ready yet
    await asyncio.sleep(0.65)
    resp = await gateway.get(
        f"/v2/email_finder/bulk/progress_status?list_id={list_id}", headers=auth()
    )
    assert (await resp.json())["data"] == {"progress_status": "completed", "percentage": 100}
    resp = await gateway.post(
        "/v2/email_finder/download/result", json={"list_id": list_id}, headers=auth()
    )
    url = (await resp.json())["data"]["url"]
    async with aiohttp.ClientSession() as session, session.get(url) as file_resp:
        assert file_resp.status == 200
        rows = list(csv.reader(io.StringIO(await file_resp.text())))
    assert rows[0][:2] == ["Full Name", "Domain"]
    assert "Clearout Finder Email Address" in rows[0]
    email = rows[0].index("Clearout Finder Email Address")
    status = rows[0].index("Clearout Finder Status")
    assert rows[1][email] == "steven.morris@apple.com" and rows[2][status] == "Not Found"
    resp = await gateway.post(
        "/v2/email_finder/list/cancel", json={"list_id": list_id}, headers=auth()
    )
    assert (await resp.json())["error"]["code"] == 1116
    resp = await gateway.post(
        "/v2/email_finder/list/remove", json={"list_id": list_id}, headers=auth()
    )
    body = await resp.json()
    assert body["status"] == "success" and body["data"]["name"] == "contacts.csv"
    resp = await gateway.post(
        "/v2/email_finder/list/remove", json={"list_id": list_id}, headers=auth()
    )
    assert (await resp.json())["error"]["code"] == 1029


async def test_bulk_cancel_running_list_and_duplicates(gateway: Client) -> None:
    data = contacts_csv([("Steven Morris", "apple.com")])
    _, body = await upload(gateway, data)
    list_id = body["data"]["list_id"]
    _, dup = await upload(gateway, data)
    assert dup["error"]["code"] == 2043
    assert dup["error"]["additional_info"]["list_id"] == list_id
    _, again = await upload(gateway, data, ignore_duplicate_file="true")
    assert again["status"] == "success"
    resp = await gateway.post(
        "/v2/email_finder/list/cancel", json={"list_id": list_id}, headers=auth()
    )
    body = await resp.json()
    assert body["status"] == "success" and body["data"]["source"] == "upload"


async def test_bulk_xlsx_and_invalid_file_type(gateway: Client, tmp_path: Any) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["First Name", "Last Name", "Company"])
    sheet.append(["Steven", "Morris", "Apple Inc"])
    path = tmp_path / "people.xlsx"
    book.save(path)
    status, body = await upload(gateway, path.read_bytes(), filename="people.xlsx")
    assert body["status"] == "success"
    status, body = await upload(gateway, b"hello", filename="notes.txt")
    assert status == 200 and body["error"]["code"] == 1100


async def test_seven_routes_refuse_bad_ids(gateway: Client) -> None:
    """Missing ids are refused by the gateway in Clearout's validation shape."""
    cases = [
        ("GET", "/v2/email_finder/instant/queue_status", None, "qid", "query"),
        ("GET", "/v2/email_finder/bulk/progress_status", None, "list_id", "query"),
        ("POST", "/v2/email_finder/download/result", {}, "list_id", "body"),
        ("POST", "/v2/email_finder/list/cancel", {"list_id": ""}, "list_id", "body"),
        ("POST", "/v2/email_finder/list/remove", {"x": 1}, "list_id", "body"),
    ]
    for method, path, body, field, location in cases:
        resp = await gateway.request(method, path, json=body, headers=auth())
        assert resp.status == 400, path
        payload = await resp.json()
        reason = payload["error"]["reasons"][0]
        assert reason["field"] == [field] and reason["location"] == location
        assert payload["error"]["message"] == "validation failed"
        assert resp.headers["X-Gateway-Error"] == "validation_failed"


async def test_progress_of_unknown_list(gateway: Client) -> None:
    resp = await gateway.get(
        "/v2/email_finder/bulk/progress_status?list_id=000000000000000000000000", headers=auth()
    )
    assert resp.status == 200
    assert json.loads(await resp.text())["error"]["code"] == 1008
