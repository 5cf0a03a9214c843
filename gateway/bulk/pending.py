"""Bulk lists whose credit reservation is not settled yet.

A bulk upload reserves credits for every distinct row before it is
forwarded; the reservation is settled from the list's result file once the
list completes or is cancelled.  This store holds `list_id → reservation`
until then.  `take` removes atomically (GETDEL), so of several replicas
noticing completion at once exactly one settles.
"""

from __future__ import annotations

import time
from typing import Protocol

from cachetools import TLRUCache
from redis.asyncio import Redis

from gateway.budget.credits import Reservation
from gateway.store import live_members

PREFIX = "cgw:bulkres:"
INDEX = "cgw:bulkres:index"
MEMORY_ENTRIES = 100_000


class PendingLists(Protocol):
    async def add(self, list_id: str, reservation: Reservation, ttl: int) -> None: ...
    async def take(self, list_id: str) -> Reservation | None: ...
    async def pending(self, limit: int) -> list[str]: ...


class MemoryPendingLists:
    """Same semantics in one process, bounded (the least recently used go first when full)."""

    def __init__(self, entries: int = MEMORY_ENTRIES) -> None:
        self._items: TLRUCache[str, tuple[float, Reservation]] = TLRUCache(
            entries, ttu=lambda _key, value, _now: value[0], timer=time.monotonic
        )

    async def add(self, list_id: str, reservation: Reservation, ttl: int) -> None:
        self._items[list_id] = (time.monotonic() + ttl, reservation)

    async def take(self, list_id: str) -> Reservation | None:
        item = self._items.pop(list_id, None)
        return None if item is None else item[1]

    async def pending(self, limit: int) -> list[str]:
        return list(self._items)[:limit]


class RedisPendingLists:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def add(self, list_id: str, reservation: Reservation, ttl: int) -> None:
        await self._redis.set(PREFIX + list_id, reservation.dumps(), ex=ttl)
        await self._redis.sadd(INDEX, list_id)

    async def take(self, list_id: str) -> Reservation | None:
        raw = await self._redis.getdel(PREFIX + list_id)
        await self._redis.srem(INDEX, list_id)
        return Reservation.loads(raw) if raw else None

    async def pending(self, limit: int) -> list[str]:
        return await live_members(self._redis, INDEX, PREFIX, limit)
