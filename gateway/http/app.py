"""`create_app(settings)`: wires resources, services and routes, and does nothing else.

Every resource lives in its own `cleanup_ctx` and under a typed `AppKey`
(`gateway.http.keys`), so cleanup runs exactly for what started, in reverse:
background tasks stop before the services they use, which go before the
upstream session and the Redis client.  In sandbox mode the sandbox upstream
is started on an internal loopback port first and the upstream seam points
at it; nothing above the seam knows the difference.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from gateway import logging as gateway_logging
from gateway.budget.budgets import Budgets
from gateway.budget.credits import MemoryBudget
from gateway.budget.credits_guard import GuardedBudget
from gateway.budget.credits_redis import RedisBudget
from gateway.budget.governor import Governor
from gateway.budget.ownership import GuardedOwnership, MemoryOwnership, RedisOwnership
from gateway.budget.rates import GuardedRateLimiter, MemoryRateLimiter, RedisRateLimiter
from gateway.bulk.actions import ListActions
from gateway.bulk.blobs import FileBlobs, RedisBlobs
from gateway.bulk.harvest import Harvester
from gateway.bulk.limits import result_limits
from gateway.bulk.links import Links, link_key
from gateway.bulk.lists import MemoryLists, RedisLists
from gateway.bulk.pending import MemoryPendingLists, RedisPendingLists
from gateway.bulk.saver import Saver
from gateway.bulk.service import BulkLists
from gateway.bulk.settlement import ListSettler
from gateway.http import teams_reload
from gateway.http.keys import (
    BALANCE,
    BUDGETS,
    BULK,
    FINDER,
    HTTP_SESSION,
    LIFECYCLE,
    METRICS,
    REDIS,
    SANDBOX,
    SETTINGS,
    TASKS,
    TEAMS,
    UPSTREAM,
    Lifecycle,
)  # fmt: skip
from gateway.http.routes import add_routes
from gateway.lookup.cache import LookupCache
from gateway.lookup.finder import Finder
from gateway.lookup.flight import FlightStore, MemoryFlights, RedisFlights
from gateway.lookup.pricing import Prices
from gateway.lookup.queue import QueuedLookups
from gateway.lookup.queued import MemoryQueuedStore, RedisQueuedStore
from gateway.lookup.singleflight import SingleFlight
from gateway.metrics import Metrics
from gateway.sandbox import Sandbox, SandboxConfig
from gateway.settings import Settings
from gateway.store import close_redis, open_redis, prepare_redis
from gateway.tasks import Tasks
from gateway.teams import TeamDirectory, TeamRegistry
from gateway.upstream import Upstream, UpstreamAnswer, open_session
from gateway.upstream.balance import Balance
from gateway.upstream.client import Resilience
from gateway.upstream.resilience import CircuitBreaker, RetryBudget

log = structlog.get_logger("gateway")

BLOB_SWEEP_SECONDS = 3600.0


def load_teams(settings: Settings) -> TeamDirectory:
    """The teams file, or the sandbox's demo team when sandboxed without one."""
    if settings.teams_file is not None:
        return TeamDirectory(TeamRegistry.from_file(settings.teams_file), settings.teams_file)
    if settings.sandbox:
        return TeamDirectory(TeamRegistry.sandbox_demo())
    raise ValueError("no teams file")  # Settings.from_env already refuses this


