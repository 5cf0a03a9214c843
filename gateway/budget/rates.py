"""Team request rates: each team's token bucket (`requests_per_second`), shared through Redis.

`requests_per_second` from the teams file is a token bucket
refilling at that rate and holding as many tokens (at least one), so a team
may burst up to one second's worth.  In Redis it is one hash per team,
`cgw:rl:{<team>}` {tokens, ts}, updated by one Lua script that reads the
clock with `TIME`: every replica uses Redis's clock, so their own clocks
cannot skew the bucket.  The hash expires once it would be full anyway.

Redis failures never fail a request here: the limit lets requests through
(pace is not money), counted as
`clearout_gateway_store_errors_total{store="ratelimit"}`.
"""

from __future__ import annotations

import time
from typing import Protocol

from cachetools import LRUCache
from redis.asyncio import Redis

from gateway.metrics import Metrics
from gateway.store import STORE_ERRORS, Script, StoreGuard

TEAM_PREFIX = "cgw:rl:"
MAX_TEAMS = 10_000

# Refill by elapsed time (microseconds of Redis TIME), then take one token
# if there is one.  Returns the seconds until a token is available, as a
# string ("0" when one was taken): Lua numbers become integers on return.
# Needs Redis >= 5 (writes after TIME rely on effect replication).
BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local state = redis.call('hmget', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
else
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(capacity, tokens + elapsed / 1000000 * rate)
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('hset', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('pexpire', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return tostring(wait)
"""


def _refill_and_take(
    tokens: float, elapsed: float, rate: float, capacity: float
) -> tuple[float, float]:
    """The in-process twin of BUCKET_LUA: (tokens left, seconds to wait)."""
    tokens = min(capacity, tokens + max(0.0, elapsed) * rate)
    if tokens >= 1:
        return tokens - 1, 0.0
    return tokens, (1 - tokens) / rate


class MemoryBucket:
    """One token bucket on this process's monotonic clock."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._ts = time.monotonic()

    def take(self, rate: float | None = None, capacity: float | None = None) -> float:
        """0.0 when a token was taken, else seconds until one is available."""
        if rate is not None:
            self.rate = rate
        if capacity is not None:
            self.capacity = capacity
        now = time.monotonic()
        self._tokens, wait = _refill_and_take(
            self._tokens, now - self._ts, self.rate, self.capacity
        )
        self._ts = now
        return wait


class RateLimiter(Protocol):
    async def acquire(self, team: str, rate: float, burst: float) -> float:
        """0.0 when the request may go, else seconds until it may (Retry-After)."""
        ...


def _check(rate: float, burst: float) -> float:
    if rate <= 0:
        raise ValueError(f"a rate must be positive, got {rate}")
    return max(1.0, burst)


class RedisRateLimiter:
    def __init__(self, redis: Redis) -> None:
        self._bucket = Script(redis, BUCKET_LUA, idempotent=False)

    async def acquire(self, team: str, rate: float, burst: float) -> float:
        burst = _check(rate, burst)
        # The hash tag keeps the key whole under Cluster hashing, like quota keys.
        key = f"{TEAM_PREFIX}{{{team}}}"
        return float(await self._bucket(keys=[key], args=[repr(rate), repr(burst)]))


class MemoryRateLimiter:
    """Same semantics in one process; team names come from the teams file, so few."""

    def __init__(self) -> None:
        # Bounded anyway: a teams file could be reloaded with new names for ever.
        self._buckets: LRUCache[str, MemoryBucket] = LRUCache(MAX_TEAMS)

    async def acquire(self, team: str, rate: float, burst: float) -> float:
        burst = _check(rate, burst)
        bucket = self._buckets.get(team)
        if bucket is None:
            bucket = self._buckets[team] = MemoryBucket(rate, burst)
        return bucket.take(rate, burst)


class GuardedRateLimiter:
    """A team limiter that lets requests through when its store fails.

    A request rate is about pace, not money: the credit budget and the
    upstream governor still stand behind it.  Refusing every request because
    Redis blinked would turn a store outage into a full outage, so an error
    (or the back-off after one) allows the request and is counted.
    """

    def __init__(self, inner: RateLimiter, metrics: Metrics) -> None:
        self._inner = inner
        self.guard = StoreGuard(metrics, "ratelimit")

    async def acquire(self, team: str, rate: float, burst: float) -> float:
        if not self.guard.available:
            return 0.0
        try:
            return await self._inner.acquire(team, rate, burst)
        except STORE_ERRORS as exc:
            self.guard.failed(exc)
            return 0.0
