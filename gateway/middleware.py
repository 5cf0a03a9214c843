"""The one middleware every request passes: id, auth, error envelope, metrics, access log.

It is a single middleware rather than a stack of five because each layer of
aiohttp middleware costs a coroutine frame on every request, and the cache-hit
path is meant to run at a good fraction of a bare aiohttp server's speed.

Order of work: bind a request id (the caller's `X-Request-ID` when it looks
sane, else a new one) → authenticate finder routes by team key (401 before
any body is read or any upstream call is made) → run the handler → turn
`GatewayError`s, aiohttp's own HTTP errors and unexpected exceptions into the
Clearout envelope → count, time and log the request.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from gateway.appkeys import CONTEXT, METRICS, TEAMS, RequestContext
from gateway.errors import (
    GatewayError,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
    Unauthorized,
)
from gateway.metrics import NO_TEAM

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Routes without a team key: probes, metrics, the sandbox's signed result
# links, and admin routes (which check the admin token themselves).
PUBLIC_ROUTES = frozenset({"healthz", "readyz", "metrics", "admin", "sandbox_results"})

log = structlog.get_logger("gateway.access")


def _translate(exc: web.HTTPException) -> GatewayError:
    if exc.status == 404:
        return RouteNotFound("Resource not found")
    if exc.status == 405:
        return MethodNotAllowed("Method not allowed on this resource")
    if exc.status == 413:
        return PayloadTooLarge("Request body is too large")
    error = GatewayError(exc.reason or "Request failed")
    error.status = exc.status  # type: ignore[misc]
    return error


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    rid = request.headers.get("X-Request-ID", "")
    if not SANE_REQUEST_ID.match(rid):
        rid = uuid.uuid4().hex
    # Route names may carry a detail after a dot (admin.cache_purge); the
    # metric label keeps only the family, so its values stay a fixed set.
    route_name = (request.match_info.route.name or "other").split(".", 1)[0]
    ctx = RequestContext(request_id=rid, route=route_name)
    request[CONTEXT] = ctx
    structlog.contextvars.bind_contextvars(request_id=rid, route=route_name)
    metrics = request.app[METRICS]
    metrics.inflight.inc()
    try:
        if route_name not in PUBLIC_ROUTES and route_name != "other":
            team = request.app[TEAMS].registry.authenticate(request.headers.get("Authorization"))
            if team is None:
                raise Unauthorized("Invalid API Token, please use a valid gateway team key")
            ctx.team = team
            structlog.contextvars.bind_contextvars(team=team.name)
        response = await handler(request)
    except GatewayError as exc:
        response = exc.to_response()
    except web.HTTPException as exc:
        response = _translate(exc).to_response()
    except Exception:
        log.exception("unhandled_error", method=request.method, path=request.path)
        response = GatewayError("Internal gateway error").to_response()
    finally:
        metrics.inflight.dec()
    response.headers["X-Request-ID"] = rid
    elapsed = time.perf_counter() - started
    team_name = ctx.team.name if ctx.team else NO_TEAM
    metrics.requests.labels(route_name, team_name, str(response.status)).inc()
    metrics.request_duration.labels(route_name).observe(elapsed)
    if route_name not in ("healthz", "readyz", "metrics"):
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=response.status,
            duration_ms=round(elapsed * 1000, 2),
            team=team_name,
            cache=ctx.cache,
            upstream_ms=ctx.upstream_ms,
            **ctx.extra,
        )
    structlog.contextvars.clear_contextvars()
    return response
