"""The lookup cache: a short-lived in-process layer in front of aiocache (or bounded memory).

Layer 2 is shared by every replica: aiocache's `RedisCache` when
GATEWAY_REDIS_URL is set.  aiocache 0.12 builds its own Redis client from
host/port and knows nothing of cluster or sentinel, so the gateway hands it
the client it already manages (`gateway.store.open_redis`) and never calls
aiocache's `close` (the app closes that client).  TTLs are passed as floats
so aiocache uses PSETEX; its integer path calls SETEX, deprecated in redis-py
8.  Entries are encoded compactly (`gateway.lookup.entries`, through
aiocache's serializer interface).  Without Redis, layer 2 is a bounded
in-process map (`MEMORY_ENTRIES`, least recently used out first) with each
entry's own TTL.

Layer 1 is a bounded in-process map (cachetools' LRU, each entry stamped
with its expiry and checked on read: a TTLCache's own bookkeeping cost ten
times the lookup) holding entries for at most
GATEWAY_LOCAL_CACHE_TTL_SECONDS (default 30 s).  A hit served from it costs
no network round trip.  Entries in Redis are replaced only by a refresh and
removed only by a purge (or their TTL); both announce the key on pub/sub
channel `cgw:l1:drop` and every replica drops its copy at once.  The local
TTL bounds staleness only when such a notice is lost (a replica
reconnecting its subscription) and when an entry is overwritten by a bulk
list's results (a newer answer for the same person).

Redis trouble never fails a request: errors and timeouts go to the cache's
`StoreGuard` and the cache behaves as empty (pass-through) until Redis is
back.
"""

from __future__ import annotations

import time
from typing import Any

from aiocache import RedisCache
from cachetools import LRUCache, TLRUCache
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from gateway.errors import StoreUnavailable
from gateway.lookup.entries import CachedAnswer, EntrySerializer, decode, encode
from gateway.lookup.normalize import cache_key
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.store import STORE_ERRORS, StoreGuard

__all__ = ["DROP_CHANNEL", "KEY_PREFIX", "CachedAnswer", "LookupCache"]

KEY_PREFIX = "cgw:c:"
# Keys whose entry was replaced or removed: every replica drops its in-process copy.
DROP_CHANNEL = "cgw:l1:drop"
MEMORY_ENTRIES = 1_000_000


class _MemoryBackend:
    """aiocache's get/set/delete over a bounded map: the single-replica layer 2."""

    def __init__(self, entries: int) -> None:
        self._items: TLRUCache[str, tuple[float, CachedAnswer]] = TLRUCache(
            entries, ttu=lambda _key, value, _now: value[0], timer=time.monotonic
        )

    async def get(self, key: str) -> CachedAnswer | None:
        item = self._items.get(key)
        return None if item is None else item[1]

    async def set(self, key: str, value: CachedAnswer, ttl: float) -> None:
        self._items[key] = (time.monotonic() + ttl, value)

    async def delete(self, key: str) -> int:
        return 0 if self._items.pop(key, None) is None else 1


