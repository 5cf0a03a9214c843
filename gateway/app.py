"""`create_app(settings)`: wires resources and routes, and does nothing else.

Every resource lives in its own `cleanup_ctx` and under a typed `AppKey`, so
cleanup runs exactly for what started.  In sandbox mode the sandbox upstream
is started on an internal loopback port first and the upstream seam points
at it; nothing above the seam knows the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from gateway import logging as gateway_logging
from gateway.appkeys import (
    BUDGETS,
    FINDER,
    HTTP_SESSION,
    LIFECYCLE,
    METRICS,
    REDIS,
    SANDBOX,
    SETTINGS,
    SETTLER,
    TEAMS,
    UPSTREAM,
    Lifecycle,
    TeamDirectory,
)
from gateway.auth import TeamRegistry
from gateway.background import background_ctx
from gateway.budgets import Budgets
from gateway.cache import CachedAnswer, LookupCache
from gateway.finder import Finder
from gateway.handlers import admin, instant, lists, openapi, ops
from gateway.metrics import Metrics
from gateway.middleware import Handler, endpoint, method_not_allowed, not_found
from gateway.ownership import GuardedOwnership, MemoryOwnership, Ownership, RedisOwnership
from gateway.pending_lists import MemoryPendingLists, PendingLists, RedisPendingLists
from gateway.pricing import Prices
from gateway.queued import MemoryQueuedStore, QueuedStore, RedisQueuedStore
from gateway.quota import Budget, GuardedBudget, MemoryBudget, RedisBudget
from gateway.ratelimit import (
    Governor,
    GuardedRateLimiter,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from gateway.resilience import CircuitBreaker, RetryBudget
from gateway.sandbox import Sandbox, SandboxConfig
from gateway.settings import Settings
from gateway.settlement import ListSettler
from gateway.singleflight import SingleFlight
from gateway.store import open_redis, prepare_redis
from gateway.teamfile import watch_teams_ctx
from gateway.upstream import Upstream, UpstreamAnswer, open_session

log = structlog.get_logger("gateway")


def load_teams(settings: Settings) -> TeamDirectory:
    """The teams file, or the sandbox's demo team when sandboxed without one."""
    if settings.teams_file is not None:
        return TeamDirectory(TeamRegistry.from_file(settings.teams_file), settings.teams_file)
    if settings.sandbox:
        return TeamDirectory(TeamRegistry.sandbox_demo())
    raise ValueError("no teams file")  # Settings.from_env already refuses this


def create_app(
    settings: Settings,
    *,
    teams: TeamDirectory | None = None,
    metrics: Metrics | None = None,
) -> web.Application:
    # client_max_size bounds request.read()/json(); bulk uploads stream past it.
    app = web.Application(client_max_size=settings.max_json_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics or Metrics()
    app[TEAMS] = teams or load_teams(settings)
    app[TEAMS].loaded_at = time.time()
    app[LIFECYCLE] = Lifecycle()

    app.cleanup_ctx.append(_log_flush_ctx)
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_http_session_ctx)
    if settings.sandbox:
        app[SANDBOX] = Sandbox(
            SandboxConfig(token=settings.api_token or secrets.token_urlsafe(32),
                          spool_dir=settings.spool_dir)
        )  # fmt: skip
        app.cleanup_ctx.append(_sandbox_ctx)
    else:
        app.cleanup_ctx.append(_upstream_ctx)
    app.cleanup_ctx.append(_budgets_ctx)
    app.cleanup_ctx.append(_finder_ctx)
    app.cleanup_ctx.append(background_ctx)
    teams_path = app[TEAMS].path
    if teams_path is not None:
        with contextlib.suppress(OSError):
            app[TEAMS].mtime = teams_path.stat().st_mtime
        app.cleanup_ctx.append(watch_teams_ctx)
    app.cleanup_ctx.append(_lifecycle_ctx)
    _add_routes(app)
    return app


FINDER_PATHS: dict[str, tuple[str, Handler, str]] = {
    # path: (method, handler, route label)
    "/v2/email_finder/instant": ("POST", instant.instant, "instant"),
    "/v2/email_finder/instant/queue_status": ("GET", instant.queue_status, "queue_status"),
    "/v2/email_finder/bulk": ("POST", lists.bulk, "bulk"),
    "/v2/email_finder/bulk/progress_status": ("GET", lists.progress_status, "progress_status"),
    "/v2/email_finder/download/result": ("POST", lists.download_result, "download_result"),
    "/v2/email_finder/list/cancel": ("POST", lists.list_cancel, "list_cancel"),
    "/v2/email_finder/list/remove": ("POST", lists.list_remove, "list_remove"),
}


