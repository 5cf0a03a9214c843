"""Queued lookups: a 524's `queue_id`, remembered with its cache key and team.

When Clearout cannot answer within the caller's timeout it answers 524 with a
`queue_id` and keeps looking.  The gateway records `queue_id → (key, team,
the 524 body)` and `key → queue_id`, so that

* the same person asked again while the lookup is queued gets the same 524
  (no second paid lookup is started), and
* when the queue completes, whether seen by the caller asking `queue_status`
  or by the gateway's own background poller, the result fills the cache and
  the next ask is a hit.

A record also holds the lookup's credit reservation: it is settled when the
queue completes, and refunded by the poller once the record is older than
GATEWAY_QUEUED_RESERVATION_TTL_SECONDS (Redis keeps the record a day longer
so the poller still finds it).  Redis
holds them when configured (one hash per queue id, a key index and a pending
set); otherwise an in-process twin with the same interface does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from gateway.store import live_members

# One hash tag for every key here: FINISH_LUA touches three of them at once,
# which Redis Cluster allows only within one slot.  Queued lookups are rare,
# so one slot carries them easily.
QUEUE_PREFIX = "{cgwq}:q:"
KEY_PREFIX = "{cgwq}:k:"
PENDING = "{cgwq}:pending"


@dataclass(frozen=True, slots=True)
class QueuedLookup:
    qid: str
    key: str
    team: str
    body: bytes
    # The credit reservation held until the lookup completes (Reservation.dumps()),
    # and when it is given up and refunded (epoch seconds) if it never does.
    reservation: str = ""
    expires_at: float = 0.0


class QueuedStore(Protocol):
    async def record(self, item: QueuedLookup, ttl: int) -> None: ...
    async def get(self, qid: str) -> QueuedLookup | None: ...
    async def by_key(self, key: str) -> QueuedLookup | None: ...
    async def finish(self, item: QueuedLookup) -> bool: ...
    async def pending(self, limit: int) -> list[str]: ...


class MemoryQueuedStore:
    def __init__(self) -> None:
        self._items: dict[str, tuple[float, QueuedLookup]] = {}
        self._keys: dict[str, str] = {}

    async def record(self, item: QueuedLookup, ttl: int) -> None:
        self._items[item.qid] = (time.monotonic() + ttl, item)
        self._keys[item.key] = item.qid

    async def get(self, qid: str) -> QueuedLookup | None:
        entry = self._items.get(qid)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._items.pop(qid, None)
            return None
        return entry[1]

    async def by_key(self, key: str) -> QueuedLookup | None:
        qid = self._keys.get(key)
        return await self.get(qid) if qid else None

    async def finish(self, item: QueuedLookup) -> bool:
        if self._keys.get(item.key) == item.qid:
            del self._keys[item.key]
        return self._items.pop(item.qid, None) is not None

    async def pending(self, limit: int) -> list[str]:
        return list(self._items)[:limit]


# Delete a queue record exactly once (settlement must not run twice when the
# caller and the poller see completion at the same moment).
FINISH_LUA = """
local removed = redis.call('del', KEYS[1])
if removed == 1 then
  redis.call('srem', KEYS[3], ARGV[1])
  if redis.call('get', KEYS[2]) == ARGV[1] then redis.call('del', KEYS[2]) end
end
return removed
"""


class RedisQueuedStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def record(self, item: QueuedLookup, ttl: int) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            QUEUE_PREFIX + item.qid,
            mapping={"key": item.key, "team": item.team, "body": item.body,
                     "reservation": item.reservation, "expires_at": item.expires_at},
        )  # fmt: skip
        pipe.expire(QUEUE_PREFIX + item.qid, ttl)
        pipe.set(KEY_PREFIX + item.key, item.qid, ex=ttl)
        pipe.sadd(PENDING, item.qid)
        await pipe.execute()

    async def get(self, qid: str) -> QueuedLookup | None:
        raw = {_text(k): v for k, v in (await self._redis.hgetall(QUEUE_PREFIX + qid)).items()}
        if not raw:
            return None
        return QueuedLookup(
            qid=qid,
            key=_text(raw["key"]),
            team=_text(raw["team"]),
            body=_bytes(raw["body"]),
            reservation=_text(raw.get("reservation", b"")),
            expires_at=float(_text(raw.get("expires_at", b"0"))),
        )

    async def by_key(self, key: str) -> QueuedLookup | None:
        qid = await self._redis.get(KEY_PREFIX + key)
        return await self.get(_text(qid)) if qid else None

    async def finish(self, item: QueuedLookup) -> bool:
        removed = await self._redis.eval(
            FINISH_LUA, 3, QUEUE_PREFIX + item.qid, KEY_PREFIX + item.key, PENDING, item.qid
        )
        return bool(removed)

    async def pending(self, limit: int) -> list[str]:
        return await live_members(self._redis, PENDING, QUEUE_PREFIX, limit)


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: bytes | str | int) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
