"""The lookup cache: a short-lived in-process layer in front of aiocache (or bounded memory).

Layer 2 is shared by every replica: aiocache's `RedisCache` when
GATEWAY_REDIS_URL is set.  aiocache 0.12 builds its own Redis client from
host/port and knows nothing of cluster or sentinel, so the gateway hands it
the client it already manages (`gateway.store.open_redis`) and never calls
aiocache's `close` (the app closes that client).  TTLs are passed as floats
so aiocache uses PSETEX; its integer path calls SETEX, deprecated in redis-py
8.  Without Redis, layer 2 is a bounded in-process map (`MEMORY_ENTRIES`,
least recently used out first) with each entry's own TTL.

Layer 1 is a bounded in-process map (cachetools) holding entries for at most
GATEWAY_LOCAL_CACHE_TTL_SECONDS (default 2 s).  A hit served from it costs no
network round trip, which is what lets hits run at a good fraction of a bare
aiohttp server's speed.  The price is bounded staleness: after a refresh or a
purge on one replica, *other* replicas may serve the old entry for up to that
TTL (the replica that did it drops its own copy at once).

Redis trouble never fails a request: errors and timeouts go to the cache's
`StoreGuard` and the cache behaves as empty (pass-through) until Redis is
back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from aiocache import RedisCache
from cachetools import TLRUCache, TTLCache
from redis.asyncio import Redis

from gateway.errors import StoreUnavailable
from gateway.lookup.normalize import cache_key
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.store import STORE_ERRORS, StoreGuard

KEY_PREFIX = "cgw:c:"
MEMORY_ENTRIES = 1_000_000


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A cacheable upstream success body, replayed verbatim on a hit."""

    body: bytes
    credits: int
    found: bool

    def dumps(self) -> str:
        return json.dumps({"b": self.body.decode(), "c": self.credits, "f": self.found})

    @classmethod
    def loads(cls, raw: Any) -> CachedAnswer | None:
        try:
            item = json.loads(raw) if isinstance(raw, str | bytes) else raw
            return cls(item["b"].encode(), int(item["c"]), bool(item["f"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # a foreign or corrupt value is a miss, never an error


class _MemoryBackend:
    """aiocache's get/set/delete over a bounded map: the single-replica layer 2."""

    def __init__(self, entries: int) -> None:
        self._items: TLRUCache[str, tuple[float, Any]] = TLRUCache(
            entries, ttu=lambda _key, value, _now: value[0], timer=time.monotonic
        )

    async def get(self, key: str) -> Any:
        item = self._items.get(key)
        return None if item is None else item[1]

    async def set(self, key: str, value: Any, ttl: float) -> None:
        self._items[key] = (time.monotonic() + ttl, value)

    async def delete(self, key: str) -> int:
        return 0 if self._items.pop(key, None) is None else 1


class LookupCache:
    def __init__(self, settings: Settings, redis: Redis | None, metrics: Metrics) -> None:
        self._settings = settings
        self._l1: TTLCache[str, CachedAnswer] | None = None
        if settings.local_cache_ttl > 0 and settings.local_cache_size > 0:
            self._l1 = TTLCache(
                settings.local_cache_size, settings.local_cache_ttl, timer=time.monotonic
            )
        self.guard = StoreGuard(metrics, "cache", fallback="pass-through")
        backend: Any
        if redis is not None:
            backend = RedisCache(timeout=None)
            # aiocache built an idle pool of its own; use the app's client instead.
            backend.client = redis
        else:
            backend = _MemoryBackend(MEMORY_ENTRIES)
        self._backend = backend

    def key(self, team: str, name: str, domain: str) -> str:
        base = cache_key(name, domain)
        if self._settings.cache_scope == "team":
            return f"{KEY_PREFIX}t:{team}:{base}"
        return KEY_PREFIX + base

    def team_keys(self, teams: list[str], name: str, domain: str) -> list[str]:
        base = cache_key(name, domain)
        return [KEY_PREFIX + base, *(f"{KEY_PREFIX}t:{t}:{base}" for t in teams)]

    def get_local(self, key: str) -> CachedAnswer | None:
        return None if self._l1 is None else self._l1.get(key)

    async def get(self, key: str) -> CachedAnswer | None:
        local = self.get_local(key)
        if local is not None:
            return local
        if not self.guard.available:
            return None
        try:
            raw = await self._backend.get(key)
        except STORE_ERRORS as exc:  # a store failure degrades to a miss
            self.guard.failed(exc)
            return None
        answer = CachedAnswer.loads(raw) if raw is not None else None
        if answer is not None and self._l1 is not None:
            self._l1[key] = answer
        return answer

    def ttl_for(self, answer: CachedAnswer) -> int:
        settings = self._settings
        return settings.cache_ttl_found if answer.found else settings.cache_ttl_not_found

    async def set(self, key: str, answer: CachedAnswer, ttl: float | None = None) -> None:
        """Store `answer` for `ttl` seconds (by default, its class's full TTL)."""
        if self._l1 is not None:
            self._l1[key] = answer
        if not self.guard.available:
            return
        try:
            await self._backend.set(key, answer.dumps(), ttl=float(ttl or self.ttl_for(answer)))
        except STORE_ERRORS as exc:  # the answer still reaches the caller
            self.guard.failed(exc)

    async def delete(self, keys: list[str]) -> int:
        """Forget `keys` here and in the shared layer; how many the shared layer held."""
        for key in keys:
            if self._l1 is not None:
                self._l1.pop(key, None)
        removed = 0
        try:
            for key in keys:
                removed += int(bool(await self._backend.delete(key)))
        except STORE_ERRORS as exc:
            self.guard.failed(exc)
            raise StoreUnavailable("Cache store unavailable; nothing was purged there") from exc
        return removed
