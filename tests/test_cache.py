"""The credit-saving cache against a real Redis and the sandbox upstream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.http.keys import FINDER
from gateway.sandbox import Sandbox
from tests.conftest import ADMIN_TOKEN, GatewayFactory, auth
from tests.servers import RedisServer

INSTANT = "/v2/email_finder/instant"
STEVEN = {"name": "Steven Morris", "domain": "apple.com"}
SPELLINGS = [
    {"name": "Steven Morris", "domain": "apple.com"},
    {"name": "Dr. Steven Morris", "domain": "https://www.Apple.com/about"},
    {"name": "Morris, Steven", "domain": "APPLE.COM."},
    {"name": "steven  MORRIS, PhD", "domain": "http://user@apple.com:443/x?y=1"},
]


async def ask(client: TestClient[Any, Any], body: dict[str, Any], team: str = "alpha",
              **headers: str) -> tuple[int, str, Any]:  # fmt: skip
    resp = await client.post(INSTANT, json=body, headers={**auth(team), **headers})
    raw = await resp.read()
    return resp.status, resp.headers.get("X-Cache", ""), json.loads(raw) if raw else None


async def metric(client: TestClient[Any, Any], line: str) -> float:
    text = await (await client.get("/metrics")).text()
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
async def cached(make_gateway: GatewayFactory, redis_url: str) -> TestClient[Any, Any]:
    return await make_gateway(redis_url=redis_url)


async def test_spellings_of_one_person_share_one_paid_lookup(
    cached: TestClient[Any, Any], sandbox: Sandbox
) -> None:
    results = [await ask(cached, body) for body in SPELLINGS]
    assert [r[1] for r in results] == ["MISS", "HIT", "HIT", "HIT"]
    assert all(r[2] == results[0][2] for r in results), "a hit replays the upstream body"
    assert sandbox.calls_to("instant") == 1
    assert await metric(cached, 'clearout_gateway_cache_requests_total{result="hit"}') == 3
    assert await metric(cached, 'clearout_gateway_credits_saved_total{team="alpha"}') == 12
    assert await metric(cached, 'clearout_gateway_credits_spent_total{team="alpha"}') == 4


async def test_client_cache_headers_do_not_bypass_but_gateway_header_does(
    cached: TestClient[Any, Any], sandbox: Sandbox
) -> None:
    await ask(cached, STEVEN)
    assert (await ask(cached, STEVEN, **{"Cache-Control": "no-cache", "Pragma": "no-cache"}))[
        1
    ] == "HIT"
    assert sandbox.calls_to("instant") == 1
    assert (await ask(cached, STEVEN, **{"X-Gateway-Cache": "bypass"}))[1] == "BYPASS"
    assert sandbox.calls_to("instant") == 2
    assert (await ask(cached, STEVEN, **{"X-Gateway-Cache": "refresh"}))[1] == "MISS"
    assert sandbox.calls_to("instant") == 3
    assert (await ask(cached, STEVEN))[1] == "HIT"
    # bypass never writes: a new person asked with bypass is still a miss after.
    other = {"name": "Ann Lee", "domain": "apple.com"}
    await ask(cached, other, **{"X-Gateway-Cache": "bypass"})
    assert (await ask(cached, other))[1] == "MISS"


async def test_found_and_not_found_ttls(make_gateway: GatewayFactory, redis_url: str,
                                        sandbox: Sandbox) -> None:  # fmt: skip
    gateway = await make_gateway(redis_url=redis_url, cache_ttl_found=3,
                                 cache_ttl_not_found=1, local_cache_ttl=0)  # fmt: skip
    nobody = {"name": "Nobody Atall", "domain": "apple.com"}
    assert (await ask(gateway, STEVEN))[1] == "MISS"
    assert (await ask(gateway, nobody))[1] == "MISS"
    assert (await ask(gateway, nobody))[1] == "HIT"
    await asyncio.sleep(1.2)
    assert (await ask(gateway, nobody))[1] == "MISS", "not-found entry outlived its TTL"
    assert (await ask(gateway, STEVEN))[1] == "HIT"
    await asyncio.sleep(2.0)
    assert (await ask(gateway, STEVEN))[1] == "MISS", "found entry outlived its TTL"


@pytest.mark.parametrize("domain", ["unavailable.test", "ratelimited.test", "nocredits.test"])
async def test_errors_are_never_cached(cached: TestClient[Any, Any], sandbox: Sandbox,
                                       domain: str) -> None:  # fmt: skip
    body = {"name": "Ann Lee", "domain": domain}
    first, second = await ask(cached, body), await ask(cached, body)
    assert first[0] == second[0] >= 400
    assert first[1] == second[1] == "MISS"
    assert sandbox.calls_to("instant") == 2


async def test_unsupported_name_answer_is_not_cached(cached: TestClient[Any, Any],
                                                     sandbox: Sandbox) -> None:  # fmt: skip
    body = {"name": "R2 D2", "domain": "apple.com"}
    assert (await ask(cached, body))[2]["error"]["code"] == 1088
    assert (await ask(cached, body))[1] == "MISS"
    assert sandbox.calls_to("instant") == 2


async def test_team_scope_isolates_and_shared_scope_shares(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    isolated = await make_gateway(redis_url=redis_url, cache_scope="team")
    assert (await ask(isolated, STEVEN, "alpha"))[1] == "MISS"
    assert (await ask(isolated, STEVEN, "beta"))[1] == "MISS"
    assert (await ask(isolated, STEVEN, "alpha"))[1] == "HIT"
    shared = await make_gateway(redis_url=redis_url)
    other = {"name": "Ann Lee", "domain": "apple.com"}
    assert (await ask(shared, other, "alpha"))[1] == "MISS"
    assert (await ask(shared, other, "beta"))[1] == "HIT"


async def test_fifty_concurrent_misses_over_two_replicas_make_one_call(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """Two app instances share one Redis: 50 concurrent identical asks → 1 upstream call."""
    sandbox.config.latency = 0.3
    first = await make_gateway(redis_url=redis_url)
    second = await make_gateway(redis_url=redis_url)
    results = await asyncio.gather(
        *(ask((first, second)[i % 2], SPELLINGS[i % len(SPELLINGS)]) for i in range(50))
    )
    assert sandbox.calls_to("instant") == 1
    assert all(status == 200 for status, _, _ in results)
    statuses = sorted(x for _, x, _ in results)
    assert statuses.count("MISS") == 1
    assert set(statuses) <= {"MISS", "COALESCED", "HIT"}
    assert statuses.count("COALESCED") >= 40, statuses
    assert all(body == results[0][2] for _, _, body in results)


async def test_in_memory_mode_coalesces_within_one_process(
    make_gateway: GatewayFactory, sandbox: Sandbox
) -> None:
    sandbox.config.latency = 0.2
    gateway = await make_gateway()
    results = await asyncio.gather(*(ask(gateway, STEVEN) for _ in range(20)))
    assert sandbox.calls_to("instant") == 1
    assert sorted(x for _, x, _ in results).count("COALESCED") == 19
    assert (await ask(gateway, STEVEN))[1] == "HIT"


async def test_queued_lookup_completes_into_the_cache(
    cached: TestClient[Any, Any], sandbox: Sandbox
) -> None:
    body = {"name": "Ann Lee", "domain": "queued.test"}
    status, x_cache, first = await ask(cached, body)
    assert (status, x_cache) == (524, "MISS")
    qid = first["error"]["additional_info"]["queue_id"]
    # Asked again while queued: the same 524, no second paid lookup.
    status, x_cache, again = await ask(cached, {"name": "ann lee", "domain": "QUEUED.test"})
    assert (status, x_cache) == (524, "COALESCED")
    assert again["error"]["additional_info"]["queue_id"] == qid
    assert sandbox.calls_to("instant") == 1
    await asyncio.sleep(0.35)
    resp = await cached.get(f"/v2/email_finder/instant/queue_status?qid={qid}", headers=auth())
    assert (await resp.json())["data"]["query_status"] == "completed"
    status, x_cache, hit = await ask(cached, body)
    assert (status, x_cache) == (200, "HIT")
    assert hit["data"]["emails"][0]["email_address"] == "ann.lee@queued.test"
    assert "query_status" not in hit["data"]
    assert sandbox.calls_to("instant") == 1


async def test_background_poller_completes_queued_lookups(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    gateway = await make_gateway(redis_url=redis_url, queue_poll_interval=0.2)
    body = {"name": "Bo Chen", "domain": "queued.test"}
    assert (await ask(gateway, body))[0] == 524
    for _ in range(30):
        await asyncio.sleep(0.1)
        if sandbox.calls_to("instant/queue_status") and (await ask(gateway, body))[1] == "HIT":
            break
    else:
        pytest.fail("the poller never filled the cache")
    assert sandbox.calls_to("instant") == 1


async def test_redis_outage_degrades_to_pass_through_and_recovers(
    make_gateway: GatewayFactory, sandbox: Sandbox, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        gateway = await make_gateway(redis_url=server.url, local_cache_ttl=0)
        assert (await ask(gateway, STEVEN))[1] == "MISS"
        assert (await ask(gateway, STEVEN))[1] == "HIT"
        server.stop()
        for _ in range(3):
            status, x_cache, body = await ask(gateway, STEVEN)
            assert (status, x_cache) == (200, "MISS")
            assert body["data"]["emails"]
        assert await metric(gateway, 'clearout_gateway_store_errors_total{store="cache"}') >= 1
        server.start()  # empty again: it kept nothing on disk
        await asyncio.sleep(1.1)  # the back-off after the last failure
        assert (await ask(gateway, STEVEN))[1] == "MISS"
        assert (await ask(gateway, STEVEN))[1] == "HIT"
    finally:
        server.stop()


def local_copy(client: TestClient[Any, Any], body: dict[str, str]) -> Any:
    cache = client.app[FINDER].cache
    return cache.get_local(cache.key("alpha", body["name"], body["domain"]))


async def dropped(client: TestClient[Any, Any], body: dict[str, str]) -> bool:
    """Whether the replica's in-process copy goes within a second (the notice's trip)."""
    for _ in range(100):
        if local_copy(client, body) is None:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_a_purge_or_refresh_on_one_replica_drops_every_replicas_copy(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """Other replicas drop their in-process copy at once, though it would live 60 s."""
    a = await make_gateway(redis_url=redis_url, local_cache_ttl=60)
    b = await make_gateway(redis_url=redis_url, local_cache_ttl=60)
    await ask(a, STEVEN)
    assert (await ask(b, STEVEN))[1] == "HIT"  # now in b's local layer
    resp = await a.post("/admin/cache/purge", json={"name": "Dr Steven Morris",
                        "domain": "www.apple.com"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
    assert resp.status == 200
    assert (await resp.json())["data"]["deleted"] >= 1
    assert (await ask(a, STEVEN))[1] == "MISS"
    assert await dropped(b, STEVEN)
    assert (await ask(b, STEVEN))[1] == "HIT"  # a's new entry, from Redis
    assert local_copy(b, STEVEN) is not None
    refreshed = await a.post("/v2/email_finder/instant", json=STEVEN,
                             headers={**auth(), "X-Gateway-Cache": "refresh"})  # fmt: skip
    assert refreshed.headers["X-Cache"] == "MISS"
    assert await dropped(b, STEVEN)


async def test_a_lost_notice_leaves_a_copy_for_at_most_the_local_ttl(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """An entry removed behind the replicas' backs (no notice): served until the local TTL."""
    import redis.asyncio as aioredis

    b = await make_gateway(redis_url=redis_url, local_cache_ttl=0.5)
    await ask(b, STEVEN)
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.delete(*[k async for k in client.scan_iter("cgw:c:*")]) == 1
    finally:
        await client.aclose()
    assert (await ask(b, STEVEN))[1] == "HIT"  # stale, within the bound
    await asyncio.sleep(0.55)
    assert (await ask(b, STEVEN))[1] == "MISS"


