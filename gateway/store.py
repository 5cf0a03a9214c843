"""The Redis connection: standalone, cluster or sentinel, per GATEWAY_REDIS_MODE.

One client per app, opened and closed in `cleanup_ctx`.  Short socket
timeouts are deliberate: every concern built on Redis (cache, quotas,
ownership, rate limits) has a defined fallback when Redis is slow or down,
and a request must reach that fallback quickly rather than hang.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

from gateway.settings import Settings


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
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(settings.redis_sentinels), sentinel_kwargs=common, **common
        )
        master: Redis = sentinel.master_for(settings.redis_sentinel_master)
        return master
    assert settings.redis_url is not None
    if settings.redis_mode == "cluster":
        cluster: Any = RedisCluster.from_url(settings.redis_url, **common)
        # RedisCluster speaks the same command API for what the gateway uses.
        return cluster  # type: ignore[no-any-return]
    return Redis.from_url(settings.redis_url, retry_on_timeout=False, **common)
