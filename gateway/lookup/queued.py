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
so the poller still finds it).  Redis holds them when configured: one hash
per queue id and a pending set (one hash slot, `{cgwq}`), and the person's
marker `{cgw:c:<key>}:queued` → queue id beside the person's cache entry, so
a lookup's first look reads it in the same script (`gateway.lookup.flight`);
otherwise an in-process twin with the same interface does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from cachetools import TLRUCache
from redis.asyncio import Redis

from gateway.store import Script, live_members, text

# One hash tag for the records and their index: FINISH_LUA touches both at
# once, which Redis Cluster allows only within one slot.  Queued lookups are
# rare, so one slot carries them easily.
QUEUE_PREFIX = "{cgwq}:q:"
PENDING = "{cgwq}:pending"


def queued_key(key: str) -> str:
    """The person's marker: in the hash slot of its cache entry `key`."""
    return "{" + key + "}:queued"

MEMORY_ENTRIES = 100_000


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
    """Same semantics in one process, bounded (the oldest records go first when full)."""

    def __init__(self, entries: int = MEMORY_ENTRIES) -> None:
        def expiry(_key: str, value: tuple[float, object], _now: float) -> float:
            return value[0]

        self._items: TLRUCache[str, tuple[float, QueuedLookup]] = TLRUCache(
            entries, ttu=expiry, timer=time.monotonic
        )
        self._keys: TLRUCache[str, tuple[float, str]] = TLRUCache(
            entries, ttu=expiry, timer=time.monotonic
        )

    async def record(self, item: QueuedLookup, ttl: int) -> None:
        expires = time.monotonic() + ttl
        self._items[item.qid] = (expires, item)
        self._keys[item.key] = (expires, item.qid)

    async def get(self, qid: str) -> QueuedLookup | None:
        entry = self._items.get(qid)
        return None if entry is None else entry[1]

    async def by_key(self, key: str) -> QueuedLookup | None:
        entry = self._keys.get(key)
        return await self.get(entry[1]) if entry else None

    async def finish(self, item: QueuedLookup) -> bool:
        entry = self._keys.get(item.key)
        if entry is not None and entry[1] == item.qid:
            del self._keys[item.key]
        return self._items.pop(item.qid, None) is not None

    async def pending(self, limit: int) -> list[str]:
        return list(self._items)[:limit]


# Delete a queue record exactly once (settlement must not run twice when the
# caller and the poller see completion at the same moment).
FINISH_LUA = """
local removed = redis.call('del', KEYS[1])
if removed == 1 then redis.call('srem', KEYS[2], ARGV[1]) end
return removed
"""

# Drop the person's marker if it still names this queue id.
UNMARK_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisQueuedStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._finish = Script(redis, FINISH_LUA, idempotent=False)
        self._unmark = Script(redis, UNMARK_LUA, idempotent=True)

    async def record(self, item: QueuedLookup, ttl: int) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            QUEUE_PREFIX + item.qid,
            mapping={"key": item.key, "team": item.team, "body": item.body,
                     "reservation": item.reservation, "expires_at": item.expires_at},
        )  # fmt: skip
        pipe.expire(QUEUE_PREFIX + item.qid, ttl)
        pipe.sadd(PENDING, item.qid)
        await pipe.execute()
        if item.key:  # another slot: its own command
            await self._redis.set(queued_key(item.key), item.qid, ex=ttl)

    async def get(self, qid: str) -> QueuedLookup | None:
        raw = {text(k): v for k, v in (await self._redis.hgetall(QUEUE_PREFIX + qid)).items()}
        if not raw:
            return None
        return QueuedLookup(
            qid=qid,
            key=text(raw["key"]),
            team=text(raw["team"]),
            body=_bytes(raw["body"]),
            reservation=text(raw.get("reservation", b"")),
            expires_at=float(text(raw.get("expires_at", b"0"))),
        )

    async def by_key(self, key: str) -> QueuedLookup | None:
        qid = await self._redis.get(queued_key(key))
        return await self.get(text(qid)) if qid else None

    async def finish(self, item: QueuedLookup) -> bool:
        removed = await self._finish(keys=[QUEUE_PREFIX + item.qid, PENDING], args=[item.qid])
        if removed and item.key:
            await self._unmark(keys=[queued_key(item.key)], args=[item.qid])
        return bool(removed)

    async def pending(self, limit: int) -> list[str]:
        return await live_members(self._redis, PENDING, QUEUE_PREFIX, limit)


def _bytes(value: bytes | str | int) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
