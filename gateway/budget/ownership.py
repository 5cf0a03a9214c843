"""Ownership of upstream ids: which team created each queue_id and list_id.

Every team calls Clearout through the same upstream account, so Clearout
itself would show any team's queued lookup or bulk list to whoever presents
its id.  The gateway records the creating team when an id is handed out
(a 524's `queue_id`, a bulk upload's `list_id`) and checks it before
relaying any call that names the id.

Redis holds `cgw:own:<kind>:<id> = team` with an expiry (90 days unless
the constructor says otherwise), so records of long-finished lists go by
themselves; one key per id, so Redis Cluster spreads them freely.  The
in-process twin is a bounded map.

When the store fails, recording is counted and logged (the caller already
has its id; failing now would not give it back), while checking fails
closed with StoreUnavailable: answering from a store we cannot read could
show one team's data to another.
"""

from __future__ import annotations

import time
from typing import Literal, Protocol

import structlog
from cachetools import TTLCache
from redis.asyncio import Redis

from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.store import STORE_ERRORS, StoreGuard, text

log = structlog.get_logger("gateway.budget.ownership")

KEY_PREFIX = "cgw:own:"
DEFAULT_TTL_SECONDS = 90 * 24 * 3600
DEFAULT_MEMORY_ENTRIES = 100_000

Kind = Literal["queue", "list"]


def key(kind: Kind, resource_id: str) -> str:
    return f"{KEY_PREFIX}{kind}:{resource_id}"


class Ownership(Protocol):
    async def record(self, kind: Kind, resource_id: str, team: str) -> None: ...
    async def owner(self, kind: Kind, resource_id: str) -> str | None: ...
    async def forget(self, kind: Kind, resource_id: str) -> None: ...


class RedisOwnership:
    def __init__(self, redis: Redis, ttl: int = DEFAULT_TTL_SECONDS) -> None:
        self._redis = redis
        self._ttl = ttl

    async def record(self, kind: Kind, resource_id: str, team: str) -> None:
        await self._redis.set(key(kind, resource_id), team, ex=self._ttl)

    async def owner(self, kind: Kind, resource_id: str) -> str | None:
        raw = await self._redis.get(key(kind, resource_id))
        return None if raw is None else text(raw)

    async def forget(self, kind: Kind, resource_id: str) -> None:
        await self._redis.delete(key(kind, resource_id))


class MemoryOwnership:
    """Same semantics in one process; the least recently used records go first when full."""

    def __init__(
        self, ttl: int = DEFAULT_TTL_SECONDS, max_entries: int = DEFAULT_MEMORY_ENTRIES
    ) -> None:
        self._items: TTLCache[str, str] = TTLCache(max_entries, ttl, timer=time.monotonic)

    async def record(self, kind: Kind, resource_id: str, team: str) -> None:
        self._items[key(kind, resource_id)] = team

    async def owner(self, kind: Kind, resource_id: str) -> str | None:
        return self._items.get(key(kind, resource_id))

    async def forget(self, kind: Kind, resource_id: str) -> None:
        self._items.pop(key(kind, resource_id), None)


class GuardedOwnership:
    """Ownership behind the store-failure policy described in the module docstring."""

    def __init__(self, inner: Ownership, metrics: Metrics) -> None:
        self._inner = inner
        self.guard = StoreGuard(metrics, "ownership")

    async def record(self, kind: Kind, resource_id: str, team: str) -> None:
        # Tried even while the guard backs off: ids are handed out rarely,
        # and one lost record locks its team out of its own list.
        try:
            await self._inner.record(kind, resource_id, team)
        except STORE_ERRORS as exc:
            self.guard.failed(exc)
            log.warning(
                "ownership_not_recorded",
                kind=kind,
                resource_id=resource_id,
                team=team,
                error=type(exc).__name__,
            )

    async def owner(self, kind: Kind, resource_id: str) -> str | None:
        if not self.guard.available:
            raise _unavailable()
        try:
            return await self._inner.owner(kind, resource_id)
        except STORE_ERRORS as exc:
            self.guard.failed(exc)
            raise _unavailable() from exc

    async def forget(self, kind: Kind, resource_id: str) -> None:
        # A record left behind expires by itself; it only names the old owner.
        try:
            await self._inner.forget(kind, resource_id)
        except STORE_ERRORS as exc:
            self.guard.failed(exc)


def _unavailable() -> StoreUnavailable:
    return StoreUnavailable(
        "Ownership store unavailable; cannot confirm this id belongs to your team, retry later"
    )
