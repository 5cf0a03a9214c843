"""Credit budgets: per-team day and month counters, exact across replicas.

A lookup reserves its worst-case price before the upstream call and settles
to the real charge afterwards.  Both windows (UTC day `YYYYMMDD`, UTC month
`YYYYMM`) are checked and reserved by one Lua script, so concurrent requests
on any number of replicas can never overshoot a limit: either both counters
move or neither does.  A reservation remembers its windows, so a settle that
lands after midnight adjusts the window the credits were reserved in.

Keys are `cgw:quota:{<team>}:d:<YYYYMMDD>` and `cgw:quota:{<team>}:m:<YYYYMM>`:
the hash tag puts a team's two counters in one Redis Cluster slot (the script
touches both).  Each key expires one day after its window ends, so old
windows clean themselves up and a late settle still finds its counter.

Teams without any limit are not counted at all (no Redis round trip on their
path); their spend is visible in `clearout_gateway_credits_spent_total`.

`RedisBudget` is the shared store, `MemoryBudget` its single-process twin.
`GuardedBudget` wraps either with the store-failure policy
(GATEWAY_QUOTA_ON_STORE_ERROR) and keeps the remaining-credits gauge.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol, TypeVar

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.auth import Team
from gateway.cache import StoreGuard
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.settings import StoreErrorPolicy

log = structlog.get_logger("gateway.quota")

T = TypeVar("T")

KEY_PREFIX = "cgw:quota:"

# What a Redis outage looks like from redis-py: its own errors, socket errors,
# and timeouts.  Anything else is a bug and must not be mistaken for one.
STORE_ERRORS = (RedisError, OSError, TimeoutError, EOFError)

QuotaKind = Literal["credits_day", "credits_month"]


@dataclass(frozen=True, slots=True)
class Reservation:
    """Credits held for one request, in the windows current when it was made.

    `accounted=False` marks a reservation that holds nothing (a team without
    limits, or the `allow` policy while the store was down): settling it is a
    no-op and its `amount` is 0.
    """

    team: str
    amount: int
    day: str
    month: str
    accounted: bool = True

    def dumps(self) -> str:
        """A compact string form, for keeping a reservation with a queued lookup."""
        return f"{self.team}|{self.amount}|{self.day}|{self.month}|{int(self.accounted)}"

    @classmethod
    def loads(cls, raw: str | bytes) -> Reservation:
        text = raw.decode() if isinstance(raw, bytes) else raw
        team, amount, day, month, accounted = text.split("|")
        return cls(team, int(amount), day, month, accounted == "1")


@dataclass(frozen=True, slots=True)
class Remaining:
    """Credits left in the current windows.

    None where the team has no limit in that window, and also where the
    figure is unknown because the store is down (`allow` policy, lost charge).
    """

    day: int | None
    month: int | None


UNLIMITED = Remaining(None, None)  # also "no figure" during an outage


class QuotaRefused(Exception):
    """The reservation would overflow a window; nothing was reserved."""

    def __init__(self, team: str, kind: QuotaKind, remaining: Remaining) -> None:
        super().__init__(f"{team}: {kind} exhausted")
        self.team = team
        self.kind: QuotaKind = kind
        self.remaining = remaining


class Budget(Protocol):
    async def reserve(
        self, team: Team, amount: int, *, now: datetime | None = None
    ) -> tuple[Reservation, Remaining]: ...
    async def settle(self, reservation: Reservation, actual: int) -> None: ...
    async def charge(
        self, team: Team, amount: int, *, now: datetime | None = None
    ) -> Remaining: ...
    async def remaining(self, team: Team, *, now: datetime | None = None) -> Remaining: ...
    async def used(self, team: Team, *, now: datetime | None = None) -> tuple[int, int]: ...


# ---- windows -------------------------------------------------------------


def windows(now: datetime | None = None) -> tuple[str, str]:
    """The UTC day and month window names for `now` (naive means UTC)."""
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(UTC)
    return now.strftime("%Y%m%d"), now.strftime("%Y%m")


def day_expiry(day: str) -> int:
    """Epoch second when a day counter may go: one day after its window ends."""
    start = datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC)
    return int((start + timedelta(days=2)).timestamp())


def month_expiry(month: str) -> int:
    """Epoch second when a month counter may go: one day after its window ends."""
    start = datetime.strptime(month, "%Y%m").replace(tzinfo=UTC)
    next_month = (start + timedelta(days=32)).replace(day=1)
    return int((next_month + timedelta(days=1)).timestamp())


def day_key(team: str, day: str) -> str:
    return f"{KEY_PREFIX}{{{team}}}:d:{day}"


def month_key(team: str, month: str) -> str:
    return f"{KEY_PREFIX}{{{team}}}:m:{month}"


def limited(team: Team) -> bool:
    q = team.quota
    return q.credits_per_day is not None or q.credits_per_month is not None


def remaining_for(team: Team, day_used: int, month_used: int) -> Remaining:
    q = team.quota
    return Remaining(
        None if q.credits_per_day is None else max(0, q.credits_per_day - day_used),
        None if q.credits_per_month is None else max(0, q.credits_per_month - month_used),
    )


def _refusal(team: Team, amount: int, day_used: int, month_used: int) -> QuotaKind | None:
    """Which window `amount` would overflow, day first; None when it fits."""
    q = team.quota
    if amount <= 0:
        return None
    if q.credits_per_day is not None and day_used + amount > q.credits_per_day:
        return "credits_day"
    if q.credits_per_month is not None and month_used + amount > q.credits_per_month:
        return "credits_month"
    return None


def _unaccounted(team: Team, now: datetime | None) -> Reservation:
    day, month = windows(now)
    return Reservation(team.name, 0, day, month, accounted=False)


def _check_amount(amount: int) -> None:
    if amount < 0:
        raise ValueError(f"credit amounts are never negative, got {amount}")


# ---- Redis ---------------------------------------------------------------

# Check both windows, then take from both, in one step.  A limit of -1 means
# none.  Returns {refused, day_used, month_used}: refused is 0 (reserved),
# 1 (day would overflow) or 2 (month would overflow); on refusal nothing
# changed.  A zero amount only reads, so it never creates a key.
RESERVE_LUA = """
local amount = tonumber(ARGV[1])
local day_limit = tonumber(ARGV[2])
local month_limit = tonumber(ARGV[3])
local d = tonumber(redis.call('get', KEYS[1]) or '0')
local m = tonumber(redis.call('get', KEYS[2]) or '0')
if amount <= 0 then return {0, d, m} end
if day_limit >= 0 and d + amount > day_limit then return {1, d, m} end
if month_limit >= 0 and m + amount > month_limit then return {2, d, m} end
d = redis.call('incrby', KEYS[1], amount)
m = redis.call('incrby', KEYS[2], amount)
redis.call('expireat', KEYS[1], ARGV[4])
redis.call('expireat', KEYS[2], ARGV[5])
return {0, d, m}
"""

# Add `delta` (negative: a refund) to both counters, never below zero.  A
# refund to a counter that is gone (its window long over) is dropped rather
# than creating a key without an expiry; a charge to a missing counter
# creates it with its window's expiry.  Returns the counters afterwards.
ADJUST_LUA = """
local delta = tonumber(ARGV[1])
local out = {}
for i = 1, 2 do
  local cur = redis.call('get', KEYS[i])
  if cur then
    local v = tonumber(cur)
    if delta ~= 0 then
      v = v + delta
      if v < 0 then v = 0 end
      redis.call('set', KEYS[i], v, 'KEEPTTL')
    end
    out[i] = v
  elseif delta > 0 then
    redis.call('set', KEYS[i], delta)
    redis.call('expireat', KEYS[i], ARGV[i + 1])
    out[i] = delta
  else
    out[i] = 0
  end
