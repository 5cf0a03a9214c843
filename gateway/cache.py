"""The lookup cache: a short-lived in-process layer in front of aiocache.

Layer 2 is aiocache: `RedisCache` when GATEWAY_REDIS_URL is set (shared by
every replica), `SimpleMemoryCache` otherwise.  aiocache 0.12 builds its own
Redis client from host/port and knows nothing of cluster or sentinel, so the
gateway hands it the client it already manages (`store.open_redis`) and never
calls aiocache's `close` (the app closes that client).  TTLs are passed as
floats so aiocache uses PSETEX; its integer path calls SETEX, deprecated in
redis-py 8.

Layer 1 is a bounded in-process map holding entries for at most
GATEWAY_LOCAL_CACHE_TTL_SECONDS (default 2 s).  A hit served from it costs no
network round trip, which is what lets hits run at a good fraction of a bare
aiohttp server's speed.  The price is bounded staleness: after a refresh or a
purge on one replica, *other* replicas may serve the old entry for up to that
TTL (the replica that did it drops its own copy at once).

Redis trouble never fails a request: errors and timeouts are counted
(`clearout_gateway_store_errors_total{store="cache"}`), logged at most every
few seconds, and the cache behaves as empty; after a failure Redis is left
alone for a short back-off, then tried again, so it recovers by itself.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import structlog
from aiocache import RedisCache, SimpleMemoryCache
from redis.asyncio import Redis

from gateway.metrics import Metrics
from gateway.normalize import cache_key
from gateway.settings import Settings

log = structlog.get_logger("gateway.cache")

KEY_PREFIX = "cgw:c:"
BACKOFF_SECONDS = 1.0
LOG_EVERY_SECONDS = 5.0


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


class StoreGuard:
    """Counts, logs (throttled) and backs off from backing-store failures."""

    def __init__(self, metrics: Metrics, store: str) -> None:
        self._metrics = metrics
        self._store = store
        self._down_until = 0.0
        self._last_log = 0.0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._down_until = now + BACKOFF_SECONDS
        self._metrics.store_errors.labels(self._store).inc()
        if now - self._last_log >= LOG_EVERY_SECONDS:
            self._last_log = now
            log.warning(
                "store_unavailable",
                store=self._store,
                error=type(exc).__name__,
                detail=str(exc)[:200],
                fallback="pass-through" if self._store == "cache" else "policy",
            )


class LookupCache:
    def __init__(self, settings: Settings, redis: Redis | None, metrics: Metrics) -> None:
        self._settings = settings
        self._l1: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()
        self._l1_ttl = settings.local_cache_ttl
        self._l1_size = settings.local_cache_size
        self.guard = StoreGuard(metrics, "cache")
        self.shared = redis is not None
        backend: Any
        if redis is not None:
            backend = RedisCache(timeout=None)
            # aiocache built an idle pool of its own; use the app's client instead.
            backend.client = redis
        else:
            backend = SimpleMemoryCache(timeout=None)
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
        item = self._l1.get(key)
        if item is None:
            return None
        expires, answer = item
        if expires < time.monotonic():
            self._l1.pop(key, None)
            return None
        return answer

    def _remember(self, key: str, answer: CachedAnswer) -> None:
        if self._l1_ttl <= 0 or self._l1_size <= 0:
            return
        self._l1[key] = (time.monotonic() + self._l1_ttl, answer)
        self._l1.move_to_end(key)
        while len(self._l1) > self._l1_size:
            self._l1.popitem(last=False)

    async def get(self, key: str) -> CachedAnswer | None:
        local = self.get_local(key)
        if local is not None:
            return local
        if not self.guard.available:
            return None
        try:
            raw = await self._backend.get(key)
        except Exception as exc:  # any store failure degrades to a miss
            self.guard.failed(exc)
            return None
        answer = CachedAnswer.loads(raw) if raw is not None else None
        if answer is not None:
            self._remember(key, answer)
        return answer

    async def set(self, key: str, answer: CachedAnswer) -> None:
        ttl = self._settings.cache_ttl_found if answer.found else self._settings.cache_ttl_not_found
        self._remember(key, answer)
        if not self.guard.available:
            return
        try:
            await self._backend.set(key, answer.dumps(), ttl=float(ttl))
        except Exception as exc:  # the answer still reaches the caller
            self.guard.failed(exc)

    async def delete(self, keys: list[str]) -> int:
        """Forget `keys` here and in the shared layer; how many the shared layer held."""
        for key in keys:
            self._l1.pop(key, None)
        removed = 0
        try:
            for key in keys:
                removed += int(bool(await self._backend.delete(key)))
        except Exception as exc:
            self.guard.failed(exc)
            raise
        return removed
