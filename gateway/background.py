"""Background work each replica runs: the queue poller and the credit-balance poller.

Both are best-effort loops: a failure is counted and logged, never fatal, and
the loop goes on at its interval.  With Redis, a per-queue-id lock makes sure
one replica (not all of them) polls a given queued lookup in each interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from gateway.appkeys import FINDER, METRICS, REDIS, SETTINGS, SETTLER, UPSTREAM
from gateway.pricing import success_data

log = structlog.get_logger("gateway.background")

POLL_LOCK_PREFIX = "cgw:qpoll:"


async def poll_queues_once(app: web.Application) -> int:
    """Ask upstream about pending queued lookups; returns how many were polled."""
    finder, upstream, redis = app[FINDER], app[UPSTREAM], app[REDIS]
    interval = app[SETTINGS].queue_poll_interval
    polled = 0
    for qid in await finder.queued.pending(50):
        if await finder.expire_queued(qid):
            continue
        if redis is not None:
            mine = await redis.set(POLL_LOCK_PREFIX + qid, b"1", nx=True, px=int(interval * 900))
            if not mine:
                continue
        answer = await upstream.call(
            "queue_status", "GET", "/email_finder/instant/queue_status",
            params={"qid": qid}, timeout=app[SETTINGS].upstream_timeout,
        )  # fmt: skip
        polled += 1
        await finder.complete_queued(qid, answer)
    return polled


async def poll_credits_once(app: web.Application) -> None:
    metrics = app[METRICS]
    try:
        answer = await app[UPSTREAM].call(
            "getcredits", "GET", "/email_verify/getcredits", timeout=app[SETTINGS].upstream_timeout
        )
        data = success_data(answer.json())
        available = data.get("available_credits") if data else None
        if not isinstance(available, int | float) or isinstance(available, bool):
            raise ValueError(f"unexpected getcredits answer (HTTP {answer.status})")
    except Exception as exc:  # counted and retried next interval
        metrics.credits_poll_errors.inc()
        log.warning("credits_poll_failed", error=type(exc).__name__, detail=str(exc)[:200])
        return
    metrics.upstream_credits_available.set(available)


async def _every(seconds: float, name: str, work: Callable[[], Awaitable[object]]) -> None:
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed round must not end the loop
            log.warning("background_round_failed", task=name, error=type(exc).__name__)
        await asyncio.sleep(seconds)


async def background_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    tasks = []
    if settings.queue_poll_interval > 0:
        tasks.append(asyncio.create_task(
            _every(settings.queue_poll_interval, "queue_poller", lambda: poll_queues_once(app))
        ))  # fmt: skip
    if settings.queue_poll_interval > 0:
        tasks.append(asyncio.create_task(
            _every(settings.queue_poll_interval, "list_settler", lambda: app[SETTLER].poll_once())
        ))  # fmt: skip
    if settings.credits_poll_interval > 0:
        tasks.append(asyncio.create_task(
            _every(settings.credits_poll_interval, "credits_poller", lambda: poll_credits_once(app))
        ))  # fmt: skip
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
