"""Budgets end to end: credit reservations, settlement, rates, governor, ownership.

Every test runs gateway app instances over HTTP against a real Redis and the
sandbox as the upstream; counters are read back from Redis itself.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import math
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import openpyxl
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from gateway.budget.credits_redis import RedisBudget
from gateway.budget.governor import governor_shape
from gateway.sandbox import Sandbox
from gateway.teams import Quota, Team
from tests.conftest import ADMIN_TOKEN, GatewayFactory, auth, contacts_csv, team
from tests.servers import RedisServer

Client = TestClient[web.Request, web.Application]

INSTANT = "/v2/email_finder/instant"
QUEUE_STATUS = "/v2/email_finder/instant/queue_status"
BULK = "/v2/email_finder/bulk"
PROGRESS = "/v2/email_finder/bulk/progress_status"
DOWNLOAD = "/v2/email_finder/download/result"
CANCEL = "/v2/email_finder/list/cancel"
REMOVE = "/v2/email_finder/list/remove"
DAY = "X-Gateway-Credits-Remaining-Day"
MONTH = "X-Gateway-Credits-Remaining-Month"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
UNKNOWN_ID = "0123456789abcdef01234567"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# Five distinct rows (3 found at 4, 1 role at 2, 1 not found at 0 → 14 credits)
# plus one exact duplicate: six data rows.
LIST_ROWS = [
    ("Ann Lee", "apple.com"),
    ("Bo Chen", "apple.com"),
    ("Cy Diaz", "apple.com"),
    ("Nobody Here", "apple.com"),
    ("info", "apple.com"),
    ("Ann Lee", "apple.com"),
]
LIST_CREDITS = 3 * 4 + 2


def people(count: int, first: str = "Ann") -> list[str]:
    """Distinct, letters-only names the sandbox finds: Ann Aaa, Ann Aab, …"""
    tails = itertools.product(string.ascii_lowercase, repeat=3)
    return [f"{first} {''.join(t).capitalize()}" for t in itertools.islice(tails, count)]


async def ask(
    client: Client, body: dict[str, Any], team_name: str = "alpha", **headers: str
) -> tuple[int, Any, Any]:
    """(status, response headers, JSON body or None) of one instant lookup."""
    resp = await client.post(INSTANT, json=body, headers={**auth(team_name), **headers})
    raw = await resp.read()
    return resp.status, resp.headers, json.loads(raw) if raw else None


async def used(redis_url: str, who: Team) -> tuple[int, int]:
    """The team's (day, month) credit counters, straight from Redis."""
    client = Redis.from_url(redis_url)
    try:
        return await RedisBudget(client).used(who)
    finally:
        await client.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return await check()


