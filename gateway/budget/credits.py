"""Credit budgets: the reservation, the windows and the in-process twin of the store.

A lookup reserves its worst-case price before the upstream call and settles
to the real charge afterwards.  Both windows (UTC day `YYYYMMDD`, UTC month
`YYYYMM`) are checked and reserved in one step, so concurrent requests can
never overshoot a limit: either both counters move or neither does.  A
reservation remembers its windows, so a settle that lands after midnight
adjusts the window the credits were reserved in.

Keys are `cgw:quota:{<team>}:d:<YYYYMMDD>` and `cgw:quota:{<team>}:m:<YYYYMM>`:
the hash tag puts a team's two counters in one Redis Cluster slot (the
script touches both).  Each counter expires one day after its window ends.

Teams without any limit are not counted at all (no store round trip on
their path); their spend is visible in `clearout_gateway_credits_spent_total`.
`RedisBudget` (`gateway.budget.credits_redis`) is the shared store,
`MemoryBudget` here its single-process twin, and `GuardedBudget`
(`gateway.budget.credits_guard`) wraps either with the store-failure policy.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from gateway.teams import Team

KEY_PREFIX = "cgw:quota:"

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


def windows(now: datetime | None = None) -> tuple[str, str]:
    """The UTC day and month window names for `now` (naive means UTC)."""
    if now is None:
        return _current_windows(int(time.time()))
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(UTC)
    return now.strftime("%Y%m%d"), now.strftime("%Y%m")


@functools.lru_cache(maxsize=1)
def _current_windows(second: int) -> tuple[str, str]:
    # Every paid lookup names its windows; formatting them once a second is enough.
    return windows(datetime.fromtimestamp(second, UTC))


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


def refusal(team: Team, amount: int, day_used: int, month_used: int) -> QuotaKind | None:
    """Which window `amount` would overflow, day first; None when it fits."""
    q = team.quota
    if amount <= 0:
        return None
    if q.credits_per_day is not None and day_used + amount > q.credits_per_day:
        return "credits_day"
    if q.credits_per_month is not None and month_used + amount > q.credits_per_month:
        return "credits_month"
    return None


def unaccounted(team: Team, now: datetime | None) -> Reservation:
    day, month = windows(now)
    return Reservation(team.name, 0, day, month, accounted=False)


def check_amount(amount: int) -> None:
    if amount < 0:
        raise ValueError(f"credit amounts are never negative, got {amount}")


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
        check_amount(amount)
        if not limited(team):
            return unaccounted(team, now), UNLIMITED
        day, month = windows(now)
        d, m = self._get(day_key(team.name, day)), self._get(month_key(team.name, month))
        kind = refusal(team, amount, d, m)
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
        check_amount(amount)
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
