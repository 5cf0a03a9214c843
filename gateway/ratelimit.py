"""Request rates: each team's token bucket, and the upstream-wide governor.

Team limit.  `requests_per_second` from the teams file is a token bucket
refilling at that rate and holding as many tokens (at least one), so a team
may burst up to one second's worth.  In Redis it is one hash per team,
`cgw:rl:{<team>}` {tokens, ts}, updated by one Lua script that reads the
clock with `TIME`: every replica uses Redis's clock, so their own clocks
cannot skew the bucket.  The hash expires once it would be full anyway.

Upstream governor (GATEWAY_UPSTREAM_RPM).  One bucket shared by every
replica, `cgw:gov:bucket`, sized so the upstream never sees more than `rpm`
calls in any 60-second window:

    capacity C = max(1, rpm // 60)        rate r = (rpm - C + 1) / 60 per second

In any half-open window of length d a token bucket admits n < C + r*d
calls, so over 60 s n < rpm + 1, i.e. at most `rpm`, while still allowing a
burst of C (about one second's share).  The bound is on admissions as Redis
times them; calls reach the upstream after a little network jitter.  All
replicas must be configured with the same rpm.

Inside a replica, callers wait in one queue per team and a single
dispatcher task hands out tokens: it takes one shared token, then gives it
to the oldest waiter of the least recently served team.  A team's burst of
100 therefore cannot starve another team's single request, which gets the
very next token (each of k busy teams is served at least once every k
tokens).  Fairness is per replica: across replicas, tokens go to whichever
dispatcher asks first.  The dispatcher runs only while someone waits.

When the upstream answers `x-ratelimit-remaining: 0`, `observe` stops
admissions until its reset time, and shares that with other replicas
through `cgw:gov:blocked_until` (epoch ms, best effort).

Redis failures never fail a request here: the team limit lets requests
through, and the governor falls back to a local bucket of the same shape
(each replica then enforces the full rpm on its own, so N replicas may
admit up to N x rpm until Redis is back).  Failures are counted as
`clearout_gateway_store_errors_total{store="ratelimit"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.cache import StoreGuard
from gateway.errors import UpstreamBusy
from gateway.metrics import Metrics

log = structlog.get_logger("gateway.ratelimit")

TEAM_PREFIX = "cgw:rl:"
BUCKET_KEY = "cgw:gov:bucket"
BLOCK_KEY = "cgw:gov:blocked_until"

# What a Redis outage looks like from redis-py (see gateway.quota).
STORE_ERRORS = (RedisError, OSError, TimeoutError, EOFError)

# The dispatcher re-checks at least this often, so a block another replica
# shared, or waiters that all gave up, are noticed without a long sleep.
MAX_SLEEP_SECONDS = 1.0
# An upstream reset further away than this is treated as a bogus header.
MAX_BLOCK_SECONDS = 3600.0

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

# Only ever move the shared block later; it disappears when it ends.
# Needs Redis >= 6.2 (PXAT).
BLOCK_LUA = """
local cur = tonumber(redis.call('get', KEYS[1]) or '0')
local v = tonumber(ARGV[1])
if v > cur then
  redis.call('set', KEYS[1], ARGV[1], 'PXAT', ARGV[1])
  return 1
end
return 0
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


# ---- per-team request rate -----------------------------------------------


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
        self._redis = redis

    async def acquire(self, team: str, rate: float, burst: float) -> float:
        burst = _check(rate, burst)
        # The hash tag keeps the key whole under Cluster hashing, like quota keys.
        key = f"{TEAM_PREFIX}{{{team}}}"
        return float(await self._redis.eval(BUCKET_LUA, 1, key, repr(rate), repr(burst)))


class MemoryRateLimiter:
    """Same semantics in one process; team names come from the teams file, so few."""

    def __init__(self) -> None:
        self._buckets: dict[str, MemoryBucket] = {}

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


# ---- upstream governor ---------------------------------------------------


