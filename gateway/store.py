"""The Redis boundary: the client per GATEWAY_REDIS_MODE, what an outage looks like, the guard.

Everything the gateway keeps in Redis (cache entries, single-flight leases,
credit counters, rate buckets, ownership, queued lookups, pending lists)
goes through one client opened here, and every caller treats the same
exceptions, `STORE_ERRORS`, as "Redis is unavailable"; anything else is a bug
and is left to surface.  Each concern holds a `StoreGuard`, which counts a
failure in `clearout_gateway_store_errors_total{store=…}`, logs it at most
every few seconds and backs that concern off Redis for a second, so a dead
Redis costs a request its fallback at once rather than a socket timeout.
Scripts run through `Script`: EVALSHA on one pooled connection, the text
sent again only after a Redis restart.

Short socket timeouts are deliberate: every concern built on Redis has a
defined fallback when Redis is slow or down, and a request must reach that
fallback quickly rather than hang.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from gateway.metrics import Metrics
from gateway.settings import Settings

log = structlog.get_logger("gateway.store")

MAX_CONNECTIONS = 256
POOL_WAIT_SECONDS = 1.0
BACKOFF_SECONDS = 1.0
LOG_EVERY_SECONDS = 5.0

# What a Redis outage looks like from redis-py: its own errors (Cluster
# topology errors are not RedisErrors), socket errors and timeouts.
STORE_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError, EOFError)


class StoreGuard:
    """Counts, logs (throttled) and backs off from one concern's Redis failures."""

    def __init__(self, metrics: Metrics, store: str, fallback: str = "policy") -> None:
        self._metrics = metrics
        self._store = store
        self._fallback = fallback
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
                fallback=self._fallback,
            )


def open_redis(settings: Settings) -> Redis | None:
    """A client for the configured Redis (connections open lazily), or None."""
    if settings.redis_url is None and not settings.redis_sentinels:
        return None
    common: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "health_check_interval": 15,
    }
    if settings.redis_mode == "sentinel":
        return _sentinel_master(settings, common)
    assert settings.redis_url is not None
    if settings.redis_mode == "cluster":
        cluster: Any = RedisCluster.from_url(settings.redis_url, **common)
        # RedisCluster speaks the same command API for what the gateway uses.
        return cluster  # type: ignore[no-any-return]
    # A blocking pool: a burst beyond the pool size waits briefly for a free
    # connection instead of failing (which the guards would read as Redis
    # being down).
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_SECONDS, **common
    )
    return Redis.from_pool(pool)


def _sentinel_master(settings: Settings, common: dict[str, Any]) -> Redis:
    # Credentials and db of the master come from GATEWAY_REDIS_URL when set
    # (e.g. redis://:secret@ignored/2); the sentinels are listed separately.
    auth: dict[str, Any] = {}
    if settings.redis_url:
        url = urlsplit(settings.redis_url)
        auth = {"username": url.username, "password": url.password}
        if url.path.strip("/").isdigit():
            auth["db"] = int(url.path.strip("/"))
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(settings.redis_sentinels), sentinel_kwargs=common, **common
    )
    master: Redis = sentinel.master_for(settings.redis_sentinel_master, **auth)
    return master


async def prepare_redis(redis: Redis | None) -> None:
    """Learn a Cluster's slot map before the first requests race to do it.

    redis-py's async Cluster client maps slots lazily, on its first command;
    many concurrent first commands (and a pub/sub subscription, which does
    not trigger the mapping at all) then fail.  A Cluster that is down at
    start is left to map itself later: the gateway still starts.
    """
    if isinstance(redis, RedisCluster):
        try:
            await redis.initialize()
        except STORE_ERRORS as exc:
            log.warning("redis_cluster_not_mapped", error=type(exc).__name__)


async def close_redis(redis: Redis | None) -> None:
    """Close the client, and in sentinel mode the clients of the sentinels too."""
    if redis is None:
        return
    # A Cluster client has no single pool; a Sentinel-managed one names its manager.
    pool = getattr(redis, "connection_pool", None)
    sentinel = getattr(pool, "sentinel_manager", None)
    await redis.aclose()
    for client in getattr(sentinel, "sentinels", ()):
        await client.aclose()


ScriptArg = str | bytes | int | float


class Script:
    """A Lua script, run as EVALSHA on one connection taken from the client's pool.

    redis-py's own `register_script` object goes through the client's whole
    command path (its retry loop, observability hooks, option parsing), which
    on this machine cost more CPU than the round trip itself: about 55 µs of
    the ~190 µs a script call took, twice per paid lookup.  Here a call takes
    a connection, sends, reads and gives it back; the connection still does
    its own health check, timeouts and disconnect-on-error.  A Cluster client
    has no single pool and keeps redis-py's path.

    A pooled connection whose server end has closed (Redis restarted since
    it was pooled: the pool's own check does not notice) is reconnected
    before anything is sent on it.  Beyond that, `idempotent` scripts (the
    same effect when run twice) are sent once more on a fresh connection
    after a connection error; any other script's failure
    goes to the caller, since a script that did run before its reply was lost
    must not run twice (a credit reservation would be taken twice).
    """

    def __init__(self, redis: Redis, lua: str, *, idempotent: bool) -> None:
        self._registered = redis.register_script(lua)
        self._lua = lua
        self._sha = self._registered.sha
        self._idempotent = idempotent
        # Untyped in redis-py; a ConnectionPool or a Sentinel's.
        self._pool: Any = None if isinstance(redis, RedisCluster) else redis.connection_pool

    async def __call__(self, keys: Sequence[str], args: Sequence[ScriptArg] = ()) -> Any:
        if self._pool is None:
            return await self._registered(keys=list(keys), args=list(args))
        try:
            return await self._once(keys, args)
        except RedisConnectionError:
            if not self._idempotent:
                raise
        return await self._once(keys, args)

    async def _once(self, keys: Sequence[str], args: Sequence[ScriptArg]) -> Any:
        assert self._pool is not None
        conn = await self._pool.get_connection()
        try:
            reader = getattr(conn, "_reader", None)  # redis-py's asyncio.StreamReader
            if reader is not None and reader.at_eof():
                await conn.disconnect()  # sending connects it again
            try:
                return await _command(conn, "EVALSHA", self._sha, len(keys), *keys, *args)
            except NoScriptError:  # Redis restarted (or flushed its scripts): send the text
                return await _command(conn, "EVAL", self._lua, len(keys), *keys, *args)
        finally:
            await self._pool.release(conn)


async def _command(conn: Any, *parts: ScriptArg) -> Any:
    await conn.send_packed_command(conn.pack_command(*parts))
    return await conn.read_response()


def text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def live_members(redis: Redis, index: str, prefix: str, limit: int) -> list[str]:
    """Up to `limit` ids from the set `index` whose record `prefix + id` still exists.

    Records expire on their own; their index entries do not, so stale ones
    are dropped here as they are met.
    """
    members = await redis.srandmember(index, limit)
    alive = []
    for item in (text(m) for m in members or []):
        if await redis.exists(prefix + item):
            alive.append(item)
        else:
            await redis.srem(index, item)
    return alive
