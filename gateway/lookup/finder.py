"""The instant lookup service: cache, queued lookups, single-flight, budget, upstream.

    key = normalize(name, domain)
    cache hit ─────────────────────────────► answer (HIT, credits saved)
    queued lookup for this key ────────────► the same 524 (COALESCED)
    single-flight(key):
        another caller is asking ──────────► its answer (COALESCED)
        we lead: reserve ─► governor ─► upstream ─► settle ─► cache by TTL class
                 (a 524 keeps its reservation and is remembered)
                                           ► answer (MISS)

`Finder.instant(team, lookup, mode, forward_headers)` takes and returns plain
values (`gateway.lookup.request`): the HTTP handler, a bulk row or a test can
ask it alike.  Mode `bypass` goes straight upstream and neither reads nor
writes the cache; `refresh` skips the read and replaces the entry.  Only the
single-flight leader reserves credits: a caller coalesced onto another's
lookup pays nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass

from multidict import CIMultiDict

from gateway import context
from gateway.budget import UNLIMITED_HEADERS, Budgets, Reservation, limited
from gateway.errors import GatewayError
from gateway.lookup.cache import CachedAnswer, LookupCache
from gateway.lookup.pricing import Prices, credits_for, outcome, success_data
from gateway.lookup.queue import QueuedLookups, queue_id
from gateway.lookup.request import CacheMode, CacheStatus, InstantRequest, LookupResult
from gateway.lookup.singleflight import Fetched, Flown, SingleFlight
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.teams import Team
from gateway.upstream import Upstream, UpstreamAnswer

Answer = UpstreamAnswer | CachedAnswer
CACHE_RESULT: dict[CacheStatus, str] = {
    "HIT": "hit", "MISS": "miss", "COALESCED": "coalesced", "BYPASS": "bypass"
}


@dataclass
class Finder:
    settings: Settings
    cache: LookupCache
    flights: SingleFlight[UpstreamAnswer]
    queue: QueuedLookups
    budgets: Budgets
    upstream: Upstream
    metrics: Metrics
    prices: Prices

    async def instant(
        self,
        team: Team,
        lookup: InstantRequest,
        mode: CacheMode = "normal",
        forward_headers: Mapping[str, str] | None = None,
    ) -> LookupResult:
        """The answer for one instant lookup, with its X-Cache status and credits left."""
        key = self.cache.key(team.name, lookup.name, lookup.domain)
        if mode == "normal" and not team.quota.charge_cache_hits and not limited(team):
            # The hot path: a hit from the in-process layer for a team with
            # nothing to charge or count down, without one await.
            hit = self.cache.get_local(key)
            if hit is not None:
                self.metrics.count_saved(team.name, hit.credits)
                return self._result("HIT", hit, UNLIMITED_HEADERS)
        status, answer = await self._answer(team, lookup, key, mode, forward_headers)
        return self._result(status, answer, await self.budgets.remaining_headers(team))

    def _result(
        self, status: CacheStatus, answer: Answer, credits_left: Mapping[str, str]
    ) -> LookupResult:
        self.metrics.count_cache(CACHE_RESULT[status])
        context.note_cache(status)
        if isinstance(answer, CachedAnswer):
            return LookupResult(200, answer.body, status, credits_left=credits_left)
        return LookupResult(answer.status, answer.body, status, answer.headers, credits_left)

    async def _answer(
        self, team: Team, lookup: InstantRequest, key: str, mode: CacheMode,
        forward: Mapping[str, str] | None,
    ) -> tuple[CacheStatus, Answer]:  # fmt: skip
        if mode == "bypass":
            answer, _, _ = await self._ask_upstream(team, lookup, key, forward, store=False)
            return "BYPASS", answer
        if mode == "normal":
            # The in-process layer first, without a round trip.
            hit = self.cache.get_local(key)
            if hit is not None:
                return "HIT", await self._hit(team, hit)
        return await self._fly(team, lookup, key, mode == "normal", forward)

    async def _hit(self, team: Team, hit: CachedAnswer) -> CachedAnswer:
        self.metrics.count_saved(team.name, hit.credits)
        if team.quota.charge_cache_hits:
            await self.budgets.charge_hit(team, hit.credits)
        return hit

    async def _fly(
        self, team: Team, lookup: InstantRequest, key: str, read: bool,
        forward: Mapping[str, str] | None,
    ) -> tuple[CacheStatus, Answer]:  # fmt: skip
        flown = await self._flight(team, lookup, key, read, forward)
        if flown.kind == "hit":
            assert isinstance(flown.answer, CachedAnswer)
            self.cache.remember(key, flown.answer)
            return "HIT", await self._hit(team, flown.answer)
        if flown.kind == "queued":
            queued = await self._queued(team, flown.qid)
            if queued is None:  # given up on, or gone: ask anew
                return await self._fly(team, lookup, key, False, forward)
            return "COALESCED", queued
        assert flown.answer is not None
        if flown.kind == "led":
            return "MISS", flown.answer
        if isinstance(flown.answer, CachedAnswer):
            self.metrics.count_saved(team.name, flown.answer.credits)
        else:
            await self._coalesced_onto(team, flown.answer)
        return "COALESCED", flown.answer

    async def _flight(
        self, team: Team, lookup: InstantRequest, key: str, read: bool,
        forward: Mapping[str, str] | None,
    ) -> Flown[UpstreamAnswer]:  # fmt: skip
        def flight() -> Awaitable[Flown[UpstreamAnswer]]:
            return self.flights.run(
                key,
                lambda: self._ask_upstream(team, lookup, key, forward, store=True),
                read=read,
                timeout=lookup.timeout_ms / 1000 + self.settings.upstream_timeout_margin,
            )

        try:
            return await flight()
        except GatewayError as refused:
            if refused.team is None or refused.team == team.name:
                raise
            # We waited on another team's lookup and *its* budget refused it
            # (quota, pace, or its store check): that says nothing about ours,
            # so ask ourselves.
            return await flight()

    async def _queued(self, team: Team, qid: str) -> UpstreamAnswer | None:
        """The 524 of the lookup of this person already queued upstream (its id shared)."""
        queued = await self.queue.waiting(qid)
        if queued is None:
            return None
        if queued.team != team.name:
            await self.budgets.grant("queue", queued.qid, team)
        headers = CIMultiDict({"Content-Type": "application/json; charset=utf-8"})
        return UpstreamAnswer(524, headers, queued.body)

    async def _coalesced_onto(self, team: Team, answer: UpstreamAnswer) -> None:
        """Another caller's upstream answer served to `team`: saved credits, shared queue id."""
        payload = answer.json()
        data = success_data(payload)
        if data is not None:
            self.metrics.count_saved(team.name, credits_for(data, self.prices))
        qid = queue_id(payload) if answer.status == 524 else None
        if qid:
            await self.budgets.grant("queue", qid, team)

    async def _ask_upstream(
        self, team: Team, lookup: InstantRequest, key: str,
        forward: Mapping[str, str] | None, *, store: bool,
    ) -> Fetched[UpstreamAnswer]:  # fmt: skip
        """One paid upstream lookup: reserve, wait our turn, ask, settle (or hold on 524).

        Returns the answer, and the cache entry it makes (if any) with its TTL,
        which the flight stores as it releases the lease.
        """
        deadline = time.monotonic() + lookup.timeout_ms / 1000
        reservation = await self.budgets.reserve(team, self.prices.maximum)
        held = False
        try:
            await self.budgets.admit_upstream(team, deadline)
            answer = await self.upstream.call(
                "instant", "POST", "/email_finder/instant",
                json_body=lookup.upstream_body(), caller_headers=forward,
                # Clearout answers 524 itself once the caller's timeout passes;
                # the margin lets that answer (with its queue id) reach us first.
                timeout=max(1.0, deadline - time.monotonic())
                + self.settings.upstream_timeout_margin,
            )  # fmt: skip
            self.budgets.observe_upstream(answer.headers)
            held, entry = await self._account(team, answer, key if store else "", reservation)
        finally:
            if not held:
                await self.budgets.settle(reservation, 0)
        if entry is not None:
            self.cache.remember(key, entry)
            return answer, entry, self.cache.ttl_for(entry)
        return answer, None, 0.0

    async def _account(
        self, team: Team, answer: UpstreamAnswer, key: str, reservation: Reservation
    ) -> tuple[bool, CachedAnswer | None]:
        """Settle and count an answer: whether the reservation is taken care of, and the
        cache entry it makes (None when nothing is to be cached)."""
        data = success_data(answer.json()) if answer.status == 200 else None
        if data is not None:
            credits = credits_for(data, self.prices)
            await self.budgets.settle(reservation, credits)
            self.metrics.credits_spent.labels(team.name).inc(credits)
            kind = outcome(data)
            if key and kind != "other":
                return True, CachedAnswer(answer.body, credits, kind == "found")
            return True, None
        qid = queue_id(answer.json()) if answer.status == 524 else None
        if qid is not None:
            # The lookup goes on upstream and will be charged when it
            # completes: keep the credits held until then.
            await self.queue.remember(answer, qid, key, team, reservation)
            return True, None
        return False, None