def _add_routes(app: web.Application) -> None:
    r = app.router
    for path, (method, handler, route) in FINDER_PATHS.items():
        r.add_route(method, path, endpoint(app, route, team_auth=True)(handler))
        # Same path, other methods: 405 in the envelope, no auth needed to learn that.
        r.add_route("*", path, endpoint(app, route, team_auth=False)(method_not_allowed))
    ops_routes: list[tuple[str, str, Handler, str]] = [
        ("GET", "/healthz", ops.healthz, "healthz"),
        ("GET", "/readyz", ops.readyz, "readyz"),
        ("GET", "/metrics", ops.metrics_text, "metrics"),
        ("GET", "/openapi.json", openapi.openapi_document, "openapi"),
        ("POST", "/admin/cache/purge", admin.purge_cache, "admin"),
        ("GET", "/admin/teams", admin.teams, "admin"),
        ("POST", "/admin/teams/reload", admin.reload, "admin"),
    ]
    if SANDBOX in app:
        ops_routes.append(
            ("GET", "/sandbox/results/{list_id}/{filename}", app[SANDBOX].serve_result, "other")
        )
    for method, path, op_handler, route in ops_routes:
        r.add_route(method, path, endpoint(app, route, team_auth=False)(op_handler))
        r.add_route("*", path, endpoint(app, route, team_auth=False)(method_not_allowed))
    r.add_route("*", "/{tail:.*}", endpoint(app, "other", team_auth=False)(not_found))


async def _log_flush_ctx(_app: web.Application) -> AsyncIterator[None]:
    """Buffer log lines while serving; flush them every FLUSH_SECONDS and at the end."""
    sink = gateway_logging.sink()
    sink.buffering = True

    async def flush_periodically() -> None:
        while True:
            await asyncio.sleep(gateway_logging.FLUSH_SECONDS)
            sink.flush()

    task = asyncio.create_task(flush_periodically(), name="log-flush")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    sink.buffering = False
    sink.flush()


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    app[REDIS] = open_redis(app[SETTINGS])
    await prepare_redis(app[REDIS])
    yield
    redis = app[REDIS]
    if redis is not None:
        await redis.aclose()


async def _http_session_ctx(app: web.Application) -> AsyncIterator[None]:
    app[HTTP_SESSION] = await open_session()
    yield
    await app[HTTP_SESSION].close()


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.api_token is not None  # Settings refuses to start without one
    app[UPSTREAM] = _upstream(app, settings.upstream_url, settings.api_token)
    yield


def _upstream(app: web.Application, base_url: str, token: str) -> Upstream:
    settings = app[SETTINGS]
    return Upstream(
        app[HTTP_SESSION], base_url, token, app[METRICS],
        retries=settings.upstream_retries,
        budget=RetryBudget(ratio=settings.upstream_retry_budget),
        breaker=CircuitBreaker(settings.breaker_failures, settings.breaker_open_seconds),
    )  # fmt: skip


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


async def _budgets_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, redis, metrics = app[SETTINGS], app[REDIS], app[METRICS]
    budget: Budget = MemoryBudget() if redis is None else RedisBudget(redis)
    limiter: RateLimiter = MemoryRateLimiter() if redis is None else RedisRateLimiter(redis)
    ownership: Ownership = MemoryOwnership() if redis is None else RedisOwnership(redis)
    governor = Governor(settings.upstream_rpm, redis, metrics)
    budgets = Budgets(
        budget=GuardedBudget(budget, metrics, settings.quota_on_store_error),
        limiter=GuardedRateLimiter(limiter, metrics),
        governor=governor,
        ownership=GuardedOwnership(ownership, metrics),
        metrics=metrics,
    )
    app[BUDGETS] = budgets
    pending: PendingLists = MemoryPendingLists() if redis is None else RedisPendingLists(redis)
    app[SETTLER] = ListSettler(
        settings, app[UPSTREAM], app[HTTP_SESSION], pending, budgets,
        Prices.from_settings(settings), metrics,
    )  # fmt: skip
    yield
    await app[SETTLER].aclose()
    await governor.aclose()


async def _finder_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, redis, metrics = app[SETTINGS], app[REDIS], app[METRICS]
    cache = LookupCache(settings, redis, metrics)
    queued: QueuedStore = MemoryQueuedStore() if redis is None else RedisQueuedStore(redis)
    flights: SingleFlight[UpstreamAnswer, CachedAnswer] = SingleFlight(
        redis, cache.guard, settings.singleflight_lease
    )
    app[FINDER] = Finder(
        settings, cache, flights, queued, metrics, Prices.from_settings(settings), app[BUDGETS]
    )
    async with flights.running():
        yield


async def _lifecycle_ctx(app: web.Application) -> AsyncIterator[None]:
    # Per-team series exist from the start at 0, so the first credit a team
    # spends after a restart shows in rate()/increase() instead of vanishing.
    for name in app[TEAMS].registry.names():
        app[METRICS].add_team(name)
    app[LIFECYCLE].started = True
    app[METRICS].ready.set(1)
    yield
    app[METRICS].ready.set(0)
