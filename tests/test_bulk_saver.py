"""Bulk lists paid only for the people the cache does not know, end to end.

Real Redis, the sandbox as the real upstream on loopback (lists complete
after 0.6 s), gateway apps built by the production factory.  What upstream
received is read from the sandbox's own spooled copy of each list.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import openpyxl
import pytest
from aiohttp.test_utils import TestClient

from gateway.bulk import tables
from gateway.bulk.results import RESULT_COLUMNS
from gateway.sandbox import Sandbox
from gateway.teams import Quota
from tests.conftest import ADMIN_TOKEN, GatewayFactory, auth, team
from tests.test_hardening import metric_value

Client = TestClient[Any, Any]
INSTANT = "/v2/email_finder/instant"
BULK = "/v2/email_finder/bulk"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

KNOWN = [("Steven Morris", "apple.com"), ("Ann Lee", "apple.com"), ("nobody here", "apple.com")]


def csv_bytes(rows: list[list[str]], delimiter: str = ",") -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter).writerows(rows)
    return out.getvalue().encode()


def xlsx_bytes(rows: list[list[str]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def warm(client: Client, people: list[tuple[str, str]]) -> None:
    for name, domain in people:
        resp = await client.post(INSTANT, json={"name": name, "domain": domain}, headers=auth())
        assert resp.status == 200


async def upload(
    client: Client, data: bytes, filename: str = "list.csv", content_type: str = "text/csv",
    headers: dict[str, str] | None = None,
) -> Any:  # fmt: skip
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type=content_type)
    resp = await client.post(BULK, data=form, headers=headers or auth())
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def progress(client: Client, list_id: str, team_name: str = "alpha") -> Any:
    resp = await client.get(
        "/v2/email_finder/bulk/progress_status", params={"list_id": list_id}, headers=auth(team_name)
    )
    return (await resp.json())


async def until_done(client: Client, list_id: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = await progress(client, list_id)
        if body.get("data", {}).get("progress_status") != "running":
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"list {list_id} still running")


async def result_link(client: Client, list_id: str, team_name: str = "alpha") -> Any:
    resp = await client.post(
        "/v2/email_finder/download/result", json={"list_id": list_id}, headers=auth(team_name)
    )
    return await resp.json()


async def fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.read()


def csv_rows(data: bytes, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=delimiter))


def column(rows: list[list[str]], name: str) -> list[str]:
    index = rows[0].index(name)
    return [row[index] for row in rows[1:]]


def sent_upstream(sandbox: Sandbox) -> list[list[str]]:
    """The data rows of every list the sandbox received (what upstream was asked)."""
    rows: list[list[str]] = []
    for item in sandbox.lists.values():
        rows += list(tables.iter_rows(item.path, item.kind))[1:]
    return rows


async def test_a_file_of_known_people_completes_without_upstream(
    gateway: Client, sandbox: Sandbox
) -> None:
    """Every row known (found or not): no upstream call, the result served by the gateway."""
    await warm(gateway, KNOWN)
    rows = [["Full Name", "Domain", "Notes"], ["Dr. Steven Morris", "https://www.apple.com/", "a"],
            ["Ann Lee", "apple.com", "b"], ["nobody here", "APPLE.COM", "c"],
            ["Morris, Steven", "apple.com", "d"]]  # fmt: skip
    body = await upload(gateway, csv_bytes(rows))
    list_id = body["data"]["list_id"]
    done = await until_done(gateway, list_id)
    assert done["data"] == {"progress_status": "completed", "percentage": 100}
    assert sandbox.calls_to("bulk") == 0
    link = (await result_link(gateway, list_id))["data"]["url"]
    assert link.startswith(str(gateway.make_url("/v2/email_finder/results/")))
    status, data = await fetch(link)
    result = csv_rows(data)
    assert status == 200
    assert result[0] == [*rows[0], *RESULT_COLUMNS]
    assert [r[:3] for r in result[1:]] == rows[1:], "every row, in order, spelled as sent"
    assert column(result, "Clearout Finder Status") == ["Found", "Found", "Not Found", "Found"]
    assert column(result, "Clearout Finder Email Address")[0] == "steven.morris@apple.com"
    assert await metric_value(gateway, "clearout_gateway_bulk_rows_total", source="cache") == 3
    assert await metric_value(gateway, "clearout_gateway_bulk_rows_total", source="duplicate") == 1


async def test_a_mixed_file_sends_exactly_the_unknown_distinct_people(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """Known rows come from the cache, unknown ones once each from upstream, merged in order;
    only the unknown are reserved and charged."""
    alpha = team("alpha", Quota(credits_per_day=1000))
    gateway = await make_gateway(teams=[alpha, team("beta")], redis_url=redis_url)
    await warm(gateway, KNOWN[:2])
    used_before = await metric_value(gateway, "clearout_gateway_credits_spent_total", team="alpha")
    rows = [["First Name", "Last Name", "Company", "Owner"],
            ["Steven", "Morris", "apple.com", "=HYPERLINK(\"x\")"],
            ["Bob", "Stone", "apple.com", "x"], ["Cara", "Diaz", "apple.com", "y"],
            ["bob", "STONE", "Apple.com", "z"], ["Ann", "Lee", "apple.com", "w"]]  # fmt: skip
    list_id = (await upload(gateway, csv_bytes(rows), "mixed.csv"))["data"]["list_id"]
    assert sandbox.calls_to("bulk") == 1
    assert sorted(r[:2] for r in sent_upstream(sandbox)) == [["Bob", "Stone"], ["Cara", "Diaz"]]
    await until_done(gateway, list_id)
    _, data = await fetch((await result_link(gateway, list_id))["data"]["url"])
    result = csv_rows(data)
    assert [r[:3] for r in result[1:]] == [r[:3] for r in rows[1:]]
    assert result[1][3] == "'=HYPERLINK(\"x\")", "formula cells are neutralised"
    emails = column(result, "Clearout Finder Email Address")
    assert emails == ["steven.morris@apple.com", "bob.stone@apple.com", "cara.diaz@apple.com",
                      "bob.stone@apple.com", "ann.lee@apple.com"]  # fmt: skip
    spent = await metric_value(gateway, "clearout_gateway_credits_spent_total", team="alpha")
    assert spent - used_before == 8, "two unknown people found, 4 credits each"
    saved = await metric_value(gateway, "clearout_gateway_credits_saved_total", team="alpha")
    assert saved >= 8


async def test_xlsx_in_xlsx_out_and_semicolon_csv_keep_their_format(
    gateway: Client, sandbox: Sandbox
) -> None:
    """An XLSX list is answered as XLSX; a semicolon CSV as a semicolon CSV."""
    await warm(gateway, KNOWN[:1])
    rows = [["Name", "Domain"], ["Steven Morris", "apple.com"], ["Dana Fox", "apple.com"]]
    xlsx_id = (await upload(gateway, xlsx_bytes(rows), "list.xlsx", XLSX_TYPE))["data"]["list_id"]
    semi_id = (await upload(gateway, csv_bytes(rows, ";"), "semi.csv"))["data"]["list_id"]
    await until_done(gateway, xlsx_id)
    await until_done(gateway, semi_id)
    link = (await result_link(gateway, xlsx_id))["data"]["url"]
    assert ".xlsx?" in link
    _, data = await fetch(link)
    sheet = openpyxl.load_workbook(io.BytesIO(data)).active
    assert sheet is not None
    got = [[str(c) if c is not None else "" for c in row] for row in sheet.iter_rows(values_only=True)]
    assert got[0][:2] == ["Name", "Domain"] and got[0][2:] == list(RESULT_COLUMNS)
    assert [r[:2] for r in got[1:]] == rows[1:]
    assert got[2][got[0].index("Clearout Finder Email Address")] == "dana.fox@apple.com"
    _, data = await fetch((await result_link(gateway, semi_id))["data"]["url"])
    assert data.decode().splitlines()[0].startswith("Name;Domain;Clearout Finder Full Name")


async def test_cancel_and_remove_of_a_mixed_list(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """Cancel stops upstream's part, the list reports cancelled and keeps what was answered;
    remove then forgets it (upstream's copy too)."""
    sandbox.config.bulk_seconds = 5.0
    gateway = await make_gateway(redis_url=redis_url)
    await warm(gateway, KNOWN[:1])
    rows = [["Name", "Domain"], ["Steven Morris", "apple.com"], ["Eve Park", "apple.com"]]
    list_id = (await upload(gateway, csv_bytes(rows)))["data"]["list_id"]
    resp = await gateway.post("/v2/email_finder/list/cancel", json={"list_id": list_id},
                              headers=auth())  # fmt: skip
    body = await resp.json()
    assert body["status"] == "success" and body["data"]["name"] == "list.csv"
    done = await until_done(gateway, list_id)
    assert done["data"]["progress_status"] == "cancelled"
    again = await gateway.post("/v2/email_finder/list/cancel", json={"list_id": list_id},
                               headers=auth())  # fmt: skip
    assert (await again.json())["error"]["code"] == 1116
    for _ in range(50):
        link = await result_link(gateway, list_id)
        if link["status"] == "success":
            break
        await asyncio.sleep(0.1)
    _, data = await fetch(link["data"]["url"])
    statuses = column(csv_rows(data), "Clearout Finder Status")
    assert statuses[0] == "Found", "the known row keeps its answer"
    resp = await gateway.post("/v2/email_finder/list/remove", json={"list_id": list_id},
                              headers=auth())  # fmt: skip
    assert (await resp.json())["status"] == "success"
    assert (await progress(gateway, list_id))["error"]["code"] == 1008
    assert sandbox.lists == {}, "upstream's list was removed too"


async def test_a_failed_upstream_part_is_reported_and_settled_from_what_it_charged(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """Upstream's list fails half-way: the list says failed, and only what upstream charged
    leaves the team's budget."""
    alpha = team("alpha", Quota(credits_per_day=1000))
    gateway = await make_gateway(teams=[alpha, team("beta")], redis_url=redis_url)
    rows = [["Name", "Domain"], *([f"Person {c}", "listfail.test"] for c in "ABCD")]
    list_id = (await upload(gateway, csv_bytes(rows)))["data"]["list_id"]
    done = await until_done(gateway, list_id)
    assert done["data"]["progress_status"] == "failed"
    assert 0 < done["data"]["percentage"] < 100

    async def spent() -> float:
        return await metric_value(gateway, "clearout_gateway_credits_spent_total", team="alpha")

    for _ in range(50):
        if await spent():
            break
        await asyncio.sleep(0.1)
    assert await spent() == 8, "two of four rows were answered (and charged) before it failed"
    left = await gateway.get("/admin/teams", headers={"Authorization": ADMIN_TOKEN})
    row = next(t for t in (await left.json())["data"]["teams"] if t["name"] == "alpha")
    assert row["used"]["day"] == 8, "the reservation settled to the charge"


async def test_harvest_makes_a_later_instant_lookup_a_hit(
    gateway: Client, sandbox: Sandbox
) -> None:
    """An upstream list's result rows fill the cache: asking one of them is free."""
    rows = [["Name", "Domain"], ["Gil Hart", "apple.com"], ["nobody else", "apple.com"]]
    list_id = (await upload(gateway, csv_bytes(rows)))["data"]["list_id"]
    await until_done(gateway, list_id)
    for name in ("Gil Hart", "nobody else"):
        resp = await gateway.post(INSTANT, json={"name": name, "domain": "apple.com"},
                                  headers=auth())  # fmt: skip
        assert resp.headers["X-Cache"] == "HIT", name
    assert sandbox.calls_to("instant") == 0


async def test_import_of_a_result_file_warms_the_cache_and_skips_expired_rows(
    gateway: Client, sandbox: Sandbox
) -> None:
    """A past Clearout result file: fresh rows answer lookups, stale or unusable ones are
    skipped and counted."""
    header = ["Full Name", "Domain", *RESULT_COLUMNS]
    fresh = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    stale = "2020-01-01 00:00:00"
    rows = [header,
            ["Hal Ives", "apple.com", "hal ives", "hal", "ives", "apple.com", "apple",
             "hal.ives@apple.com", "91", "yes", "Found", "", fresh],
            ["Ida Joy", "apple.com", "", "", "", "", "", "", "", "", "Not Found",
             "No email found", fresh],
            ["Old Timer", "apple.com", "", "", "", "", "", "old@apple.com", "80", "yes", "Found",
             "", stale],
            ["", "apple.com", "", "", "", "", "", "x@apple.com", "", "", "Found", "", fresh],
            ["Odd Row", "apple.com", "", "", "", "", "", "", "", "", "Error", "", fresh]]  # fmt: skip
    form = aiohttp.FormData()
    form.add_field("file", csv_bytes(rows), filename="past.csv", content_type="text/csv")
    resp = await gateway.post("/admin/cache/import", data=form,
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
    assert resp.status == 200
    assert (await resp.json())["data"] == {"imported": 2, "skipped": 3}
    hit = await gateway.post(INSTANT, json={"name": "Hal Ives", "domain": "apple.com"},
                             headers=auth())  # fmt: skip
    assert hit.headers["X-Cache"] == "HIT"
    assert (await hit.json())["data"]["emails"][0]["email_address"] == "hal.ives@apple.com"
    miss = await gateway.post(INSTANT, json={"name": "Old Timer", "domain": "apple.com"},
                              headers=auth())  # fmt: skip
    assert miss.headers["X-Cache"] == "MISS"
    resp = await gateway.post("/admin/cache/import", data=form, headers=auth())
    assert resp.status == 401, "the admin token is needed"


async def test_other_teams_see_neither_the_list_nor_its_link(gateway: Client) -> None:
    """Another team gets Clearout's unknown-list answers; a tampered or expired link is 403."""
    rows = [["Name", "Domain"], ["Jo King", "apple.com"]]
    list_id = (await upload(gateway, csv_bytes(rows)))["data"]["list_id"]
    await until_done(gateway, list_id)
    assert (await progress(gateway, list_id, "beta"))["error"]["code"] == 1008
    assert (await result_link(gateway, list_id, "beta"))["error"]["code"] == 1029
    url = (await result_link(gateway, list_id))["data"]["url"]
    assert (await fetch(url))[0] == 200
    tampered = url.replace("signature=", "signature=0")
    status, body = await fetch(tampered)
    assert status == 403 and b"9301" in body
    expired = url.split("?")[0] + "?expires=1&signature=" + url.split("signature=")[1]
    assert (await fetch(expired))[0] == 403


async def test_two_replicas_share_a_list(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """Uploaded on one replica, followed and downloaded on the other."""
    first = await make_gateway(redis_url=redis_url)
    second = await make_gateway(redis_url=redis_url)
    rows = [["Name", "Domain"], ["Kim Lane", "apple.com"], ["Lou Moss", "apple.com"]]
    list_id = (await upload(first, csv_bytes(rows)))["data"]["list_id"]
    done = await until_done(second, list_id)
    assert done["data"]["progress_status"] == "completed"
    status, data = await fetch((await result_link(second, list_id))["data"]["url"])
    assert status == 200
    assert column(csv_rows(data), "Clearout Finder Status") == ["Found", "Found"]


async def test_bypass_sends_the_file_untouched(gateway: Client, sandbox: Sandbox) -> None:
    """`X-Gateway-Cache: bypass` (or a team's `bulk_cache: false`) forwards the whole file."""
    await warm(gateway, KNOWN[:1])
    rows = [["Name", "Domain"], ["Steven Morris", "apple.com"], ["Steven Morris", "apple.com"]]
    body = await upload(gateway, csv_bytes(rows), headers={**auth(), "X-Gateway-Cache": "bypass"})
    assert body["data"]["list_id"] in sandbox.lists, "upstream's own list id"
    assert len(sent_upstream(sandbox)) == 2


async def test_opting_out_per_team(make_gateway: GatewayFactory, sandbox: Sandbox) -> None:
    """A team with `bulk_cache: false` always sends its files whole."""
    gateway = await make_gateway(teams=[replace(team("alpha"), bulk_cache=False), team("beta")])
    rows = [["Name", "Domain"], ["Max Noon", "apple.com"]]
    body = await upload(gateway, csv_bytes(rows))
    assert body["data"]["list_id"] in sandbox.lists


@pytest.mark.parametrize("planned_by", ["this gateway", "an older gateway"])
async def test_every_row_gets_its_persons_answer_in_order(
    gateway: Client, sandbox: Sandbox, tmp_path: Path, planned_by: str
) -> None:
    """Blank, short and unnamed rows, exact repeats and respellings, known and unknown people:
    each row keeps its place and gets its own person's answer.  A list planned by an older
    gateway (no per-row person ids stored) is keyed again at the merge, with the same result."""
    await warm(gateway, KNOWN[:2])
    rows = [["Full Name", "Domain", "Notes"], ["Steven Morris", "apple.com", "1"],
            ["", "", ""], ["Bob Stone", "apple.com"], ["no domain here", "", "x"],
            ["no domain here", "", "x"], ["STONE, BOB", "https://www.apple.com/", "3"],
            ["Ann Lee", "apple.com", "4"], ["Cara Diaz", "apple.com", "5"],
            ["Dr. Steven Morris", "APPLE.COM", "6"]]  # fmt: skip
    list_id = (await upload(gateway, csv_bytes(rows)))["data"]["list_id"]
    if planned_by == "an older gateway":
        (tmp_path / "cgw-lists" / f"{list_id}.people").unlink()
    assert (await until_done(gateway, list_id))["data"]["progress_status"] == "completed"
    assert sorted(r[0] for r in sent_upstream(sandbox)) == ["Bob Stone", "Cara Diaz",
                                                             "no domain here"]  # fmt: skip
    _, data = await fetch((await result_link(gateway, list_id))["data"]["url"])
    result = csv_rows(data)
    assert [r[:3] for r in result[1:]] == [[*r, *[""] * (3 - len(r))] for r in rows[1:]]
    emails = column(result, "Clearout Finder Email Address")
    assert emails[:4] == ["steven.morris@apple.com", "", "bob.stone@apple.com", emails[4]]
    assert emails[5:] == ["bob.stone@apple.com", "ann.lee@apple.com", "cara.diaz@apple.com",
                          "steven.morris@apple.com"]  # fmt: skip
    answers = [r[3:] for r in result[1:]]
    assert answers[1] == [""] * len(RESULT_COLUMNS), "a blank row gets empty result columns"
    assert answers[3] == answers[4], "exact repeats of an unnamed row share its answer"
    assert answers[3][RESULT_COLUMNS.index("Clearout Finder Status")], "upstream answered it"
