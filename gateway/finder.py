"""The instant lookup's path through cache, single-flight and upstream.

    key = normalize(name, domain)
    cache hit ─────────────────────────────► answer (X-Cache: HIT, credits saved)
    queued lookup for this key ────────────► the same 524 (X-Cache: COALESCED)
    single-flight(key):
        another caller is asking ──────────► its answer (X-Cache: COALESCED)
        we lead: upstream ─► cache by TTL class, remember a 524's queue id
                                           ► answer (X-Cache: MISS)

`X-Gateway-Cache: bypass` goes straight upstream and neither reads nor
writes the cache; `refresh` skips the read and replaces the entry.  Other
client headers (`Cache-Control: no-cache` and friends) change nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from aiohttp import web
from multidict import CIMultiDict

from gateway.auth import Team
from gateway.budgets import UNLIMITED_HEADERS, Budgets
from gateway.cache import CachedAnswer, LookupCache
from gateway.errors import GatewayError
from gateway.handlers.common import call_upstream, relay
from gateway.metrics import Metrics
from gateway.pricing import Prices, credits_for, outcome, success_data
from gateway.queued import QueuedLookup, QueuedStore
from gateway.quota import Reservation, limited
from gateway.settings import Settings
from gateway.singleflight import SingleFlight
from gateway.upstream import UpstreamAnswer
from gateway.validation import InstantRequest

log = structlog.get_logger("gateway.finder")

CacheMode = Literal["normal", "refresh", "bypass"]
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def cache_mode(request: web.Request) -> CacheMode:
    value = request.headers.get("X-Gateway-Cache", "").strip().lower()
    if value in ("refresh", "bypass"):
        return value  # type: ignore[return-value]
    return "normal"


@dataclass
class Finder:
    settings: Settings
    cache: LookupCache
    flights: SingleFlight[UpstreamAnswer, CachedAnswer]
    queued: QueuedStore
    metrics: Metrics
    prices: Prices
    budgets: Budgets

    async def instant(
        self, request: web.Request, team: Team, lookup: InstantRequest
    ) -> tuple[web.Response, str]:
        """The caller's response and its X-Cache value (plus remaining-credit headers)."""
        response, status = await self._answer(request, team, lookup)
        if limited(team):
            response.headers.update(await self.budgets.remaining_headers(team))
        else:
            response.headers.update(UNLIMITED_HEADERS)
        return response, status

    async def _answer(
        self, request: web.Request, team: Team, lookup: InstantRequest
    ) -> tuple[web.Response, str]:
        mode = cache_mode(request)
        key = self.cache.key(team.name, lookup.name, lookup.domain)
        if mode == "bypass":
            answer = await self._ask_upstream(request, team, lookup, key, store=False)
            return self._count(relay(answer), "BYPASS"), "BYPASS"
        if mode == "normal":
            # The in-process layer first, without a coroutine hop: the hot path.
            hit = self.cache.get_local(key) or await self.cache.get(key)
            if hit is not None:
                self.metrics.count_saved(team.name, hit.credits)
                if team.quota.charge_cache_hits:
                    await self.budgets.charge_hit(team, hit.credits)
                return self._hit(hit, "HIT"), "HIT"
            queued = await self._queued_for(key)
            if queued is not None:
                if queued.team != team.name:
                    await self.budgets.grant("queue", queued.qid, team)
                return self._count(self._replay_queued(queued), "COALESCED"), "COALESCED"

        def flight() -> Awaitable[tuple[UpstreamAnswer | CachedAnswer, bool]]:
            return self.flights.run(
                key,
                lambda: self._ask_upstream(request, team, lookup, key, store=True),
                (lambda: self.cache.get(key)) if mode == "normal" else None,
                timeout=lookup.timeout_ms / 1000 + self.settings.upstream_timeout_margin,
            )

        try:
            result, coalesced = await flight()
        except GatewayError as refused:
            if refused.team is None or refused.team == team.name:
                raise
            # We waited on another team's lookup and *its* budget refused it
            # (quota, pace, or its store check): that says nothing about ours,
            # so ask ourselves.
            result, coalesced = await flight()
        if isinstance(result, CachedAnswer):
            self.metrics.count_saved(team.name, result.credits)
            return self._hit(result, "COALESCED"), "COALESCED"
        status = "COALESCED" if coalesced else "MISS"
        if coalesced:
            payload = result.json()
            data = success_data(payload)
            if data is not None:
                self.metrics.count_saved(team.name, credits_for(data, self.prices))
            qid = _queue_id(payload) if result.status == 524 else None
            if qid:
                await self.budgets.grant("queue", qid, team)
        return self._count(relay(result), status), status

    def _count(self, response: web.Response, status: str) -> web.Response:
        response.headers["X-Cache"] = status
        self.metrics.count_cache(status.lower())
        return response

    def _hit(self, hit: CachedAnswer, status: str) -> web.Response:
        """A cached answer as the caller's response (the hot path: headers built once)."""
        self.metrics.count_cache(status.lower())
        headers = CIMultiDict(JSON_HEADERS)
        headers["X-Cache"] = status
        return web.Response(body=hit.body, headers=headers)

    @staticmethod
    def _replay_queued(item: QueuedLookup) -> web.Response:
        return web.Response(
            status=524, reason="A Timeout Occurred", body=item.body, headers=JSON_HEADERS
        )

    async def _queued_for(self, key: str) -> QueuedLookup | None:
        if not self.cache.guard.available:
            return None
        try:
            item = await self.queued.by_key(key)
        except Exception as exc:  # treated as not queued
            self.cache.guard.failed(exc)
            return None
        if item is not None and item.expires_at and item.expires_at < time.time():
            return None  # given up on; the poller refunds it
        return item

    async def expire_queued(self, qid: str) -> bool:
        """Refund a queued lookup that never completed within its time; True if done."""
        item = await self.queued.get(qid)
        if item is None or not item.expires_at or item.expires_at >= time.time():
            return False
        if not await self.queued.finish(item):
            return False
        if item.reservation:
            await self.budgets.settle(Reservation.loads(item.reservation), 0)
        log.info("queued_lookup_expired", queue_id=qid, team=item.team, refunded=True)
        return True

    async def _ask_upstream(
        self, request: web.Request, team: Team, lookup: InstantRequest, key: str, *, store: bool
    ) -> UpstreamAnswer:
        """One paid upstream lookup: reserve, wait our turn, ask, settle (or hold on 524)."""
        deadline = time.monotonic() + lookup.timeout_ms / 1000
        reservation = await self.budgets.reserve(team, self.prices.maximum)
        held = False
        try:
            await self.budgets.admit_upstream(team, deadline)
            answer = await call_upstream(
                request,
                "instant",
                "POST",
                "/email_finder/instant",
                json_body=lookup.upstream_body(),
                # Clearout answers 524 itself once the caller's timeout passes;
                # the margin lets that answer (with its queue id) reach us first.
                timeout=max(1.0, deadline - time.monotonic())
                + self.settings.upstream_timeout_margin,
            )
            self.budgets.observe_upstream(answer.headers)
            payload = answer.json()
            data = success_data(payload) if answer.status == 200 else None
            if data is not None:
                credits = credits_for(data, self.prices)
                await self.budgets.settle(reservation, credits)
                held = True  # settled to the actual charge
                self.metrics.credits_spent.labels(team.name).inc(credits)
                kind = outcome(data)
                if store and kind != "other":
                    await self.cache.set(key, CachedAnswer(answer.body, credits, kind == "found"))
            elif answer.status == 524 and (qid := _queue_id(payload)):
                # The lookup goes on upstream and will be charged when it
                # completes: keep the credits held until then.
                held = True
                await self.budgets.record_owner("queue", qid, team)
                item = QueuedLookup(
                    qid=qid,
                    key=key if store else "",
                    team=team.name,
                    body=answer.body,
                    reservation=reservation.dumps(),
                    expires_at=time.time() + self.settings.queued_reservation_ttl,
                )
                await self._remember_queued(item)
            return answer
        finally:
            if not held:
                await self.budgets.settle(reservation, 0)

    async def _remember_queued(self, item: QueuedLookup) -> None:
        try:
            # Kept a day past its expiry so the poller can still refund it.
            await self.queued.record(item, self.settings.queued_reservation_ttl + 86400)
        except Exception as exc:  # the caller still gets its 524
            self.cache.guard.failed(exc)

    async def complete_queued(self, qid: str, answer: UpstreamAnswer) -> None:
        """A queue_status answer for `qid`: fill the cache once the lookup completed."""
        data = success_data(answer.json()) if answer.status == 200 else None
        if data is None or data.get("query_status") != "completed":
            return
        try:
            item = await self.queued.get(qid)
            if item is None or not await self.queued.finish(item):
                return  # not ours, or already completed by someone else
        except Exception as exc:
            self.cache.guard.failed(exc)
            return
        instant = {k: v for k, v in data.items() if k != "query_status"}
        body = json.dumps({"status": "success", "data": instant}).encode()
        credits = credits_for(instant, self.prices)
        if item.reservation:
            await self.budgets.settle(Reservation.loads(item.reservation), credits)
        self.metrics.credits_spent.labels(item.team).inc(credits)
        kind = outcome(instant)
        if kind != "other" and item.key:
            await self.cache.set(item.key, CachedAnswer(body, credits, kind == "found"))
        log.info("queued_lookup_completed", queue_id=qid, team=item.team, credits=credits)


def _queue_id(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    info = error.get("additional_info") if isinstance(error, dict) else None
    qid = info.get("queue_id") if isinstance(info, dict) else None
    return qid if isinstance(qid, str) and qid else None
