"""Single-flight: N concurrent identical misses make one upstream call.

Two layers.  Inside one process, the first caller for a key leads and the
others await its future (they get the leader's outcome, even an error, since
they asked the same question at the same moment).  Across processes sharing
Redis, a caller looks at the key (`gateway.lookup.flight`: one script reads
the cache entry and the queued marker and, finding neither, takes the lease);
the leader holds a lease of only a few seconds
(GATEWAY_SINGLEFLIGHT_LEASE_SECONDS), renewed every third of it while its
upstream call runs, and finishes with one script that stores the answer,
releases the lease and wakes the waiters on pub/sub channel
`cgw:sf:done:<key>`.  A waiter looks again when woken, or every
`POLL_SECONDS` in case a message is lost: it then finds the answer, or the
lease free (a holder that died, or whose release was lost in a Sentinel
failover, stops renewing) and takes over within about one lease period.
Each waiter gives up at its own deadline.

Exactly one upstream call per key holds as long as the leader can renew:
a leader cut off from Redis for a whole lease may see a second leader start
(it logs `singleflight_lease_lost`), the price of never waiting on the dead.
If Redis is unavailable the lease is skipped (a possible duplicate call is
better than a failed request); in-process coalescing still applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import structlog
from redis.asyncio import Redis

from gateway.errors import UpstreamTimeout
from gateway.lookup.cache import DROP_CHANNEL
from gateway.lookup.entries import CachedAnswer
from gateway.lookup.flight import DONE_PREFIX, FlightStore
from gateway.store import STORE_ERRORS, text
from gateway.tasks import Tasks, raise_if_cancelled

log = structlog.get_logger("gateway.lookup.singleflight")

T = TypeVar("T")

POLL_SECONDS = 0.25
# How long a finished leader waits for its renewer's last command.
RENEWER_STOP_SECONDS = 1.0

FlownKind = Literal["hit", "queued", "led", "joined"]


@dataclass(frozen=True, slots=True)
class Flown(Generic[T]):
    """How a flight ended: a cached entry (hit), a queued lookup's id, or an answer."""

    kind: FlownKind
    answer: T | CachedAnswer | None = None
    qid: str = ""


# What a leader's fetch gives: the answer, the entry to store (None: nothing
# to cache) and the entry's time to live in seconds.
Fetched = tuple[T, CachedAnswer | None, float]


class SingleFlight(Generic[T]):
    def __init__(
        self,
        store: FlightStore,
        redis: Redis | None,
        lease: float = 3.0,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._redis = redis  # for the pub/sub listener only
        # Told the keys whose entries another replica replaced or removed.
        self._on_drop = on_drop
        self._renew_seconds = max(0.1, lease) / 3
        self._flights: dict[str, asyncio.Future[Flown[T]]] = {}
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
                await pubsub.subscribe(DROP_CHANNEL)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    raise_if_cancelled()  # a cancel landing with the read's timeout is lost
                    if not message:
                        continue
                    if message.get("type") == "pmessage":
                        self._wake(message["channel"])
                    elif message.get("type") == "message" and self._on_drop is not None:
                        self._on_drop(text(message["data"]))
            except STORE_ERRORS:  # reconnect: polling covers the gap meanwhile
                raise_if_cancelled()
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
        self, key: str, fetch: Callable[[], Awaitable[Fetched[T]]], *, read: bool, timeout: float
    ) -> Flown[T]:
        """How the lookup of `key` ended; `read=False` skips the cache (a refresh)."""
        flight = self._flights.get(key)
        if flight is not None:
            try:
                flown = await asyncio.wait_for(asyncio.shield(flight), timeout)
            except TimeoutError:
                raise _gave_up() from None
            return flown if flown.kind == "queued" else Flown("joined", flown.answer)
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            flown = await self._look_lead_or_wait(key, fetch, read, timeout)
        except BaseException as exc:
            if not flight.done():
                flight.set_exception(exc)
                flight.exception()  # mark retrieved: waiters may be none
            raise
        finally:
            self._flights.pop(key, None)
        if not flight.done():
            flight.set_result(flown)
        return flown

    async def _look_lead_or_wait(
        self, key: str, fetch: Callable[[], Awaitable[Fetched[T]]], read: bool, timeout: float
    ) -> Flown[T]:
        deadline = time.monotonic() + timeout
        event = self._events.setdefault(key, asyncio.Event())
        waited = False
        try:
            while True:
                look = await self._store.look(key, read=read)
                if look.kind == "hit":
                    return Flown("joined" if waited else "hit", look.answer)
                if look.kind == "queued":
                    return Flown("queued", qid=look.qid)
                if look.kind == "lead":
                    return Flown("led", await self._lead(key, look.token, fetch, not read))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _gave_up()
                event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(POLL_SECONDS, left))
                waited = True
        finally:
            self._events.pop(key, None)

    async def _lead(
        self, key: str, token: str, fetch: Callable[[], Awaitable[Fetched[T]]], replacing: bool
    ) -> T:
        """Run `fetch` holding the lease, renewing it; then store, release, wake: once.

        `replacing` (a refresh) also tells the replicas to drop their copies.
        """
        entry: CachedAnswer | None = None
        ttl = 0.0
        renewal = _Renewal(self._store, key, token, self._renew_seconds) if token else None
        try:
            answer, entry, ttl = await fetch()
            return answer
        finally:
            if renewal is not None:
                await renewal.stop()
            await self._store.finish(key, token, entry, ttl, replaced=replacing)


class _Renewal:
    """Keeps a leader's lease alive while its upstream call runs.

    Most calls end well inside the first renewal period, so the renewing task
    is only started when that period passes (a timer until then: no task, no
    wake-up for a fast call).
    """

    def __init__(self, store: FlightStore, key: str, token: str, period: float) -> None:
        self._store, self._key, self._token, self._period = store, key, token, period
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(period, self._start)

    def _start(self) -> None:
        self._task = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        while not self._done.is_set():
            if not await self._store.renew(self._key, self._token):
                log.warning("singleflight_lease_lost", key=self._key)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self._period)
                return

    async def stop(self) -> None:
        self._timer.cancel()
        # Stopped by an event, not by cancel(): redis-py can lose a
        # cancellation that lands while a command is in flight, and awaiting
        # such a task would hang the leader for good.
        self._done.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=RENEWER_STOP_SECONDS)
            if not self._task.done():
                self._task.cancel()


def _gave_up() -> UpstreamTimeout:
    return UpstreamTimeout(
        "An identical lookup is still in progress and did not finish within your timeout"
    )
