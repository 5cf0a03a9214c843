"""The Redis connection: standalone, cluster or sentinel, per GATEWAY_REDIS_MODE.

One client per app, opened and closed in `cleanup_ctx`.  Short socket
timeouts are deliberate: every concern built on Redis (cache, quotas,
ownership, rate limits) has a defined fallback when Redis is slow or down,
and a request must reach that fallback quickly rather than hang.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisClusterException, RedisError

from gateway.settings import Settings

log = structlog.get_logger("gateway.store")

MAX_CONNECTIONS = 256

# What a Redis outage looks like from redis-py: its own errors (cluster
# topology errors are not RedisErrors), socket errors and timeouts.  Anything
# else is a bug and must not be mistaken for "Redis is down".
STORE_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError, EOFError)
POOL_WAIT_SECONDS = 1.0


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
    assert settings.redis_url is not None
    if settings.redis_mode == "cluster":
        cluster: Any = RedisCluster.from_url(settings.redis_url, **common)
        # RedisCluster speaks the same command API for what the gateway uses.
        return cluster  # type: ignore[no-any-return]
    # A blocking pool: a burst beyond the pool size waits briefly for a free
    # connection instead of failing (which the store guards would read as
    # Redis being down).
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_SECONDS, **common
    )
    return Redis.from_pool(pool)


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


async def live_members(redis: Redis, index: str, prefix: str, limit: int) -> list[str]:
    """Up to `limit` ids from the set `index` whose record `prefix + id` still exists.

    Records expire on their own; their index entries do not, so stale ones
    are dropped here as they are met.
    """
    members = await redis.srandmember(index, limit)
    ids = [m.decode() if isinstance(m, bytes) else str(m) for m in members or []]
    alive = []
    for item in ids:
        if await redis.exists(prefix + item):
            alive.append(item)
        else:
            await redis.srem(index, item)
    return alive
