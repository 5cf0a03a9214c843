"""`create_app(settings)`: wires resources and routes, and does nothing else.

Every resource lives in its own `cleanup_ctx` and under a typed `AppKey`, so
cleanup runs exactly for what started.  In sandbox mode the sandbox upstream
is started on an internal loopback port first and the upstream seam points
at it; nothing above the seam knows the difference.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from gateway.appkeys import (
    FINDER,
    HTTP_SESSION,
    LIFECYCLE,
    METRICS,
    REDIS,
    SANDBOX,
    SETTINGS,
    TEAMS,
    UPSTREAM,
    Lifecycle,
    TeamDirectory,
)
from gateway.auth import TeamRegistry
from gateway.background import background_ctx
from gateway.cache import CachedAnswer, LookupCache
from gateway.finder import Finder
from gateway.handlers import admin, instant, lists, ops
from gateway.metrics import Metrics
from gateway.middleware import gateway_middleware
from gateway.pricing import Prices
from gateway.queued import MemoryQueuedStore, QueuedStore, RedisQueuedStore
from gateway.sandbox import Sandbox, SandboxConfig
from gateway.settings import Settings
from gateway.singleflight import SingleFlight
from gateway.store import open_redis
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
    app = web.Application(middlewares=[gateway_middleware], client_max_size=settings.max_json_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics or Metrics()
    app[TEAMS] = teams or load_teams(settings)
    app[TEAMS].loaded_at = time.time()
    app[LIFECYCLE] = Lifecycle()

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
    app.cleanup_ctx.append(_finder_ctx)
    app.cleanup_ctx.append(background_ctx)
    app.cleanup_ctx.append(_lifecycle_ctx)
    _add_routes(app)
    return app


def _add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v2/email_finder/instant", instant.instant, name="instant")
    r.add_get("/v2/email_finder/instant/queue_status", instant.queue_status, name="queue_status")
    r.add_post("/v2/email_finder/bulk", lists.bulk, name="bulk")
    r.add_get(
        "/v2/email_finder/bulk/progress_status", lists.progress_status, name="progress_status"
    )
    r.add_post("/v2/email_finder/download/result", lists.download_result, name="download_result")
    r.add_post("/v2/email_finder/list/cancel", lists.list_cancel, name="list_cancel")
    r.add_post("/v2/email_finder/list/remove", lists.list_remove, name="list_remove")
    r.add_get("/healthz", ops.healthz, name="healthz")
    r.add_get("/readyz", ops.readyz, name="readyz")
    r.add_get("/metrics", ops.metrics_text, name="metrics")
    r.add_post("/admin/cache/purge", admin.purge_cache, name="admin.cache_purge")
    if SANDBOX in app:
        r.add_get(
            "/sandbox/results/{list_id}/{filename}",
            app[SANDBOX].serve_result,
            name="sandbox_results",
        )


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    app[REDIS] = open_redis(app[SETTINGS])
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
    app[UPSTREAM] = Upstream(
        app[HTTP_SESSION], settings.upstream_url, settings.api_token, app[METRICS]
    )
    yield


async def _sandbox_ctx(app: web.Application) -> AsyncIterator[None]:
    sandbox = app[SANDBOX]
    runner = web.AppRunner(sandbox.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    app[UPSTREAM] = Upstream(
        app[HTTP_SESSION], f"http://{host}:{port}/v2", sandbox.config.token, app[METRICS]
    )
    log.info("sandbox_started", upstream=f"http://{host}:{port}/v2")
    yield
    await runner.cleanup()


async def _finder_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, redis, metrics = app[SETTINGS], app[REDIS], app[METRICS]
    cache = LookupCache(settings, redis, metrics)
    queued: QueuedStore = MemoryQueuedStore() if redis is None else RedisQueuedStore(redis)
    flights: SingleFlight[UpstreamAnswer, CachedAnswer] = SingleFlight(redis, cache.guard)
    app[FINDER] = Finder(settings, cache, flights, queued, metrics, Prices.from_settings(settings))
    async with flights.running():
        yield


async def _lifecycle_ctx(app: web.Application) -> AsyncIterator[None]:
    app[LIFECYCLE].started = True
    app[METRICS].ready.set(1)
    yield
    app[METRICS].ready.set(0)