def governor_shape(rpm: int) -> tuple[int, float]:
    """(capacity, tokens per second) admitting at most `rpm` calls in any 60 s."""
    if rpm < 1:
        raise ValueError(f"GATEWAY_UPSTREAM_RPM must be at least 1, got {rpm}")
    capacity = max(1, rpm // 60)
    return capacity, (rpm - capacity + 1) / 60


class GovernorBusy(UpstreamBusy):
    """The caller could not be admitted upstream before its deadline."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "The upstream rate budget is exhausted; retry later",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


class Governor:
    """Admits upstream calls within GATEWAY_UPSTREAM_RPM, fairly across teams.

    `rpm=None` makes every method a no-op.  Call `aclose()` at shutdown.
    """

    def __init__(self, rpm: int | None, redis: Redis | None, metrics: Metrics) -> None:
        self.rpm = rpm
        self.capacity, self.rate = governor_shape(rpm) if rpm is not None else (0, 0.0)
        self.upstream_limit: int | None = None  # the latest x-ratelimit-limit, for operators
        self.guard = StoreGuard(metrics, "ratelimit")
        self._redis = redis
        self._local = MemoryBucket(self.rate, self.capacity)
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._served: dict[str, int] = {}  # team -> serial of its latest admission
        self._serial = 0
        self._blocked_until = 0.0  # epoch seconds; no admission before
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def acquire(self, team: str, deadline: float) -> None:
        """Wait for this team's turn; GovernorBusy if it will not come by `deadline`.

        `deadline` is a `time.monotonic()` value.
        """
        if self.rpm is None:
            return
        now = time.monotonic()
        if now >= deadline or now + self._blocked_for() > deadline:
            raise self._busy(team)  # known in advance: answer at once, do not hold the caller
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(team, deque()).append(waiter)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="upstream-governor")
        try:
            await asyncio.wait((waiter,), timeout=deadline - now)
        finally:
            if not waiter.done():
                waiter.cancel()  # the dispatcher skips it; a token is never handed to it
            self._discard(team, waiter)
        if waiter.cancelled():
            raise self._busy(team)

    def observe(self, limit: int | None, remaining: int | None, reset_epoch: float | None) -> None:
        """Feed the upstream's x-ratelimit-* headers (reset as an epoch second)."""
        if self.rpm is None:
            return
        if limit is not None:
            self.upstream_limit = limit
        if remaining != 0 or reset_epoch is None:
            return
        now = time.time()
        until = min(reset_epoch, now + MAX_BLOCK_SECONDS)
        if until <= max(now, self._blocked_until):
            return
        self._blocked_until = until
        if self._redis is None or not self.guard.available:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._share_block(until))
        except RuntimeError:  # no loop: nothing to share with
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        tasks = [*self._tasks, *([self._dispatcher] if self._dispatcher is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for queue in self._queues.values():
            for waiter in queue:
                waiter.cancel()
        self._queues.clear()

    # ---- the dispatcher ---------------------------------------------------

    async def _dispatch(self) -> None:
        while self._queues:
            try:
                wait = await self._take()
            except Exception:  # a bug must not strand every waiter until its deadline
                log.exception("governor_dispatch_failed")
                wait = MAX_SLEEP_SECONDS
            if wait > 0:
                await asyncio.sleep(min(wait, MAX_SLEEP_SECONDS))
                continue
            self._hand_out()

    def _hand_out(self) -> None:
        # Taken first and handed out second, so a waiter that left while
        # the dispatcher waited for the token costs nobody a turn.  If every
        # waiter left, the token is dropped: the upstream just sees one call
        # fewer, never one too many.
        while self._queues:
            team = min(self._queues, key=lambda t: self._served.get(t, -1))
            queue = self._queues[team]
            admitted = False
            while queue and not admitted:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    admitted = True
            if not queue:
                del self._queues[team]
            if admitted:
                self._serial += 1
                self._served[team] = self._serial
                return

    async def _take(self) -> float:
        blocked = self._blocked_for()
        if blocked > 0:
            return blocked
        if self._redis is not None and self.guard.available:
            try:
                return await self._take_shared(self._redis)
            except STORE_ERRORS as exc:
                self.guard.failed(exc)
        return self._local.take()

    async def _take_shared(self, redis: Redis) -> float:
        # Two commands, not one script: the two keys live in different
        # Cluster slots.  A block shared between them costs at most one call.
        raw = await redis.get(BLOCK_KEY)
        if raw is not None:
            self._blocked_until = max(self._blocked_until, int(raw) / 1000)
            blocked = self._blocked_for()
            if blocked > 0:
                return blocked
        wait = await redis.eval(BUCKET_LUA, 1, BUCKET_KEY, repr(self.rate), self.capacity)
        return float(wait)

    async def _share_block(self, until: float) -> None:
        assert self._redis is not None
        try:
            await self._redis.eval(BLOCK_LUA, 1, BLOCK_KEY, int(until * 1000))
        except STORE_ERRORS as exc:  # best effort: this replica still honours it
            self.guard.failed(exc)

    # ---- helpers ----------------------------------------------------------

    def _blocked_for(self) -> float:
        return max(0.0, self._blocked_until - time.time())

    def _discard(self, team: str, waiter: asyncio.Future[None]) -> None:
        queue = self._queues.get(team)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(waiter)
        if not queue:
            del self._queues[team]

    def _busy(self, team: str) -> GovernorBusy:
        # A hint, not a promise: this team's queue, served once every
        # (busy teams) tokens, or the upstream's own reset, whichever is later.
        ahead = len(self._queues.get(team, ())) + 1
        teams = max(1, len(self._queues))
        seconds = max(self._blocked_for(), ahead * teams / self.rate)
        return GovernorBusy(max(1, min(int(MAX_BLOCK_SECONDS), math.ceil(seconds))))
