"""The request path's view of budgets: rate, credits, upstream pace, ownership.

One object the handlers talk to, composed of the stores in `gateway.budget.credits`,
`gateway.budget.rates` and `gateway.budget.ownership` (each Redis-backed with an
in-memory twin).  It turns their outcomes into the gateway's answers and
metrics:

* team rate over `requests_per_second` → 429 (9201) with `Retry-After`,
  counted as `quota_rejections_total{kind="rate"}`;
* a reservation that does not fit → 402 (9200, `X-Gateway-Error:
  quota_exceeded`), counted with kind `credits_day` / `credits_month`;
* no upstream admission before the caller's deadline → 429 (9202), kind
  `upstream_rate`;
* an id of another team → the upstream's own "not found" answer for that
  route, so a caller learns nothing about other teams' queues and lists.

Remaining credits for the response headers are remembered per team from the
latest reservation or charge and re-read at most once a second, so a cache
hit of a limited team costs no store round trip; the figures may lag other
replicas' spending by up to that second.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.budget.credits import Budget, QuotaRefused, Remaining, Reservation, limited
from gateway.budget.governor import Governor, GovernorBusy
from gateway.budget.ownership import Kind, Ownership
from gateway.budget.rates import RateLimiter
from gateway.errors import QuotaExceeded, RateLimited, StoreUnavailable
from gateway.metrics import Metrics
from gateway.teams import ADMIN_TEAM, Team
from gateway.upstream import UpstreamAnswer, local_answer

REMAINING_FRESH_SECONDS = 1.0
HEADER_DAY = "X-Gateway-Credits-Remaining-Day"
HEADER_MONTH = "X-Gateway-Credits-Remaining-Month"

# What Clearout answers for an id it does not know, per route: a foreign id
# gets exactly this, so it is indistinguishable from a wrong one.
NOT_FOUND = {
    "queue_status": (1104, "Invalid queue ID"),
    "progress_status": (1008, "You are not authorized to access this resource"),
    "download_result": (1029, "List is not available"),
    "list_cancel": (1029, "List is not available"),
    "list_remove": (1029, "List is not available"),
}

UNLIMITED_HEADERS = {HEADER_DAY: "unlimited", HEADER_MONTH: "unlimited"}


def foreign_id_answer(route: str) -> UpstreamAnswer:
    """What upstream answers on `route` for an id it does not know (200, `failed`)."""
    code, message = NOT_FOUND[route]
    return local_answer({"status": "failed", "error": {"code": code, "message": message}})


def _window_text(value: int | None) -> str:
    return "unlimited" if value is None else str(max(0, value))


@dataclass
class Budgets:
    budget: Budget
    limiter: RateLimiter
    governor: Governor
    ownership: Ownership
    metrics: Metrics
    _remaining: dict[str, tuple[float, Remaining]] = field(default_factory=dict)

    # ---- rate --------------------------------------------------------------

    async def check_rate(self, team: Team) -> None:
        rps = team.quota.requests_per_second
        if not rps:
            return
        wait = await self.limiter.acquire(team.name, rps, rps)
        if wait > 0:
            self.metrics.quota_rejections.labels(team.name, "rate").inc()
            raise RateLimited(
                f"Team {team.name} is over its rate of {rps:g} requests per second",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    # ---- credits -----------------------------------------------------------

    async def reserve(self, team: Team, amount: int) -> Reservation:
        try:
            reservation, left = await self.budget.reserve(team, amount)
        except StoreUnavailable as exc:
            exc.team = team.name
            raise
        except QuotaRefused as refused:
            self._remember(team, refused.remaining)
            self.metrics.quota_rejections.labels(team.name, refused.kind).inc()
            window = "today" if refused.kind == "credits_day" else "this month"
            error = QuotaExceeded(
                f"Team {team.name} has not enough credits left {window} for this request "
                f"({amount} needed)",
                headers=self.remaining_headers_from(refused.remaining),
            )
            error.team = team.name
            raise error from None
        if limited(team):
            self._remember(team, left)
        return reservation

    async def settle(self, reservation: Reservation, actual: int) -> None:
        await self.budget.settle(reservation, actual)
        self._remaining.pop(reservation.team, None)

    async def charge_hit(self, team: Team, credits: int) -> None:
        """Internal chargeback of a cache hit, for teams that asked for it."""
        if team.quota.charge_cache_hits and credits:
            self._remember(team, await self.budget.charge(team, credits))
            self.metrics.credits_spent.labels(team.name).inc(credits)

    def _remember(self, team: Team, left: Remaining) -> None:
        self._remaining[team.name] = (time.monotonic(), left)

    async def remaining_headers(self, team: Team) -> dict[str, str]:
        if not limited(team):
            return UNLIMITED_HEADERS
        known = self._remaining.get(team.name)
        if known is None or time.monotonic() - known[0] > REMAINING_FRESH_SECONDS:
            try:
                left = await self.budget.remaining(team)
            except StoreUnavailable:
                return {}  # no figure rather than a wrong one
            self._remember(team, left)
            known = self._remaining[team.name]
        return self.remaining_headers_from(known[1])

    @staticmethod
    def remaining_headers_from(left: Remaining) -> dict[str, str]:
        return {HEADER_DAY: _window_text(left.day), HEADER_MONTH: _window_text(left.month)}

    # ---- upstream pace -----------------------------------------------------

    async def admit_upstream(self, team: Team, deadline: float) -> None:
        try:
            await self.governor.acquire(team.name, deadline)
        except GovernorBusy as busy:
            self.metrics.quota_rejections.labels(team.name, "upstream_rate").inc()
            busy.team = team.name
            raise

    def observe_upstream(self, headers: Mapping[str, str]) -> None:
        """Feed the upstream's x-ratelimit-* headers to the governor."""
        remaining, reset = _number(headers, "x-ratelimit-remaining"), _number(
            headers, "x-ratelimit-reset"
        )
        if reset is not None and reset < 1_000_000_000:
            reset = time.time() + reset  # a delay, not an epoch
        self.governor.observe(int(remaining) if remaining is not None else None, reset)

    # ---- ownership ---------------------------------------------------------

    async def record_owner(self, kind: Kind, resource_id: str, team: Team) -> None:
        if team is ADMIN_TEAM:
            return
        await self.ownership.record(kind, resource_id, team.name)

    async def grant(self, kind: Kind, resource_id: str, team: Team) -> None:
        """Let a second team use an id (a queued lookup it was coalesced onto)."""
        if team is ADMIN_TEAM:
            return
        await self.ownership.record(kind, f"{resource_id}#{team.name}", team.name)

    async def may_use(self, kind: Kind, resource_id: str, team: Team) -> bool:
        if team is ADMIN_TEAM:
            return True
        if await self.ownership.owner(kind, resource_id) == team.name:
            return True
        return await self.ownership.owner(kind, f"{resource_id}#{team.name}") == team.name

    async def forget(self, kind: Kind, resource_id: str) -> None:
        await self.ownership.forget(kind, resource_id)



def _number(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None
