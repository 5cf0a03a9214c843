"""Credit budgets in Redis: check-and-reserve and adjust as Lua scripts, exact across replicas.

`RESERVE_LUA` checks both windows and takes from both in one step, so no
number of replicas can overshoot a limit; `ADJUST_LUA` settles, refunds and
charges, never below zero.  Both touch a team's two counters, which share a
hash tag (one Cluster slot).  Scripts are registered once (EVALSHA).
"""

from __future__ import annotations

from datetime import datetime

from redis.asyncio import Redis

from gateway.budget.credits import (
    UNLIMITED,
    QuotaRefused,
    Remaining,
    Reservation,
    check_amount,
    day_expiry,
    day_key,
    limited,
    month_expiry,
    month_key,
    remaining_for,
    unaccounted,
    windows,
)
from gateway.store import Script
from gateway.teams import Team

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
        self._reserve = Script(redis, RESERVE_LUA, idempotent=False)
        self._adjust_script = Script(redis, ADJUST_LUA, idempotent=False)

    async def reserve(
        self, team: Team, amount: int, *, now: datetime | None = None
    ) -> tuple[Reservation, Remaining]:
        check_amount(amount)
        if not limited(team):
            return unaccounted(team, now), UNLIMITED
        day, month = windows(now)
        q = team.quota
        refused, d, m = await self._reserve(
            keys=[day_key(team.name, day), month_key(team.name, month)],
            args=[
                amount,
                -1 if q.credits_per_day is None else q.credits_per_day,
                -1 if q.credits_per_month is None else q.credits_per_month,
                day_expiry(day),
                month_expiry(month),
            ],
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
        check_amount(amount)
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
        d, m = await self._adjust_script(
            keys=[day_key(team, day), month_key(team, month)],
            args=[delta, day_expiry(day), month_expiry(month)],
        )
        return int(d), int(m)
