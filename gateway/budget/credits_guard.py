"""Credit budgets behind the store-failure policy (GATEWAY_QUOTA_ON_STORE_ERROR).

Reserve is where money is at stake, so it follows the operator's policy;
settle and charge never fail a request that has already been served (a lost
adjustment is logged with its amount, for reconciliation); reads report an
outage as one.  The wrapper also keeps the remaining-credits gauge.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import structlog

from gateway.budget.credits import (
    UNLIMITED,
    Budget,
    QuotaRefused,
    Remaining,
    Reservation,
    limited,
    unaccounted,
)
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.settings import StoreErrorPolicy
from gateway.store import STORE_ERRORS, StoreGuard
from gateway.teams import Team

log = structlog.get_logger("gateway.quota")

T = TypeVar("T")

class GuardedBudget:
    """A budget behind the store-failure policy, keeping the remaining gauge.

    Reserve is where money is at stake, so it follows the operator's policy:
    `deny` refuses (503) rather than spend credits nobody can count; `allow`
    lets the request through unaccounted.  While the guard backs off after a
    failure the policy applies at once, without waiting on a dead store.
    Settle and charge never fail a request that has already been served: the
    failure is counted and the lost adjustment logged with its amount, for
    reconciliation.  Wrap MemoryBudget too when there is no Redis: it never
    fails, and the wrapper keeps the remaining-credits gauge either way.
    """

    def __init__(self, inner: Budget, metrics: Metrics, policy: StoreErrorPolicy) -> None:
        self._inner = inner
        self._metrics = metrics
        self._policy = policy
        self.guard = StoreGuard(metrics, "quota")

    async def reserve(
        self, team: Team, amount: int, *, now: datetime | None = None
    ) -> tuple[Reservation, Remaining]:
        if not limited(team):
            return unaccounted(team, now), UNLIMITED
        if self.guard.available:
            try:
                reservation, left = await self._inner.reserve(team, amount, now=now)
            except QuotaRefused as refused:
                self._gauge(team.name, refused.remaining)
                raise
            except STORE_ERRORS as exc:
                self.guard.failed(exc)
            else:
                self._gauge(team.name, left)
                return reservation, left
        # A zero-credit request puts nothing at risk, so no policy applies.
        if self._policy == "allow" or amount == 0:
            return unaccounted(team, now), UNLIMITED
        raise StoreUnavailable(
            "Quota store unavailable; requests are refused to protect the credit budget"
        )

    async def settle(self, reservation: Reservation, actual: int) -> None:
        if not reservation.accounted or max(0, actual) == reservation.amount:
            return
        if not self.guard.available:
            self._lost("settle", reservation.team, max(0, actual) - reservation.amount, None)
            return
        try:
            await self._inner.settle(reservation, actual)
        except STORE_ERRORS as exc:
            self.guard.failed(exc)
            self._lost("settle", reservation.team, max(0, actual) - reservation.amount, exc)

    async def charge(self, team: Team, amount: int, *, now: datetime | None = None) -> Remaining:
        if not limited(team):
            return UNLIMITED
        if not self.guard.available:
            self._lost("charge", team.name, amount, None)
            return UNLIMITED
        try:
            left = await self._inner.charge(team, amount, now=now)
        except STORE_ERRORS as exc:
            self.guard.failed(exc)
            self._lost("charge", team.name, amount, exc)
            return UNLIMITED
        self._gauge(team.name, left)
        return left

    async def remaining(self, team: Team, *, now: datetime | None = None) -> Remaining:
        return await self._read(lambda: self._inner.remaining(team, now=now))

    async def used(self, team: Team, *, now: datetime | None = None) -> tuple[int, int]:
        return await self._read(lambda: self._inner.used(team, now=now))

    async def _read(self, call: Callable[[], Awaitable[T]]) -> T:
        # Reads feed operators and callers asking what is left; a made-up
        # number would mislead them, so an outage is reported as one.
        if not self.guard.available:
            raise StoreUnavailable("Quota store unavailable; try again shortly")
        try:
            return await call()
        except STORE_ERRORS as exc:
            self.guard.failed(exc)
            raise StoreUnavailable("Quota store unavailable; try again shortly") from exc

    def _gauge(self, team: str, left: Remaining) -> None:
        if left.day is not None:
            self._metrics.quota_remaining.labels(team, "day").set(left.day)
        if left.month is not None:
            self._metrics.quota_remaining.labels(team, "month").set(left.month)

    def _lost(self, what: str, team: str, credits: int, exc: BaseException | None) -> None:
        log.warning(
            "quota_adjustment_lost",
            operation=what,
            team=team,
            credits=credits,
            error=type(exc).__name__ if exc is not None else "store_backoff",
        )
