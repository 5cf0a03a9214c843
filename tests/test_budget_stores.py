"""Budget stores against a real Redis and their in-memory twins.

Credit quotas (exact under concurrency, windows, settlement, outage policy),
the per-team token bucket, the upstream governor (rate bound, fairness across
teams, deadlines, upstream resets shared between replicas) and ownership of
queue and list ids.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.budget.credits import Budget, MemoryBudget, QuotaRefused, Remaining, Reservation
from gateway.budget.credits_guard import GuardedBudget
from gateway.budget.credits_redis import RedisBudget
from gateway.budget.governor import BLOCK_KEY, Governor, GovernorBusy, governor_shape
from gateway.budget.ownership import GuardedOwnership, MemoryOwnership, Ownership, RedisOwnership
from gateway.budget.rates import (
    GuardedRateLimiter,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    _refill_and_take,
)
from gateway.errors import StoreUnavailable, UpstreamBusy
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.store import open_redis
from gateway.teams import Quota, Team
from tests.servers import RedisServer

BACKENDS = ["redis", "memory"]

RedisFactory = Callable[[], Redis]


@pytest.fixture
async def make_redis(request: pytest.FixtureRequest) -> AsyncIterator[RedisFactory]:
    """Independent clients (as separate replicas would hold) on the flushed test Redis."""
    clients: list[Redis] = []

    def factory() -> Redis:
        url = request.getfixturevalue("redis_url")
        # A generous timeout: these tests are about atomicity, and a loaded CI
        # machine can take longer than production's 0.25 s to answer a burst.
        client = open_redis(Settings(redis_url=url, redis_timeout=5.0))
        assert client is not None
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
async def outage_redis(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, Redis]]:
    """A private redis-server a test may stop and start, and a client of it."""
    server = RedisServer(tmp_path)
    server.start()
    client = open_redis(Settings(redis_url=server.url))
    assert client is not None
    yield server, client
    await client.aclose()
    server.stop()


def team(name: str = "alpha", **quota: int | None) -> Team:
    return Team(name, (), Quota(**quota))  # type: ignore[arg-type]


def store_errors(metrics: Metrics, store: str) -> float:
    value = metrics.registry.get_sample_value(
        "clearout_gateway_store_errors_total", {"store": store}
    )
    return value or 0.0


def budget_pair(backend: str, make_redis: RedisFactory) -> tuple[Budget, Budget]:
    """Two handles on one budget: two replicas for Redis, one instance twice in memory."""
    if backend == "redis":
        return RedisBudget(make_redis()), RedisBudget(make_redis())
    memory = MemoryBudget()
    return memory, memory


# ---- credit quotas -----------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_concurrent_reserves_never_overshoot(backend: str, make_redis: RedisFactory) -> None:
    """200 concurrent reserves of 4 against 200/day: exactly 50 pass, counter exactly 200."""
    first, second = budget_pair(backend, make_redis)
    alpha = team(credits_per_day=200)
    results = await asyncio.gather(
        *((first if i % 2 else second).reserve(alpha, 4) for i in range(200)),
        return_exceptions=True,
    )
    granted = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, QuotaRefused)]
    assert len(granted) == 50
    assert len(refused) == 150
    assert {r.kind for r in refused} == {"credits_day"}
    # Each grant saw a distinct state: the check and the take were one step.
    assert sorted(left.day for _, left in granted if left.day is not None) == list(range(0, 200, 4))
    assert all(left.month is None for _, left in granted)
    assert await first.used(alpha) == (200, 200)
    assert await second.remaining(alpha) == Remaining(0, None)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_month_limit_and_day_first(backend: str, make_redis: RedisFactory) -> None:
    """A month overflow is refused as credits_month; when both overflow, day is named."""
    budget, _ = budget_pair(backend, make_redis)
    alpha = team(credits_per_day=100, credits_per_month=10)
    reservation, left = await budget.reserve(alpha, 8)
    assert (reservation.amount, reservation.accounted, left) == (8, True, Remaining(92, 2))
    with pytest.raises(QuotaRefused) as refused:
        await budget.reserve(alpha, 4)
    assert refused.value.kind == "credits_month"
    assert refused.value.remaining == Remaining(92, 2)
    assert await budget.used(alpha) == (8, 8)  # the refusal reserved nothing

    beta = team("beta", credits_per_day=5, credits_per_month=5)
    with pytest.raises(QuotaRefused) as refused:
        await budget.reserve(beta, 6)
    assert refused.value.kind == "credits_day"
    # Zero costs nothing and is never refused, even with nothing left.
    await budget.reserve(beta, 5)
    _, left = await budget.reserve(beta, 0)
    assert left == Remaining(0, 0)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_settle_refunds_charges_extra_and_never_goes_negative(
    backend: str, make_redis: RedisFactory
) -> None:
    """Settle moves both windows by actual - reserved, without refusing or going below 0."""
    budget, _ = budget_pair(backend, make_redis)
    alpha = team(credits_per_day=8, credits_per_month=100)
    not_found, _ = await budget.reserve(alpha, 4)
    await budget.settle(not_found, 0)
    assert await budget.used(alpha) == (0, 0)

    charged_more, _ = await budget.reserve(alpha, 4)
    await budget.settle(charged_more, 10)  # upstream charged above the reserved maximum
    assert await budget.used(alpha) == (10, 10)
    assert await budget.remaining(alpha) == Remaining(0, 90)
    with pytest.raises(QuotaRefused):
        await budget.reserve(alpha, 1)

    # A refund larger than the counter (say, it was reset) stops at zero.
    day, month = charged_more.day, charged_more.month
    await budget.settle(Reservation("alpha", 25, day, month), 0)
    assert await budget.used(alpha) == (0, 0)

    assert await budget.charge(alpha, 3) == Remaining(5, 97)  # unconditional add
    assert await budget.charge(alpha, 9) == Remaining(0, 88)  # over the limit: still added
    assert await budget.used(alpha) == (12, 12)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_settle_after_midnight_hits_the_reserving_window(
    backend: str, make_redis: RedisFactory
) -> None:
    """A reservation made before midnight settles into that day, not the new one."""
    budget, _ = budget_pair(backend, make_redis)
    alpha = team(credits_per_day=100, credits_per_month=1000)
    late = datetime.now(UTC).replace(hour=23, minute=59, second=59)
    early = late + timedelta(seconds=2)
    before, _ = await budget.reserve(alpha, 4, now=late)
    after, _ = await budget.reserve(alpha, 4, now=early)
    assert (before.day, after.day) == (late.strftime("%Y%m%d"), early.strftime("%Y%m%d"))
    await budget.settle(before, 1)
    await budget.settle(after, 4)
    same_month = before.month == after.month
    assert await budget.used(alpha, now=late) == (1, 5 if same_month else 1)
    assert await budget.used(alpha, now=early) == (4, 5 if same_month else 4)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_unlimited_team_is_not_counted(backend: str, make_redis: RedisFactory) -> None:
    budget, _ = budget_pair(backend, make_redis)
    gamma = team("gamma")
    reservation, left = await budget.reserve(gamma, 4)
    assert (reservation.accounted, reservation.amount, left) == (False, 0, Remaining(None, None))
    await budget.settle(reservation, 4)
    assert await budget.charge(gamma, 4) == Remaining(None, None)
    assert await budget.used(gamma) == (0, 0)


def test_reservation_round_trips_as_text() -> None:
    reservation = Reservation("alpha", 4, "20250131", "202501")
    assert Reservation.loads(reservation.dumps()) == reservation
    unaccounted = Reservation("beta", 0, "20250201", "202502", accounted=False)
    assert Reservation.loads(unaccounted.dumps().encode()) == unaccounted


async def test_guarded_budget_policies_during_an_outage(
    outage_redis: tuple[RedisServer, Redis],
) -> None:
    """deny refuses promptly, allow passes unaccounted; both recover after the back-off."""
    server, client = outage_redis
    metrics = Metrics()
    deny = GuardedBudget(RedisBudget(client), metrics, "deny")
    allow = GuardedBudget(RedisBudget(client), metrics, "allow")
    alpha = team(credits_per_day=100)

    held, left = await deny.reserve(alpha, 4)
    assert left == Remaining(96, None)
    gauge = {"team": "alpha", "window": "day"}
    assert (
        metrics.registry.get_sample_value("clearout_gateway_quota_remaining_credits", gauge) == 96
    )

    server.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="refused to protect the credit budget"):
        await deny.reserve(alpha, 4)
    with pytest.raises(StoreUnavailable):  # backing off: answered without trying Redis
        await deny.reserve(alpha, 4)
    assert time.monotonic() - started < 1.0
    assert store_errors(metrics, "quota") == 1

    reservation, left = await allow.reserve(alpha, 4)
    assert (reservation.accounted, reservation.amount) == (False, 0)
    assert left == Remaining(None, None)
    # Nothing at stake: zero-credit requests and unlimited teams pass under deny too.
    assert (await deny.reserve(alpha, 0))[0].accounted is False
    assert (await deny.reserve(team("gamma"), 4))[0].accounted is False

    await allow.settle(reservation, 4)  # unaccounted: nothing to do
    await deny.settle(held, 0)  # lost, logged, never raised
    assert await deny.charge(alpha, 2) == Remaining(None, None)
    with pytest.raises(StoreUnavailable):
        await deny.remaining(alpha)

    server.start()  # a fresh, empty Redis
    await asyncio.sleep(1.1)  # the back-off after the last failure
    reservation, left = await deny.reserve(alpha, 4)
    assert reservation.accounted
    assert left == Remaining(96, None)
    reservation, _ = await allow.reserve(alpha, 4)
    assert reservation.accounted
    assert await deny.used(alpha) == (8, 8)


# ---- per-team token bucket ---------------------------------------------------


def limiter_pair(backend: str, make_redis: RedisFactory) -> tuple[RateLimiter, RateLimiter]:
    if backend == "redis":
        return RedisRateLimiter(make_redis()), RedisRateLimiter(make_redis())
    memory = MemoryRateLimiter()
    return memory, memory


@pytest.mark.parametrize("backend", BACKENDS)
async def test_token_bucket_burst_refusal_and_refill(
    backend: str, make_redis: RedisFactory
) -> None:
    """A burst of `rate` passes, the next waits about 1/rate, and tokens come back."""
    first, second = limiter_pair(backend, make_redis)
    for _ in range(3):
        assert await first.acquire("alpha", 5, 5) == 0.0
    for _ in range(2):  # the other replica draws on the same bucket
        assert await second.acquire("alpha", 5, 5) == 0.0
    retry_after = await second.acquire("alpha", 5, 5)
    assert 0.0 < retry_after <= 0.2 + 1e-6
    assert await first.acquire("beta", 5, 5) == 0.0  # teams do not share
    await asyncio.sleep(0.25)
    assert await first.acquire("alpha", 5, 5) == 0.0
    assert await second.acquire("alpha", 5, 5) > 0.0

    # Below one request per second the burst is still one request.
    assert await first.acquire("slow", 0.5, 0.5) == 0.0
    assert 1.9 <= await first.acquire("slow", 0.5, 0.5) <= 2.0


async def test_rate_limiter_allows_when_redis_is_down(
    outage_redis: tuple[RedisServer, Redis],
) -> None:
    server, client = outage_redis
    metrics = Metrics()
    limiter = GuardedRateLimiter(RedisRateLimiter(client), metrics)
    assert await limiter.acquire("alpha", 1, 1) == 0.0
    assert await limiter.acquire("alpha", 1, 1) > 0.0
    server.stop()
    for _ in range(5):
        assert await limiter.acquire("alpha", 1, 1) == 0.0
    assert store_errors(metrics, "ratelimit") == 1


# ---- upstream governor -------------------------------------------------------


@pytest.mark.parametrize("rpm", [1, 2, 59, 60, 61, 120, 1000, 6000])
def test_governor_shape_admits_at_most_rpm_in_any_minute(rpm: int) -> None:
    """Greedy callers against the bucket: no 60 s window ever holds more than rpm."""
    capacity, rate = governor_shape(rpm)
    assert capacity == max(1, rpm // 60)
    tokens, now, last = float(capacity), 0.0, 0.0
    times: list[float] = []
    while len(times) < 3 * rpm + capacity:
        tokens, wait = _refill_and_take(tokens, now - last, rate, capacity)
        last = now
        if wait == 0.0:
            times.append(now)
        else:
            now += max(wait, 1e-9)  # float rounding can leave a token a hair short
    # Windows [t, t + 60), with a hair of slack for float rounding.
    worst, first = 0, 0
    for last_in, t in enumerate(times):
        while times[first] <= t - 60 + 1e-6:
            first += 1
        worst = max(worst, last_in - first + 1)
    assert worst == rpm


def governors(backend: str, make_redis: RedisFactory, rpm: int | None = 120) -> list[Governor]:
    metrics = Metrics()
    if backend == "redis":
        return [Governor(rpm, make_redis(), metrics), Governor(rpm, make_redis(), metrics)]
    return [Governor(rpm, None, metrics)]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_governor_bound_and_fairness_across_teams(
    backend: str, make_redis: RedisFactory
) -> None:
    """Team A floods 40 calls, team B asks 3 times: the rate bound holds, B is not starved."""
    gov = governors(backend, make_redis)[0]
    capacity, rate = gov.capacity, gov.rate
    assert (capacity, rate) == (2, 119 / 60)
    admitted: list[tuple[str, float]] = []
    busy: list[UpstreamBusy] = []
    start = time.monotonic()

    async def ask(who: str, deadline: float) -> bool:
        try:
            await gov.acquire(who, deadline)
        except UpstreamBusy as exc:
            busy.append(exc)
            return False
        admitted.append((who, time.monotonic()))
        return True

    async def team_b() -> list[float]:
        waits = []
        for at in (0.3, 1.2, 2.1):
            await asyncio.sleep(start + at - time.monotonic())
            asked = time.monotonic()
            assert await ask("b", asked + 2.0)
            waits.append(time.monotonic() - asked)
        return waits

    flood = [asyncio.create_task(ask("a", start + 3.0)) for _ in range(40)]
    b_waits = await team_b()
    a_results = await asyncio.gather(*flood)
    await gov.aclose()

    # B gets the next token after asking: well within two token intervals.
    assert max(b_waits) <= 2 / rate, b_waits
    # A got the rest of the budget and the others were told when to come back.
    assert 3 <= sum(a_results) < 40
    assert all(int(exc.headers["Retry-After"]) >= 1 for exc in busy)
    assert len(busy) == 40 - sum(a_results)
    # The documented bound: any k consecutive admissions span at least
    # (k - C) / r seconds (n < C + r*d), with 50 ms for timing jitter.
    times = sorted(t for _, t in admitted)
    assert len(times) >= 6  # C at once, then about r per second: none wasted (7 ideally)
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= capacity + rate * (times[j] - times[i] + 0.05), (i, j, times)
    per_second = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    assert per_second <= capacity + rate * 1.05


@pytest.mark.parametrize("backend", BACKENDS)
async def test_governor_deadline_too_short(backend: str, make_redis: RedisFactory) -> None:
    """Past the burst, a caller whose deadline comes before the next token is refused."""
    gov = governors(backend, make_redis)[0]
    for _ in range(gov.capacity):
        await gov.acquire("a", time.monotonic() + 0.1)
    asked = time.monotonic()
    with pytest.raises(GovernorBusy) as refused:
        await gov.acquire("a", asked + 0.1)
    assert 0.09 <= time.monotonic() - asked < 0.4
    assert isinstance(refused.value, UpstreamBusy)
    assert refused.value.headers["Retry-After"] == str(refused.value.retry_after)
    assert refused.value.retry_after >= 1
    with pytest.raises(UpstreamBusy):  # a deadline already past: at once
        await gov.acquire("a", time.monotonic())
    await gov.aclose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_governor_honours_upstream_reset(backend: str, make_redis: RedisFactory) -> None:
    """remaining=0 stops admissions until reset, on this replica and (via Redis) the others."""
    replicas = governors(backend, make_redis)
    seen, *others = replicas
    reset = time.time() + 1.0
    seen.observe(remaining=0, reset_epoch=reset)
    asked = time.monotonic()
    with pytest.raises(UpstreamBusy) as refused:
        await seen.acquire("a", asked + 0.5)
    assert time.monotonic() - asked < 0.1  # known to end after the deadline: no waiting
    assert refused.value.headers["Retry-After"] == "1"

    if others:
        probe = make_redis()
        for _ in range(100):  # the block is shared in the background
            if await probe.get(BLOCK_KEY) is not None:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the block never reached Redis")

    for gov in replicas:
        await gov.acquire("b", time.monotonic() + 3.0)
        assert time.time() >= reset - 0.01
    for gov in replicas:
        await gov.aclose()


async def test_governor_unlimited_is_a_no_op() -> None:
    gov = Governor(None, None, Metrics())
    gov.observe(remaining=0, reset_epoch=time.time() + 60)
    for _ in range(1000):
        await gov.acquire("a", time.monotonic())  # even a spent deadline
    await gov.aclose()


async def test_governor_falls_back_to_a_local_bucket(
    outage_redis: tuple[RedisServer, Redis],
) -> None:
    """With Redis down the governor keeps pacing calls on its own, and counts the failure."""
    server, client = outage_redis
    metrics = Metrics()
    gov = Governor(120, client, metrics)
    server.stop()
    started = time.monotonic()
    for _ in range(3):
        await gov.acquire("a", time.monotonic() + 2.0)
    assert 0.4 <= time.monotonic() - started < 1.0  # a burst of 2, then one token interval
    assert store_errors(metrics, "ratelimit") >= 1
    await gov.aclose()


# ---- ownership ---------------------------------------------------------------


def ownership(backend: str, make_redis: RedisFactory) -> Ownership:
    return RedisOwnership(make_redis()) if backend == "redis" else MemoryOwnership()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_ownership_record_owner_forget(backend: str, make_redis: RedisFactory) -> None:
    owners = ownership(backend, make_redis)
    await owners.record("queue", "q-1", "alpha")
    await owners.record("list", "q-1", "beta")  # kinds are separate namespaces
    assert await owners.owner("queue", "q-1") == "alpha"
    assert await owners.owner("list", "q-1") == "beta"
    assert await owners.owner("queue", "q-2") is None
    await owners.forget("queue", "q-1")
    assert await owners.owner("queue", "q-1") is None
    assert await owners.owner("list", "q-1") == "beta"


async def test_ownership_records_expire(make_redis: RedisFactory) -> None:
    client = make_redis()
    await RedisOwnership(client, ttl=1234).record("list", "l-1", "alpha")
    assert 1230 <= await client.ttl("cgw:own:list:l-1") <= 1234
    memory = MemoryOwnership(ttl=0)
    await memory.record("list", "l-1", "alpha")
    assert await memory.owner("list", "l-1") is None


async def test_memory_ownership_is_bounded() -> None:
    owners = MemoryOwnership(max_entries=2)
    for i in range(3):
        await owners.record("list", f"l-{i}", "alpha")
    assert await owners.owner("list", "l-0") is None
    assert await owners.owner("list", "l-2") == "alpha"


async def test_guarded_ownership_fails_closed(outage_redis: tuple[RedisServer, Redis]) -> None:
    """Redis down: checks raise StoreUnavailable, records are counted, not raised."""
    server, client = outage_redis
    metrics = Metrics()
    owners = GuardedOwnership(RedisOwnership(client), metrics)
    await owners.record("queue", "q-1", "alpha")
    assert await owners.owner("queue", "q-1") == "alpha"
    server.stop()
    with pytest.raises(StoreUnavailable, match="cannot confirm"):
        await owners.owner("queue", "q-1")
    with pytest.raises(StoreUnavailable):  # backing off: at once
        await owners.owner("queue", "q-1")
    await owners.record("queue", "q-2", "alpha")
    await owners.forget("queue", "q-1")
    assert store_errors(metrics, "ownership") == 3
