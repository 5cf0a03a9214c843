"""The upstream governor: GATEWAY_UPSTREAM_RPM for every replica together, fair across teams.

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

import structlog
from redis.asyncio import Redis

from gateway.budget.rates import BUCKET_LUA, MemoryBucket
from gateway.errors import UpstreamBusy
from gateway.metrics import Metrics
from gateway.store import STORE_ERRORS, Script, StoreGuard
from gateway.tasks import Tasks

log = structlog.get_logger("gateway.governor")

BUCKET_KEY = "cgw:gov:bucket"
BLOCK_KEY = "cgw:gov:blocked_until"

# The dispatcher re-checks at least this often, so a block another replica
# shared, or waiters that all gave up, are noticed without a long sleep.
MAX_SLEEP_SECONDS = 1.0
# An upstream reset further away than this is treated as a bogus header.
MAX_BLOCK_SECONDS = 3600.0

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

    def __init__(
        self, rpm: int | None, redis: Redis | None, metrics: Metrics, tasks: Tasks | None = None
    ) -> None:
        self.rpm = rpm
        self.capacity, self.rate = governor_shape(rpm) if rpm is not None else (0, 0.0)
        self.guard = StoreGuard(metrics, "ratelimit")
        self._redis = redis
        if redis is not None:
            self._bucket = Script(redis, BUCKET_LUA, idempotent=False)
            self._block = Script(redis, BLOCK_LUA, idempotent=True)
        # The app's tasks when given (stopped with the app), else its own.
        self._tasks = tasks or Tasks()
        self._owns_tasks = tasks is None
        self._local = MemoryBucket(self.rate, self.capacity)
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._served: dict[str, int] = {}  # team -> serial of its latest admission
        self._serial = 0
        self._blocked_until = 0.0  # epoch seconds; no admission before
        self._dispatcher: asyncio.Task[None] | None = None

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
            self._dispatcher = self._tasks.spawn(self._dispatch(), "upstream-governor")
        try:
            await asyncio.wait((waiter,), timeout=deadline - now)
        finally:
            if not waiter.done():
                waiter.cancel()  # the dispatcher skips it; a token is never handed to it
            self._discard(team, waiter)
        if waiter.cancelled():
            raise self._busy(team)

    def observe(self, remaining: int | None, reset_epoch: float | None) -> None:
        """Feed the upstream's x-ratelimit-* headers (reset as an epoch second)."""
        if self.rpm is None or remaining != 0 or reset_epoch is None:
            return
        now = time.time()
        until = min(reset_epoch, now + MAX_BLOCK_SECONDS)
        if until <= max(now, self._blocked_until):
            return
        self._blocked_until = until
        if self._redis is None or not self.guard.available:
            return
        self._tasks.spawn(self._share_block(until), "governor-share-block")

    async def aclose(self) -> None:
        """Refuse whoever still waits, and stop the dispatcher if the tasks are its own."""
        for queue in self._queues.values():
            for waiter in queue:
                waiter.cancel()
        self._queues.clear()
        if self._owns_tasks:
            await self._tasks.aclose()

    # ---- the dispatcher ---------------------------------------------------

    async def _dispatch(self) -> None:
        while self._queues:
            try:
                wait = await self._take()
            except Exception:
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
        wait = await self._bucket(keys=[BUCKET_KEY], args=[repr(self.rate), self.capacity])
        return float(wait)

    async def _share_block(self, until: float) -> None:
        assert self._redis is not None
        try:
            await self._block(keys=[BLOCK_KEY], args=[int(until * 1000)])
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
