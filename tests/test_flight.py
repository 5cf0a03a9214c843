"""The lookup's Redis scripts and the script runner, against a real redis-server.

`gateway.lookup.flight` does a miss in two scripts; these tests hold the
properties the request-level tests cannot see: a look sent twice (a reply
lost, the script sent again) does not leave its caller waiting on its own
lease; the finish wakes other replicas only when one of them is waiting; and
`gateway.store.Script` survives a Redis restart without running a
non-idempotent script twice.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.lookup.entries import CachedAnswer
from gateway.lookup.flight import (
    DONE_PREFIX,
    LOOK_LUA,
    RedisFlights,
    lease_key,
    waiting_key,
)
from gateway.lookup.queued import queued_key
from gateway.metrics import Metrics
from gateway.store import Script, StoreGuard
from tests.servers import RedisServer

KEY = "cgw:c:test-person"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


def flights(redis: aioredis.Redis) -> RedisFlights:
    return RedisFlights(redis, StoreGuard(Metrics(), "cache"), lease_ms=2000)


async def test_a_look_sent_again_with_its_token_still_leads(client: aioredis.Redis) -> None:
    """The look script run twice for one caller (its first reply lost) leads both times."""
    look = Script(client, LOOK_LUA, idempotent=True)
    keys = [KEY, queued_key(KEY), lease_key(KEY), waiting_key(KEY)]
    token = secrets.token_hex(8)
    first = await look(keys, [token, 2000, 1, 2000])
    again = await look(keys, [token, 2000, 1, 2000])
    other = await look(keys, [secrets.token_hex(8), 2000, 1, 2000])
    assert [int(first[0]), int(again[0]), int(other[0])] == [3, 3, 4]  # lead, lead, wait


async def _messages(client: aioredis.Redis, finish: asyncio.Future[None]) -> list[bytes]:
    pubsub = client.pubsub()
    await pubsub.subscribe(DONE_PREFIX + KEY)
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    finish.set_result(None)
    got = []
    while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)):
        got.append(message["data"])
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    return got


async def test_a_finish_wakes_waiters_only_when_someone_waits(client: aioredis.Redis) -> None:
    store = flights(client)
    entry = CachedAnswer(b'{"status":"success","data":{}}', 4, True)

    async def lead_and_finish(*, with_waiter: bool) -> list[bytes]:
        await client.delete(KEY)
        leader = await store.look(KEY, read=True)
        assert leader.kind == "lead"
        if with_waiter:
            assert (await store.look(KEY, read=True)).kind == "wait"
        subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        listening = asyncio.create_task(_messages(client, subscribed))
        await subscribed
        await store.finish(KEY, leader.token, entry, 60, replaced=False)
        return await listening

    # Nobody waited: no message reaches the replicas' listeners.
    assert await lead_and_finish(with_waiter=False) == []
    # Another replica was told to wait: it is woken, and the flag goes with the finish.
    assert await lead_and_finish(with_waiter=True) == [b"1"]
    assert await client.exists(waiting_key(KEY), lease_key(KEY)) == 0
    assert (await store.look(KEY, read=True)).kind == "hit"


COUNT_LUA = "return redis.call('incr', KEYS[1])"


async def test_scripts_run_once_each_across_a_redis_restart(tmp_path: Path) -> None:
    """After a restart the pooled connections are dead and the scripts unknown to Redis:
    the next call still runs, exactly once (a counter, which must not count twice)."""
    server = RedisServer(tmp_path)
    server.start()
    redis = aioredis.Redis.from_url(server.url, socket_timeout=1.0)
    try:
        count = Script(redis, COUNT_LUA, idempotent=False)
        assert await count(["n"]) == 1
        server.stop()
        server.start()  # same port, empty, no scripts loaded
        await asyncio.sleep(0.2)
        assert await count(["n"]) == 1
        assert await count(["n"]) == 2
    finally:
        await redis.aclose()
        server.stop()