end
return out
"""


class RedisBudget:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def reserve(
        self, team: Team, amount: int, *, now: datetime | None = None
    ) -> tuple[Reservation, Remaining]:
        _check_amount(amount)
        if not limited(team):
            return _unaccounted(team, now), UNLIMITED
        day, month = windows(now)
        q = team.quota
        refused, d, m = await self._redis.eval(
            RESERVE_LUA,
            2,
            day_key(team.name, day),
            month_key(team.name, month),
            amount,
            -1 if q.credits_per_day is None else q.credits_per_day,
            -1 if q.credits_per_month is None else q.credits_per_month,
            day_expiry(day),
            month_expiry(month),
        )
        left = remaining_for(team, int(d), int(m))
        if refused:
            raise QuotaRefused(team.name, "credits_day" if refused == 1 else "credits_month", left)
        return Reservation(team.name, amount, day, month), left

    async def settle(self, reservation: Reservation, actual: int) -> None:
        delta = max(0, actual) - reservation.amount
        if not reservation.accounted or delta == 0:
            return
        await self._adjust(reservation.team, reservation.day, reservation.month, delta)

    async def charge(self, team: Team, amount: int, *, now: datetime | None = None) -> Remaining:
        _check_amount(amount)
        if not limited(team):
            return UNLIMITED
        day, month = windows(now)
        d, m = await self._adjust(team.name, day, month, amount)
        return remaining_for(team, d, m)

    async def remaining(self, team: Team, *, now: datetime | None = None) -> Remaining:
        if not limited(team):
            return UNLIMITED
        d, m = await self.used(team, now=now)
        return remaining_for(team, d, m)

    async def used(self, team: Team, *, now: datetime | None = None) -> tuple[int, int]:
        if not limited(team):
            return 0, 0
        day, month = windows(now)
        # One MGET is fine under Cluster: the hash tag keeps both keys in one slot.
        d, m = await self._redis.mget([day_key(team.name, day), month_key(team.name, month)])
        return int(d or 0), int(m or 0)

    async def _adjust(self, team: str, day: str, month: str, delta: int) -> tuple[int, int]:
        d, m = await self._redis.eval(
            ADJUST_LUA,
            2,
            day_key(team, day),
            month_key(team, month),
            delta,
            day_expiry(day),
            month_expiry(month),
        )
        return int(d), int(m)


# ---- in-process twin -----------------------------------------------------


class MemoryBudget:
    """Same semantics in one process.

    No method awaits anything, so on one event loop check-and-reserve is as
    atomic as the Lua script is in Redis.
    """

    def __init__(self) -> None:
        # key -> (credits used, epoch second the counter expires)
        self._counters: dict[str, tuple[int, float]] = {}

    async def reserve(
        self, team: Team, amount: int, *, now: datetime | None = None
    ) -> tuple[Reservation, Remaining]:
        _check_amount(amount)
        if not limited(team):
            return _unaccounted(team, now), UNLIMITED
        day, month = windows(now)
        d, m = self._get(day_key(team.name, day)), self._get(month_key(team.name, month))
        kind = _refusal(team, amount, d, m)
        if kind is not None:
            raise QuotaRefused(team.name, kind, remaining_for(team, d, m))
        if amount > 0:
            d, m = self._add(team.name, day, month, amount)
        return Reservation(team.name, amount, day, month), remaining_for(team, d, m)

    async def settle(self, reservation: Reservation, actual: int) -> None:
        delta = max(0, actual) - reservation.amount
        if reservation.accounted and delta != 0:
            self._add(reservation.team, reservation.day, reservation.month, delta)

    async def charge(self, team: Team, amount: int, *, now: datetime | None = None) -> Remaining:
        _check_amount(amount)
        if not limited(team):
            return UNLIMITED
        day, month = windows(now)
        return remaining_for(team, *self._add(team.name, day, month, amount))

    async def remaining(self, team: Team, *, now: datetime | None = None) -> Remaining:
        if not limited(team):
            return UNLIMITED
        return remaining_for(team, *await self.used(team, now=now))

    async def used(self, team: Team, *, now: datetime | None = None) -> tuple[int, int]:
        if not limited(team):
            return 0, 0
        day, month = windows(now)
        return self._get(day_key(team.name, day)), self._get(month_key(team.name, month))

    def _get(self, key: str) -> int:
        item = self._counters.get(key)
        if item is None:
            return 0
        if item[1] <= datetime.now(UTC).timestamp():
            del self._counters[key]
            return 0
        return item[0]

    def _add(self, team: str, day: str, month: str, delta: int) -> tuple[int, int]:
        out = []
        for key, expires in (
            (day_key(team, day), day_expiry(day)),
            (month_key(team, month), month_expiry(month)),
        ):
            current = self._get(key)  # drops an expired counter first
            if key not in self._counters:
                if delta <= 0:  # as in Redis: no counter is created by a refund
                    out.append(0)
                    continue
                self._sweep()
            value = max(0, current + delta)
            self._counters[key] = (value, expires)
            out.append(value)
        return out[0], out[1]

    def _sweep(self) -> None:
        # Run only when a counter is created (a new window or team), so the
        # map stays bounded by teams x live windows at no per-request cost.
        now = datetime.now(UTC).timestamp()
        for key in [k for k, (_, expires) in self._counters.items() if expires <= now]:
            del self._counters[key]


# ---- store-failure policy ------------------------------------------------


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
            return _unaccounted(team, now), UNLIMITED
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
            return _unaccounted(team, now), UNLIMITED
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