def create_app(
    settings: Settings, *, teams: TeamDirectory | None = None, metrics: Metrics | None = None
) -> web.Application:
    # client_max_size bounds request.read()/json(); bulk uploads stream past it.
    app = web.Application(client_max_size=settings.max_json_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics or Metrics()
    app[TEAMS] = teams or load_teams(settings)
    app[LIFECYCLE] = Lifecycle()
    app[TASKS] = Tasks()
    for ctx in (_log_flush_ctx, _redis_ctx, _http_session_ctx):
        app.cleanup_ctx.append(ctx)
    if settings.sandbox:
        token = settings.api_token or secrets.token_urlsafe(32)
        app[SANDBOX] = Sandbox(SandboxConfig(token=token, spool_dir=settings.spool_dir))
        app.cleanup_ctx.append(_sandbox_ctx)
    else:
        app.cleanup_ctx.append(_upstream_ctx)
    for ctx in (_tasks_ctx, _services_ctx, _background_ctx, _lifecycle_ctx):
        app.cleanup_ctx.append(ctx)
    add_routes(app)
    return app


async def _log_flush_ctx(_app: web.Application) -> AsyncIterator[None]:
    """Buffer log lines while serving (flushed by a background task); flush at the end."""
    sink = gateway_logging.sink()
    sink.buffering = True
    yield
    sink.buffering = False
    sink.flush()


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    app[REDIS] = open_redis(app[SETTINGS])
    await prepare_redis(app[REDIS])
    yield
    await close_redis(app[REDIS])


async def _http_session_ctx(app: web.Application) -> AsyncIterator[None]:
    app[HTTP_SESSION] = await open_session()
    yield
    await app[HTTP_SESSION].close()


def _upstream(app: web.Application, base_url: str, token: str) -> Upstream:
    settings = app[SETTINGS]
    resilience = Resilience(
        retries=settings.upstream_retries,
        budget=RetryBudget(ratio=settings.upstream_retry_budget),
        breaker=CircuitBreaker(settings.breaker_failures, settings.breaker_open_seconds),
    )
    return Upstream(app[HTTP_SESSION], base_url, token, app[METRICS], resilience)


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    token = app[SETTINGS].api_token
    assert token is not None  # Settings refuses to start without one
    app[UPSTREAM] = _upstream(app, app[SETTINGS].upstream_url, token)
    yield


async def _sandbox_ctx(app: web.Application) -> AsyncIterator[None]:
    sandbox = app[SANDBOX]
    runner = web.AppRunner(sandbox.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    app[UPSTREAM] = _upstream(app, f"http://{host}:{port}/v2", sandbox.config.token)
    log.info("sandbox_started", upstream=f"http://{host}:{port}/v2")
    yield
    await runner.cleanup()


async def _tasks_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[TASKS].aclose()


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    app[BUDGETS] = _budgets(app)
    app[FINDER] = _finder(app)
    app[BULK] = _bulk(app)
    app[BALANCE] = Balance(app[UPSTREAM], app[METRICS], app[SETTINGS].upstream_timeout)
    yield
    await app[BUDGETS].governor.aclose()


def _budgets(app: web.Application) -> Budgets:
    settings, redis, metrics = app[SETTINGS], app[REDIS], app[METRICS]
    budget = MemoryBudget() if redis is None else RedisBudget(redis)
    limiter = MemoryRateLimiter() if redis is None else RedisRateLimiter(redis)
    ownership = MemoryOwnership() if redis is None else RedisOwnership(redis)
    return Budgets(
        budget=GuardedBudget(budget, metrics, settings.quota_on_store_error),
        limiter=GuardedRateLimiter(limiter, metrics),
        governor=Governor(settings.upstream_rpm, redis, metrics, app[TASKS]),
        ownership=GuardedOwnership(ownership, metrics),
        metrics=metrics,
    )


def _finder(app: web.Application) -> Finder:
    settings, redis, metrics = app[SETTINGS], app[REDIS], app[METRICS]
    cache = LookupCache(settings, redis, metrics)
    store = MemoryQueuedStore() if redis is None else RedisQueuedStore(redis)
    lease_ms = max(100, int(settings.singleflight_lease * 1000))
    looks: FlightStore = (
        MemoryFlights(cache, store) if redis is None else RedisFlights(redis, cache.guard, lease_ms)
    )
    flights: SingleFlight[UpstreamAnswer] = SingleFlight(
        looks, redis, settings.singleflight_lease, on_drop=cache.forget_local
    )
    flights.start(app[TASKS])
    prices = Prices.from_settings(settings)
    queue = QueuedLookups(settings, store, cache, app[BUDGETS], metrics, prices, redis)
    return Finder(settings, cache, flights, queue, app[BUDGETS], app[UPSTREAM], metrics, prices)


def _bulk(app: web.Application) -> BulkLists:
    settings, redis, metrics, tasks = app[SETTINGS], app[REDIS], app[METRICS], app[TASKS]
    prices = Prices.from_settings(settings)
    cache = app[FINDER].cache
    harvester = Harvester(cache, prices, result_limits(settings))
    lists = MemoryLists(settings.bulk_list_ttl) if redis is None else RedisLists(redis)
    blobs = FileBlobs(settings.spool_dir / "cgw-lists") if redis is None else RedisBlobs(redis)
    pending = MemoryPendingLists() if redis is None else RedisPendingLists(redis)
    session, upstream, budgets = app[HTTP_SESSION], app[UPSTREAM], app[BUDGETS]
    settler = ListSettler(
        settings, upstream, session, pending, budgets, prices, metrics, tasks, harvester
    )
    saver = Saver(
        settings, upstream, session, cache, budgets, lists, blobs, harvester, prices, metrics,
        tasks,
    )  # fmt: skip
    links = Links(
        link_key(settings.result_link_secret, settings.api_token), settings.result_link_seconds
    )
    actions = ListActions(settings, upstream, lists, blobs, saver, links, tasks)
    return BulkLists(
        settings, upstream, budgets, settler, saver, actions, lists, blobs, links, harvester
    )


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    """The pollers, the log flusher and the teams-file watcher, as the app's tasks."""
    settings, tasks = app[SETTINGS], app[TASKS]
    poll = settings.queue_poll_interval
    tasks.every(gateway_logging.FLUSH_SECONDS, "log-flush", _flush_logs)
    tasks.every(poll, "queue-poller", lambda: app[FINDER].queue.poll_once(app[UPSTREAM]))
    tasks.every(poll, "list-poller", app[BULK].poll_once)
    tasks.every(settings.credits_poll_interval, "credits-poller", app[BALANCE].poll_once)
    blobs = app[BULK].blobs
    if isinstance(blobs, FileBlobs):
        tasks.every(BLOB_SWEEP_SECONDS, "blob-sweep", blobs.sweep, first_after=BLOB_SWEEP_SECONDS)
    directory = app[TEAMS]
    if directory.path is not None:
        with contextlib.suppress(OSError):
            directory.mtime = directory.path.stat().st_mtime
        tasks.every(
            teams_reload.TEAMS_WATCH_SECONDS, "teams-watch", lambda: _watch_teams(app),
            first_after=teams_reload.TEAMS_WATCH_SECONDS,
        )  # fmt: skip
    yield


async def _flush_logs() -> None:
    gateway_logging.sink().flush()


async def _watch_teams(app: web.Application) -> None:
    teams_reload.check_for_change(app)


async def _lifecycle_ctx(app: web.Application) -> AsyncIterator[None]:
    # Per-team series exist from the start at 0, so the first credit a team
    # spends after a restart shows in rate()/increase() instead of vanishing.
    for name in app[TEAMS].registry.names():
        app[METRICS].add_team(name)
    app[LIFECYCLE].started = True
    app[METRICS].ready.set(1)
    yield
    app[METRICS].ready.set(0)
