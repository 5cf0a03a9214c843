"""The life of a queued lookup: from Clearout's 524 to a cached answer (or a refund).

When Clearout answers 524 with a `queue_id`, it goes on looking and will
charge when it finds.  `QueuedLookups` remembers the lookup with its cache
key, team and credit reservation (`gateway.lookup.queued` stores it); the
same person asked again meanwhile gets the same 524 (`waiting`); when the
lookup completes, seen by a caller's `queue_status` or by the poller, the
answer is settled, counted and cached exactly once (`complete`); one never
completed within GATEWAY_QUEUED_RESERVATION_TTL_SECONDS is refunded
(`expire`).  With Redis, a per-queue-id lock lets one replica poll a lookup
per round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis

from gateway.budget import Budgets, Reservation
from gateway.lookup.cache import CachedAnswer, LookupCache
from gateway.lookup.pricing import Prices, credits_for, outcome, success_data
from gateway.lookup.queued import QueuedLookup, QueuedStore
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.store import STORE_ERRORS
from gateway.teams import Team
from gateway.upstream import Upstream, UpstreamAnswer

log = structlog.get_logger("gateway.queue")

POLL_LOCK_PREFIX = "cgw:qpoll:"
POLL_BATCH = 50
# A record outlives its refund deadline by a day, so the poller still finds it.
RECORD_GRACE_SECONDS = 86400


def queue_id(payload: Any) -> str | None:
    """The `queue_id` of a 524 body (`error.additional_info.queue_id`)."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    info = error.get("additional_info") if isinstance(error, dict) else None
    qid = info.get("queue_id") if isinstance(info, dict) else None
    return qid if isinstance(qid, str) and qid else None


@dataclass
class QueuedLookups:
    settings: Settings
    store: QueuedStore
    cache: LookupCache
    budgets: Budgets
    metrics: Metrics
    prices: Prices
    redis: Redis | None

    async def waiting(self, qid: str) -> QueuedLookup | None:
        """The queued lookup `qid`, if it is still in flight (and not given up on)."""
        guard = self.cache.guard
        if not guard.available:
            return None
        try:
            item = await self.store.get(qid)
        except STORE_ERRORS as exc:  # treated as not queued
            guard.failed(exc)
            return None
        if item is not None and item.expires_at and item.expires_at < time.time():
            return None  # given up on; the poller refunds it
        return item

    async def remember(
        self, answer: UpstreamAnswer, qid: str, key: str, team: Team, reservation: Reservation
    ) -> None:
        """Keep a 524's lookup, its team's ownership of the id, and its held credits."""
        await self.budgets.record_owner("queue", qid, team)
        ttl = self.settings.queued_reservation_ttl
        item = QueuedLookup(
            qid=qid, key=key, team=team.name, body=answer.body,
            reservation=reservation.dumps(), expires_at=time.time() + ttl,
        )  # fmt: skip
        try:
            await self.store.record(item, ttl + RECORD_GRACE_SECONDS)
        except STORE_ERRORS as exc:  # the caller still gets its 524
            self.cache.guard.failed(exc)

    async def complete(self, qid: str, answer: UpstreamAnswer) -> None:
        """A queue_status answer for `qid`: settle, count and cache it once it completed."""
        data = success_data(answer.json()) if answer.status == 200 else None
        if data is None or data.get("query_status") != "completed":
            return
        item = await self._finish(qid)
        if item is None:
            return  # not ours, or already completed by someone else
        instant = {k: v for k, v in data.items() if k != "query_status"}
        credits = credits_for(instant, self.prices)
        if item.reservation:
            await self.budgets.settle(Reservation.loads(item.reservation), credits)
        self.metrics.credits_spent.labels(item.team).inc(credits)
        kind = outcome(instant)
        if kind != "other" and item.key:
            body = orjson.dumps({"status": "success", "data": instant})
            await self.cache.set(item.key, CachedAnswer(body, credits, kind == "found"))
        log.info("queued_lookup_completed", queue_id=qid, team=item.team, credits=credits)

    async def _finish(self, qid: str) -> QueuedLookup | None:
        try:
            item = await self.store.get(qid)
            if item is None or not await self.store.finish(item):
                return None
        except STORE_ERRORS as exc:
            self.cache.guard.failed(exc)
            return None
        return item

    async def expire(self, qid: str) -> bool:
        """Refund a queued lookup that never completed within its time; True if done."""
        item = await self.store.get(qid)
        if item is None or not item.expires_at or item.expires_at >= time.time():
            return False
        if not await self.store.finish(item):
            return False
        if item.reservation:
            await self.budgets.settle(Reservation.loads(item.reservation), 0)
        log.info("queued_lookup_expired", queue_id=qid, team=item.team, refunded=True)
        return True

    async def poll_once(self, upstream: Upstream) -> int:
        """Ask upstream about pending queued lookups; how many were polled."""
        polled = 0
        for qid in await self.store.pending(POLL_BATCH):
            if await self.expire(qid) or not await self._poll_turn(qid):
                continue
            answer = await upstream.call(
                "queue_status", "GET", "/email_finder/instant/queue_status",
                params={"qid": qid}, timeout=self.settings.upstream_timeout,
            )  # fmt: skip
            polled += 1
            await self.complete(qid, answer)
        return polled

    async def _poll_turn(self, qid: str) -> bool:
        """Whether this replica polls `qid` this round (one replica per round, with Redis)."""
        if self.redis is None:
            return True
        lock_ms = int(self.settings.queue_poll_interval * 900)
        return bool(await self.redis.set(POLL_LOCK_PREFIX + qid, b"1", nx=True, px=lock_ms))