async def metric(client: Client, name: str, **labels: str) -> float:
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def contacts_xlsx(rows: list[tuple[str, str]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Full Name", "Domain"])
    for row in rows:
        sheet.append(list(row))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def upload(
    client: Client,
    data: bytes,
    filename: str = "contacts.csv",
    headers: dict[str, str] | None = None,
    content_type: str = "text/csv",
) -> tuple[int, Any, Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type=content_type)
    resp = await client.post(BULK, data=form, headers=headers or auth())
    return resp.status, resp.headers, await resp.json()


async def progress(client: Client, list_id: str, headers: dict[str, str]) -> Any:
    resp = await client.get(PROGRESS, params={"list_id": list_id}, headers=headers)
    assert resp.status == 200
    return await resp.json()


async def wait_completed(client: Client, list_id: str, headers: dict[str, str]) -> None:
    async def done() -> bool:
        body = await progress(client, list_id, headers)
        return bool(body["data"]["progress_status"] == "completed")

    assert await eventually(done), "the list never completed"


# ---- 1. no overshoot under concurrency across replicas -----------------------------


async def test_two_hundred_concurrent_lookups_over_two_replicas_never_overshoot(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """200 distinct paid lookups at once, budget for 50: exactly 50 are paid for."""
    alpha = team("alpha", Quota(credits_per_day=200))
    # A slow CI machine must not turn this into a test of Redis timeouts (503):
    # the claim here is that concurrent reservations never overshoot.
    first = await make_gateway(teams=[alpha], redis_url=redis_url, redis_timeout=2.0)
    second = await make_gateway(teams=[alpha], redis_url=redis_url, redis_timeout=2.0)
    # Upstream latency keeps every reservation in flight at the same moment.
    sandbox.config.latency = 0.05
    results = await asyncio.gather(
        *(
            ask((first, second)[i % 2], {"name": name, "domain": "example.com"})
            for i, name in enumerate(people(200))
        )
    )
    found = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 402]
    assert len(found) == 50 and len(refused) == 150, sorted({r[0] for r in results})
    assert all(body["data"]["emails"][0]["email_address"] for _, _, body in found)
    for _, headers, body in refused:
        assert body["status"] == "failed" and body["error"]["code"] == 9200
        assert headers["X-Gateway-Error"] == "quota_exceeded"
        assert headers[DAY] == "0"
    assert sandbox.calls_to("instant") == 50
    day, month = await used(redis_url, alpha)
    overshoot = day - 200
    assert (day, month, overshoot) == (200, 200, 0)
    resp = await second.get("/admin/teams", headers=ADMIN)
    row = next(t for t in (await resp.json())["data"]["teams"] if t["name"] == "alpha")
    assert row["used"] == {"day": 200, "month": 200}
    assert row["remaining"] == {"day": 0, "month": None}
    refusals = 0.0
    for client in (first, second):
        refusals += await metric(
            client, "clearout_gateway_quota_rejections_total", team="alpha", kind="credits_day"
        )
    assert refusals == 150


# ---- 2. settle and refund by outcome ------------------------------------------------


async def test_each_outcome_settles_to_its_price(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    alpha = team("alpha", Quota(credits_per_day=100))
    gateway = await make_gateway(teams=[alpha], redis_url=redis_url)

    async def spend(body: dict[str, Any], status: int) -> int:
        before = (await used(redis_url, alpha))[0]
        got = await ask(gateway, body)
        assert got[0] == status, got
        return (await used(redis_url, alpha))[0] - before

    assert await spend({"name": "Nobody Here", "domain": "apple.com"}, 200) == 0
    assert await spend({"name": "Ann Lee", "domain": "unavailable.test"}, 503) == 0
    assert await spend({"name": "info", "domain": "apple.com"}, 200) == 2
    assert await spend({"name": "Ann Lee", "domain": "charged.test"}, 200) == 3
    assert await spend({"name": "Ann Lee", "domain": "apple.com"}, 200) == 4
    assert (await used(redis_url, alpha))[0] == 9

    # A 524 keeps the worst-case price held while the lookup is queued upstream ...
    sandbox.config.queue_seconds = 0.5
    queued = {"name": "info", "domain": "queued.test"}
    status, _, body = await ask(gateway, queued)
    assert status == 524
    qid = body["error"]["additional_info"]["queue_id"]
    assert (await used(redis_url, alpha))[0] == 13
    status, headers, _ = await ask(gateway, queued)  # the same 524, nothing reserved again
    assert (status, headers["X-Cache"]) == (524, "COALESCED")
    assert (await used(redis_url, alpha))[0] == 13
    resp = await gateway.get(QUEUE_STATUS, params={"qid": qid}, headers=auth())
    assert (await resp.json())["data"]["query_status"] == "running"
    assert (await used(redis_url, alpha))[0] == 13
    # ... and completion settles it to the actual price (a role address: 2).
    await asyncio.sleep(0.55)
    for _ in range(2):  # asked twice: settled once
        resp = await gateway.get(QUEUE_STATUS, params={"qid": qid}, headers=auth())
        assert (await resp.json())["data"]["query_status"] == "completed"
        assert (await used(redis_url, alpha))[0] == 11
    assert sandbox.calls_to("instant") == 6


async def test_queued_reservation_that_never_completes_is_refunded_by_the_poller(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    alpha = team("alpha", Quota(credits_per_day=100))
    sandbox.config.queue_seconds = 60  # never completes within the test
    gateway = await make_gateway(
        teams=[alpha], redis_url=redis_url, queued_reservation_ttl=1, queue_poll_interval=0.2
    )
    queued = {"name": "Ann Lee", "domain": "queued.test"}
    assert (await ask(gateway, queued))[0] == 524
    assert await used(redis_url, alpha) == (4, 4)
    await asyncio.sleep(0.5)
    # Polled upstream meanwhile (still running), and still held: not refunded early.
    assert sandbox.calls_to("instant/queue_status") >= 1
    assert await used(redis_url, alpha) == (4, 4)

    async def refunded() -> bool:
        return await used(redis_url, alpha) == (0, 0)

    assert await eventually(refunded), "the expired reservation was never refunded"
    # Given up on: the next ask is a new lookup, not a replay of the dead queue id.
    status, headers, _ = await ask(gateway, queued)
    assert (status, headers["X-Cache"]) == (524, "MISS")
    assert sandbox.calls_to("instant") == 2
    assert await used(redis_url, alpha) == (4, 4)


# ---- 3. remaining-credit headers ----------------------------------------------------


async def test_remaining_credit_headers_on_misses_and_hits(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    alpha = team("alpha", Quota(credits_per_day=100, credits_per_month=1000))
    gateway = await make_gateway(teams=[alpha, team("beta")], redis_url=redis_url)
    steven = {"name": "Steven Morris", "domain": "apple.com"}

    def remaining(headers: Any) -> tuple[str, str, str]:
        return headers["X-Cache"], headers[DAY], headers[MONTH]

    status, headers, _ = await ask(gateway, steven)
    assert status == 200 and remaining(headers) == ("MISS", "96", "996")
    status, headers, _ = await ask(gateway, {"name": "Dr. Steven Morris", "domain": "apple.com"})
    assert status == 200 and remaining(headers) == ("HIT", "96", "996")
    status, headers, _ = await ask(gateway, {"name": "info", "domain": "apple.com"})
    assert status == 200 and remaining(headers) == ("MISS", "94", "994")
    status, headers, _ = await ask(gateway, {"name": "Nobody Here", "domain": "apple.com"})
    assert status == 200 and remaining(headers) == ("MISS", "94", "994")
    await asyncio.sleep(1.05)  # past the remembered figure: re-read from the store
    status, headers, _ = await ask(gateway, steven)
    assert status == 200 and remaining(headers) == ("HIT", "94", "994")

    status, headers, _ = await ask(gateway, steven, "beta")
    assert status == 200 and remaining(headers) == ("HIT", "unlimited", "unlimited")
    status, headers, _ = await ask(gateway, {"name": "Bo Chen", "domain": "apple.com"}, "beta")
    assert status == 200 and remaining(headers) == ("MISS", "unlimited", "unlimited")
    assert sandbox.calls_to("instant") == 4


# ---- 4. bulk reservations and settlement --------------------------------------------


async def test_bulk_reserves_per_distinct_row_and_settles_from_the_result(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """A list sent to Clearout whole (the team opts out of the bulk cache) reserves per
    distinct row and settles from the result file."""
    alpha = replace(team("alpha", Quota(credits_per_day=40)), bulk_cache=False)
    gateway = await make_gateway(teams=[alpha], redis_url=redis_url)

    status, _, body = await upload(gateway, contacts_csv(LIST_ROWS))
    assert status == 200, body
    list_id = body["data"]["list_id"]
    assert await used(redis_url, alpha) == (20, 20)  # 5 distinct rows x 4

    eleven = [(name, "apple.com") for name in people(11, "Bo")]
    status, headers, body = await upload(gateway, contacts_csv(eleven), "eleven.csv")
    assert status == 402 and body["error"]["code"] == 9200, body
    assert headers["X-Gateway-Error"] == "quota_exceeded"
    assert sandbox.calls_to("bulk") == 1  # refused before any upstream call
    assert await used(redis_url, alpha) == (20, 20)

    await wait_completed(gateway, list_id, auth())

    async def settled() -> bool:
        return await used(redis_url, alpha) == (LIST_CREDITS, LIST_CREDITS)

    assert await eventually(settled), await used(redis_url, alpha)

    # The same rows as XLSX are counted the same way, and settle the same way.
    status, _, body = await upload(
        gateway, contacts_xlsx(LIST_ROWS), "contacts.xlsx", content_type=XLSX_TYPE
    )
    assert status == 200, body
    xlsx_id = body["data"]["list_id"]
    assert await used(redis_url, alpha) == (LIST_CREDITS + 20, LIST_CREDITS + 20)
    await wait_completed(gateway, xlsx_id, auth())

    async def settled_twice() -> bool:
        return await used(redis_url, alpha) == (2 * LIST_CREDITS, 2 * LIST_CREDITS)

    assert await eventually(settled_twice), await used(redis_url, alpha)
    assert sandbox.calls_to("bulk") == 2


# ---- 5. team request rate -----------------------------------------------------------


async def test_team_rate_limit_answers_429_with_retry_after_and_recovers(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    alpha = team("alpha", Quota(requests_per_second=2))
    gateway = await make_gateway(teams=[alpha, team("beta")], redis_url=redis_url)
    steven = {"name": "Steven Morris", "domain": "apple.com"}
    assert (await ask(gateway, steven, "beta"))[0] == 200  # cached: the rest are hits

    results = [await ask(gateway, steven) for _ in range(3)]
    assert [r[0] for r in results] == [200, 200, 429]
    _, headers, body = results[2]
    assert body["error"]["code"] == 9201 and headers["X-Gateway-Error"] == "rate_limited"
    assert int(headers["Retry-After"]) >= 1
    # Another team is not slowed down by alpha's limit.
    assert [(await ask(gateway, steven, "beta"))[0] for _ in range(5)] == [200] * 5

    await asyncio.sleep(1.0)
    assert (await ask(gateway, steven))[0] == 200
    rejections = await metric(
        gateway, "clearout_gateway_quota_rejections_total", team="alpha", kind="rate"
    )
    assert rejections == 1
    assert sandbox.calls_to("instant") == 1


# ---- 6. upstream governor -----------------------------------------------------------


async def test_governor_serves_a_waiting_team_the_next_token(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """Alpha's burst of 8 cannot starve beta's single lookup on the same replica."""
    capacity, rate = governor_shape(120)  # 2 at once, then ~1.98 per second
    gateway = await make_gateway(redis_url=redis_url, upstream_rpm=120)
    started = time.monotonic()

    async def timed(name: str, team_name: str) -> tuple[float, int]:
        status, _, _ = await ask(gateway, {"name": name, "domain": "apple.com"}, team_name)
        return time.monotonic() - started, status

    alpha: list[asyncio.Task[tuple[float, int]]] = []
    for name in people(8):
        alpha.append(asyncio.create_task(timed(name, "alpha")))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    beta_done, beta_status = await timed("Bo Chen", "beta")
    alpha_done = sorted(await asyncio.gather(*alpha))
    assert beta_status == 200 and all(status == 200 for _, status in alpha_done)
    # Alpha's first two take the burst; beta, waiting behind six of alpha's,
    # gets the very next token: answered before alpha's third.
    assert beta_done < alpha_done[2][0], (beta_done, alpha_done)
    assert beta_done < alpha_done[-1][0] - 2.0
    assert_paced(sandbox.instant_times, 9, capacity, rate)


async def test_governor_bucket_is_shared_by_replicas(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """Two replicas together stay within one GATEWAY_UPSTREAM_RPM, not two."""
    capacity, rate = governor_shape(120)
    first = await make_gateway(redis_url=redis_url, upstream_rpm=120)
    second = await make_gateway(redis_url=redis_url, upstream_rpm=120)
    results = await asyncio.gather(
        *(
            ask((first, second)[i % 2], {"name": name, "domain": "apple.com"})
            for i, name in enumerate(people(8))
        )
    )
    assert [r[0] for r in results] == [200] * 8
    assert_paced(sandbox.instant_times, 8, capacity, rate)


def assert_paced(instant_times: list[float], calls: int, capacity: int, rate: float) -> None:
    """The governor's documented bound, measured where the upstream sees the calls."""
    times = sorted(instant_times)
    assert len(times) == calls
    busiest = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    assert busiest <= math.ceil(capacity + rate), (busiest, times)
    # Any window of d seconds admits fewer than capacity + rate * d calls
    # (a few ms allowed for the network between admission and the sandbox).
    span = times[-1] - times[0]
    assert len(times) < capacity + rate * (span + 0.02), (span, times)


async def test_governor_refuses_at_once_when_upstream_blocks_past_the_deadline(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """Upstream says 0 calls left until its reset a minute away: no waiting for it."""
    alpha = team("alpha", Quota(credits_per_day=100))
    gateway = await make_gateway(teams=[alpha], redis_url=redis_url, upstream_rpm=600)
    sandbox.config.rate_limit_per_minute = 1
    status, headers, _ = await ask(gateway, {"name": "Ann Lee", "domain": "apple.com"})
    assert status == 200 and headers["X-RateLimit-Remaining"] == "0"
    started = time.monotonic()
    status, headers, body = await ask(gateway, {"name": "Bo Chen", "domain": "apple.com"})
    assert time.monotonic() - started < 1.0
    assert status == 429 and body["error"]["code"] == 9202
    assert headers["X-Gateway-Error"] == "upstream_rate_limited"
    assert 30 <= int(headers["Retry-After"]) <= 61
    assert sandbox.calls_to("instant") == 1
    assert await used(redis_url, alpha) == (4, 4)  # the refused lookup's hold is returned
    refusals = await metric(
        gateway, "clearout_gateway_quota_rejections_total", team="alpha", kind="upstream_rate"
    )
    assert refusals == 1


# ---- 7. ownership of queue ids and list ids -----------------------------------------


async def test_ids_of_one_team_are_invisible_to_another(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """Queue and list ids of Clearout's own (lists sent whole) are never shown to another team.

    (The gateway's own bulk lists are covered in tests/test_bulk_saver.py.)
    """
    sandbox.config.queue_seconds = 60  # alpha's lookup stays queued: "running"
    gateway = await make_gateway(
        teams=[replace(team(name), bulk_cache=False) for name in ("alpha", "beta")],
        redis_url=redis_url,
    )
    status, _, body = await ask(gateway, {"name": "Ann Lee", "domain": "queued.test"})
    assert status == 524
    qid = body["error"]["additional_info"]["queue_id"]
    data = contacts_csv(LIST_ROWS)
    status, _, body = await upload(gateway, data)
    assert status == 200
    list_id = body["data"]["list_id"]
    await wait_completed(gateway, list_id, auth())

    async def call(route: str, rid: str, headers: dict[str, str]) -> tuple[int, Any]:
        if route == "queue_status":
            resp = await gateway.get(QUEUE_STATUS, params={"qid": rid}, headers=headers)
        elif route == "progress_status":
            resp = await gateway.get(PROGRESS, params={"list_id": rid}, headers=headers)
        else:
            path = {"download": DOWNLOAD, "cancel": CANCEL, "remove": REMOVE}[route]
            payload: dict[str, Any] = {"list_id": rid}
            if route == "remove":
                payload["ignore_result"] = True
            resp = await gateway.post(path, json=payload, headers=headers)
        assert "X-Gateway-Error" not in resp.headers  # indistinguishable from upstream
        return resp.status, await resp.json()

    routes = {
        "queue_status": (qid, {"code": 1104, "message": "Invalid queue ID"}),
        "progress_status": (
            list_id,
            {"code": 1008, "message": "You are not authorized to access this resource"},
        ),
        "download": (list_id, {"code": 1029, "message": "List is not available"}),
        "cancel": (list_id, {"code": 1029, "message": "List is not available"}),
        "remove": (list_id, {"code": 1029, "message": "List is not available"}),
    }
    for route, (_rid, error) in routes.items():
        # What upstream itself answers for an id it does not know ...
        assert await call(route, UNKNOWN_ID, ADMIN) == (200, {"status": "failed", "error": error})
    before = dict(sandbox.calls)
    for route, (rid, error) in routes.items():
        # ... is exactly what beta gets for alpha's ids, without any upstream call.
        assert await call(route, rid, auth("beta")) == (200, {"status": "failed", "error": error})
    assert dict(sandbox.calls) == before

    # Alpha and the admin token get real answers for the same ids.
    for headers in (auth("alpha"), ADMIN):
        status, body = await call("queue_status", qid, headers)
        assert body == {"status": "success", "data": {"query_status": "running"}}
        status, body = await call("progress_status", list_id, headers)
        assert body["data"]["progress_status"] == "completed"
        status, body = await call("download", list_id, headers)
        assert body["status"] == "success" and "/sandbox/results/" in body["data"]["url"]
        status, body = await call("cancel", list_id, headers)
        assert body["error"]["code"] == 1116  # real: the list is no longer running

    # Beta uploading the very same file must not learn alpha's list id (2043).
    status, _, body = await upload(gateway, data, headers=auth("beta"))
    assert status == 200 and body["status"] == "success", body
    beta_list = body["data"]["list_id"]
    assert beta_list != list_id
    assert sandbox.calls_to("bulk") == 3  # 2043 for the first try, then a fresh upload
    assert (await progress(gateway, beta_list, auth("beta")))["status"] == "success"
    assert (await progress(gateway, beta_list, auth("alpha")))["error"]["code"] == 1008
    # Alpha uploading its own file again does get the duplicate answer naming its list.
    status, _, body = await upload(gateway, data)
    assert body["error"]["code"] == 2043
    assert body["error"]["additional_info"]["list_id"] == list_id

    status, body = await call("remove", list_id, auth("alpha"))
    assert body["status"] == "success"
    status, body = await call("cancel", beta_list, ADMIN)  # still running: cancelled
    assert body["status"] == "success"


# ---- 8. quota store down: deny or allow ---------------------------------------------


async def test_redis_down_policy_deny_and_allow_then_enforced_again(
    make_gateway: GatewayFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    alpha = team("alpha", Quota(credits_per_day=8))
    server = RedisServer(tmp_path)
    server.start()
    try:
        deny = await make_gateway(
            teams=[alpha], redis_url=server.url, quota_on_store_error="deny", local_cache_ttl=0
        )
        allow = await make_gateway(
            teams=[alpha], redis_url=server.url, quota_on_store_error="allow", local_cache_ttl=0
        )
        names = iter(people(10))

        async def lookup(client: Client) -> tuple[int, Any, Any]:
            return await ask(client, {"name": next(names), "domain": "apple.com"})

        assert (await lookup(deny))[0] == 200
        assert await used(server.url, alpha) == (4, 4)
        server.stop()

        started = time.monotonic()
        status, headers, body = await lookup(deny)
        assert time.monotonic() - started < 1.0
        assert status == 503 and body["error"]["code"] == 9400
        assert headers["X-Gateway-Error"] == "store_unavailable"
        assert sandbox.calls_to("instant") == 1  # nothing paid for that nobody can count
        status, _, body = await lookup(allow)
        assert status == 200 and body["data"]["emails"]
        assert sandbox.calls_to("instant") == 2

        server.start()  # empty again: it kept nothing on disk
        await asyncio.sleep(1.1)  # the back-off after the last failure
        assert (await lookup(deny))[0] == 200
        assert (await lookup(allow))[0] == 200
        assert await used(server.url, alpha) == (8, 8)
        for client in (deny, allow):
            status, headers, body = await lookup(client)
            assert status == 402 and body["error"]["code"] == 9200
        assert sandbox.calls_to("instant") == 4
    finally:
        server.stop()


# ---- 9. one team's refusal is not another team's answer -----------------------------


async def test_a_team_out_of_credits_does_not_fail_another_teams_identical_lookup(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """Beta coalesced onto alpha's lookup must not inherit alpha's 402.

    Covers the retry in `Finder._answer` (QuotaExceeded.team): without it, beta
    got "Team alpha has not enough credits" for a lookup it may pay for.
    """
    alpha = team("alpha", Quota(credits_per_day=0))
    gateway = await make_gateway(
        teams=[alpha, team("beta")], redis_url=redis_url, redis_timeout=2.0
    )
    steven = {"name": "Steven Morris", "domain": "apple.com"}
    control = Redis.from_url(redis_url)
    try:
        # Hold writes for a moment: alpha leads the flight and waits on its
        # lock while beta, asking the same person, joins it in-process.
        await control.client_pause(400, all=False)  # writes only
        first = asyncio.create_task(ask(gateway, steven, "alpha"))
        await asyncio.sleep(0.15)
        second = asyncio.create_task(ask(gateway, steven, "beta"))
        (a_status, _, a_body), (b_status, b_headers, b_body) = await asyncio.gather(first, second)
    finally:
        await control.aclose()
    assert a_status == 402 and a_body["error"]["code"] == 9200
    assert b_status == 200, (b_status, b_body)
    assert b_body["data"]["emails"][0]["email_address"] == "steven.morris@apple.com"
    assert b_headers[DAY] == "unlimited"
    assert sandbox.calls_to("instant") == 1