class LookupCache:
    def __init__(self, settings: Settings, redis: Redis | None, metrics: Metrics) -> None:
        self._settings = settings
        self._l1: LRUCache[str, tuple[float, CachedAnswer]] | None = None
        self._l1_ttl = settings.local_cache_ttl
        if settings.local_cache_ttl > 0 and settings.local_cache_size > 0:
            self._l1 = LRUCache(settings.local_cache_size)
        self.guard = StoreGuard(metrics, "cache", fallback="pass-through")
        backend: Any
        if redis is not None:
            backend = RedisCache(serializer=EntrySerializer(), timeout=None)
            # aiocache built an idle pool of its own; use the app's client instead.
            backend.client = redis
        else:
            backend = _MemoryBackend(MEMORY_ENTRIES)
        self._backend = backend
        self._redis = redis

    def key(self, team: str, name: str, domain: str, *, memoized: bool = True) -> str:
        """The entry's key; `memoized=False` for bulk rows, which would only churn the
        memo of the instant path's repeated lookups."""
        base = cache_key(name, domain) if memoized else cache_key.__wrapped__(name, domain)
        if self._settings.cache_scope == "team":
            return f"{KEY_PREFIX}t:{team}:{base}"
        return KEY_PREFIX + base

    def team_keys(self, teams: list[str], name: str, domain: str) -> list[str]:
        base = cache_key(name, domain)
        return [KEY_PREFIX + base, *(f"{KEY_PREFIX}t:{t}:{base}" for t in teams)]

    def get_local(self, key: str) -> CachedAnswer | None:
        item = None if self._l1 is None else self._l1.get(key)
        if item is None or item[0] <= time.monotonic():
            return None
        return item[1]

    def forget_local(self, key: str) -> None:
        """Drop the in-process copy of `key` (its shared entry was replaced or removed)."""
        if self._l1 is not None:
            self._l1.pop(key, None)

    def remember(self, key: str, answer: CachedAnswer) -> None:
        """Keep `answer` in the in-process layer (it is in, or going to, the shared one)."""
        if self._l1 is not None:
            self._l1[key] = (time.monotonic() + self._l1_ttl, answer)

    async def get(self, key: str) -> CachedAnswer | None:
        local = self.get_local(key)
        if local is not None:
            return local
        if not self.guard.available:
            return None
        try:
            answer: CachedAnswer | None = await self._backend.get(key)
        except STORE_ERRORS as exc:  # a store failure degrades to a miss
            self.guard.failed(exc)
            return None
        if answer is not None:
            self.remember(key, answer)
        return answer

    def ttl_for(self, answer: CachedAnswer) -> int:
        settings = self._settings
        return settings.cache_ttl_found if answer.found else settings.cache_ttl_not_found

    async def set(self, key: str, answer: CachedAnswer, ttl: float | None = None) -> None:
        """Store `answer` for `ttl` seconds (by default, its class's full TTL)."""
        self.remember(key, answer)
        if not self.guard.available:
            return
        try:
            await self._backend.set(key, answer, ttl=float(ttl or self.ttl_for(answer)))
        except STORE_ERRORS as exc:  # the answer still reaches the caller
            self.guard.failed(exc)

    # ---- many at once (bulk rows, harvests, imports) ----------------------------
    # These skip the in-process layer on purpose: a list of 100 000 people
    # must not push the hot instant entries out of it.

    async def get_many(self, keys: list[str]) -> list[CachedAnswer | None]:
        """The entries of `keys` (None where unknown), in one round trip with Redis."""
        if not keys or not self.guard.available:
            return [None] * len(keys)
        try:
            if self._redis is None:
                return [await self._backend.get(key) for key in keys]
            if isinstance(self._redis, RedisCluster):
                raw = await self._redis.mget_nonatomic(keys)  # keys span slots
            else:
                raw = await self._redis.mget(keys)
        except STORE_ERRORS as exc:
            self.guard.failed(exc)
            return [None] * len(keys)
        return [decode(value) for value in raw]

    async def set_many(self, items: list[tuple[str, CachedAnswer, float]]) -> int:
        """Store (key, answer, ttl seconds) entries, pipelined; how many were stored."""
        if not items or not self.guard.available:
            return 0
        try:
            if self._redis is None:
                for key, answer, ttl in items:
                    await self._backend.set(key, answer, ttl)
                return len(items)
            pipe = self._redis.pipeline(transaction=False)
            for key, answer, ttl in items:
                pipe.psetex(key, max(1, int(ttl * 1000)), encode(answer))
            await pipe.execute()
        except STORE_ERRORS as exc:
            self.guard.failed(exc)
            return 0
        return len(items)

    async def delete(self, keys: list[str]) -> int:
        """Forget `keys` here and in the shared layer; how many the shared layer held."""
        for key in keys:
            self.forget_local(key)
        removed = 0
        try:
            for key in keys:
                removed += int(bool(await self._backend.delete(key)))
                if self._redis is not None:
                    await self._redis.publish(DROP_CHANNEL, key)  # other replicas' copies
        except STORE_ERRORS as exc:
            self.guard.failed(exc)
            raise StoreUnavailable("Cache store unavailable; nothing was purged there") from exc
        return removed