async def test_admin_purge_needs_the_admin_token(
    make_gateway: GatewayFactory, cached: TestClient[Any, Any]
) -> None:
    resp = await cached.post("/admin/cache/purge", json=STEVEN, headers=auth())
    assert resp.status == 401
    disabled = await make_gateway(admin_token=None)
    resp = await disabled.post("/admin/cache/purge", json=STEVEN,
                               headers={"Authorization": ADMIN_TOKEN})  # fmt: skip
    assert resp.status == 404 and (await resp.json())["error"]["code"] == 9300


async def test_a_crashed_lock_holder_frees_the_key_when_its_lock_expires(
    cached: TestClient[Any, Any], sandbox: Sandbox, redis_url: str
) -> None:
    """A lock left by a replica that died mid-lookup delays others only until it expires."""
    import redis.asyncio as aioredis

    from gateway.lookup.flight import lease_key
    from gateway.lookup.normalize import cache_key

    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set(lease_key("cgw:c:" + cache_key("Steven Morris", "apple.com")),
                         "dead-replica", px=800)  # fmt: skip
        started = asyncio.get_running_loop().time()
        status, x_cache, _ = await ask(cached, STEVEN)
        waited = asyncio.get_running_loop().time() - started
    finally:
        await client.aclose()
    assert (status, x_cache) == (200, "MISS")
    assert 0.6 <= waited < 3.0, waited
    assert sandbox.calls_to("instant") == 1
