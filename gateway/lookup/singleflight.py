"""Single-flight: N concurrent identical misses make one upstream call.

Two layers.  Inside one process, the first caller for a key becomes the
leader and the others await its future (they get the leader's answer, even an
error, since they asked the same question at the same moment).  Across
processes sharing Redis, the leader also holds a lease on the key: a Redis
lock `cgw:sf:lock:<key>` (SET NX PX) of only a few seconds
(GATEWAY_SINGLEFLIGHT_LEASE_SECONDS), which the leader renews every third of
that while its upstream call runs.  A caller that finds the lock taken waits
for the leader's "done" message on pub/sub channel `cgw:sf:done:<key>` and
then reads the cache, polling every `POLL_SECONDS` as well in case a message
is lost; at each poll it also tries to take the lock, so when a holder dies,
or its release is lost (a Sentinel failover promotes a replica that still
holds the lock), the lease runs out and a waiter takes over within about one
lease period instead of the caller's whole timeout.  Each waiter gives up at
its own deadline.

Exactly one upstream call per key holds as long as the leader can renew:
a leader cut off from Redis for a whole lease may see a second leader start
(it logs `singleflight_lease_lost`), the price of never waiting on the dead.

If Redis is unavailable the lock is skipped (a possible duplicate call is
better than a failed request); in-process coalescing still applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog
from redis.asyncio import Redis

from gateway.errors import UpstreamTimeout
from gateway.store import STORE_ERRORS, StoreGuard
from gateway.tasks import Tasks

log = structlog.get_logger("gateway.lookup.singleflight")

T = TypeVar("T")
C = TypeVar("C")

LOCK_PREFIX = "cgw:sf:lock:"
DONE_PREFIX = "cgw:sf:done:"
POLL_SECONDS = 0.25
# How long a finished leader waits for its renewer's last command.
RENEWER_STOP_SECONDS = 1.0

# Delete the lock only if we still own it (it may have expired and been
# taken by another leader).
RELEASE_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""

# Extend the lease only while it is still ours.
RENEW_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class SingleFlight(Generic[T, C]):
    def __init__(self, redis: Redis | None, guard: StoreGuard, lease: float = 3.0) -> None:
        self._redis = redis
        self._guard = guard
        self._lease_ms = max(100, int(lease * 1000))
        if redis is not None:
            self._release_script = redis.register_script(RELEASE_LUA)
            self._renew_script = redis.register_script(RENEW_LUA)
        self._flights: dict[str, asyncio.Future[T]] = {}
        self._events: dict[str, asyncio.Event] = {}

    # ---- lifecycle (pub/sub listener) -------------------------------------

    def start(self, tasks: Tasks) -> None:
        if self._redis is not None:
            tasks.spawn(self._listen(), "singleflight-listener")

    async def _listen(self) -> None:
        assert self._redis is not None
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.psubscribe(DONE_PREFIX + "*")
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message and message.get("type") == "pmessage":
                        self._wake(message["channel"])
            except STORE_ERRORS:  # reconnect: polling covers the gap meanwhile
                await asyncio.sleep(1.0)
            finally:
                # Bounded: closing a pub/sub connection cancelled mid-read can
                # wait on its lock for good, and shutdown must not hang on it.
                with contextlib.suppress(*STORE_ERRORS, RuntimeError):
                    async with asyncio.timeout(1.0):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _wake(self, channel: bytes | str) -> None:
        name = channel.decode("utf-8", "replace") if isinstance(channel, bytes) else channel
        event = self._events.get(name[len(DONE_PREFIX) :])
        if event is not None:
            event.set()

    # ---- the flight ---------------------------------------------------------

    async def run(
        self,
        key: str,
        fetch: Callable[[], Awaitable[T]],
        recheck: Callable[[], Awaitable[C | None]] | None,
        *,
        timeout: float,
    ) -> tuple[T | C, bool]:
        """The answer for `key` and whether it came from someone else's call."""
        flight = self._flights.get(key)
        if flight is not None:
            try:
                return await asyncio.wait_for(asyncio.shield(flight), timeout), True
            except TimeoutError:
                raise _gave_up() from None
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            result, coalesced = await self._lead_or_wait(key, fetch, recheck, timeout)
        except BaseException as exc:
            if not flight.done():
                flight.set_exception(exc)
                flight.exception()  # mark retrieved: waiters may be none
            raise
        finally:
            self._flights.pop(key, None)
        if not flight.done():
            flight.set_result(result)  # type: ignore[arg-type]
        return result, coalesced

    async def _lead_or_wait(
        self,
        key: str,
        fetch: Callable[[], Awaitable[T]],
        recheck: Callable[[], Awaitable[C | None]] | None,
        timeout: float,
    ) -> tuple[T | C, bool]:
        if self._redis is None:
            return await fetch(), False
        deadline = time.monotonic() + timeout
        event = self._events.setdefault(key, asyncio.Event())
        try:
            while True:
                token = await self._try_lock(key)
                if token is not None:
                    return await self._with_lock(key, token, fetch, recheck)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _gave_up()
                event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(POLL_SECONDS, left))
                cached = await recheck() if recheck is not None else None
                if cached is not None:
                    return cached, True
        finally:
            self._events.pop(key, None)

    async def _with_lock(
        self,
        key: str,
        token: str,
        fetch: Callable[[], Awaitable[T]],
        recheck: Callable[[], Awaitable[C | None]] | None,
    ) -> tuple[T | C, bool]:
        # Between our miss and the lock, a leader elsewhere may have
        # finished: read again before paying.
        cached = await recheck() if recheck is not None and token else None
        if cached is not None:
            await self._release(key, token)
            return cached, True
        return await self._lead(key, token, fetch), False

    async def _lead(self, key: str, token: str, fetch: Callable[[], Awaitable[T]]) -> T:
        """Run `fetch` holding the lease, renewing it until the answer is in."""
        if not token:  # Redis unusable: lead without a lease
            return await fetch()
        done = asyncio.Event()
        renewer = asyncio.create_task(self._renew(key, token, done))
        try:
            return await fetch()
        finally:
            # Stopped by an event, not by cancel(): redis-py can lose a
            # cancellation that lands while a command is in flight, and
            # awaiting such a task would hang the leader for good.
            done.set()
            await asyncio.wait({renewer}, timeout=RENEWER_STOP_SECONDS)
            if not renewer.done():
                renewer.cancel()
            await self._release(key, token)
            await self._announce(key)

    async def _renew(self, key: str, token: str, done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self._lease_ms / 3000)
                return
            try:
                kept = await self._renew_script(
                    keys=[LOCK_PREFIX + key], args=[token, self._lease_ms]
                )
            except STORE_ERRORS as exc:  # try again next period; the lease may lapse
                self._guard.failed(exc)
                continue
            if not kept:
                log.warning("singleflight_lease_lost", key=key)
                return

    async def _try_lock(self, key: str) -> str | None:
        """A lock token; "" when Redis is unusable (lead without a lock); None if taken."""
        if self._redis is None or not self._guard.available:
            return ""
        token = secrets.token_hex(8)
        try:
            acquired = await self._redis.set(LOCK_PREFIX + key, token, nx=True, px=self._lease_ms)
        except STORE_ERRORS as exc:  # degrade: lead without the lock
            self._guard.failed(exc)
            return ""
        return token if acquired else None

    async def _release(self, key: str, token: str) -> None:
        if not token or self._redis is None:
            return
        try:
            await self._release_script(keys=[LOCK_PREFIX + key], args=[token])
        except STORE_ERRORS as exc:  # the lease lapses by itself
            self._guard.failed(exc)

    async def _announce(self, key: str) -> None:
        if self._redis is None or not self._guard.available:
            return
        try:
            await self._redis.publish(DONE_PREFIX + key, b"1")
        except STORE_ERRORS as exc:  # waiters poll as well
            self._guard.failed(exc)


def _gave_up() -> UpstreamTimeout:
    return UpstreamTimeout(
        "An identical lookup is still in progress and did not finish within your timeout"
    )
