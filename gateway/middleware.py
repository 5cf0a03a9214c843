"""What every request passes: id, auth, error envelope, metrics, access log.

It is applied as a wrapper around each route's handler (`endpoint(...)` in
`gateway.app`) rather than as aiohttp middleware: aiohttp rebuilds its
middleware chain on every request, which on the cache-hit path cost about as
much as everything the gateway itself does there, and a wrapper also knows
its route label and whether the route needs a team key without looking
them up per request.  Unmatched paths and wrong methods have catch-all routes
so they get the same envelope.

Order of work: take a request id (the caller's `X-Request-ID` when it looks
sane, else a new one) → authenticate by team key where the route needs one
(401 before any body is read or any upstream call is made) → run the handler
→ turn `GatewayError`s, aiohttp's own HTTP errors and unexpected exceptions
into the Clearout envelope → count, time and log the request.
"""

from __future__ import annotations

import hmac
import itertools
import os
import re
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from gateway.appkeys import BUDGETS, CONTEXT, METRICS, SETTINGS, TEAMS, RequestContext
from gateway.auth import Team, key_bytes, presented_key
from gateway.budgets import ADMIN_TEAM
from gateway.errors import (
    GatewayError,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
    Unauthorized,
)
from gateway.logging import access, bind_request
from gateway.metrics import NO_TEAM

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
QUIET_ROUTES = frozenset({"healthz", "readyz", "metrics"})
CLIENT_CLOSED = 499

# Request ids: a random per-process prefix and a counter.  Unique across
# replicas and restarts for all practical purposes, and far cheaper per
# request than uuid4 (which reads the OS random source every time).
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)

log = structlog.get_logger("gateway.access")


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


def _translate(exc: web.HTTPException) -> GatewayError:
    if exc.status == 404:
        return RouteNotFound("Resource not found")
    if exc.status == 405:
        return MethodNotAllowed("Method not allowed on this resource")
    if exc.status == 413:
        return PayloadTooLarge("Request body is too large")
    error = GatewayError(exc.reason or "Request failed")
    error.status = exc.status
    return error


def endpoint(app: web.Application, route: str, *, team_auth: bool) -> Callable[[Handler], Handler]:
    """Wrap `handler` for `route` (the metric label) with the gateway's request duties."""
    # Resolved once: both objects live as long as the app (the team directory
    # is updated in place on reload).
    metrics, teams = app[METRICS], app[TEAMS]
    admin_token = app[SETTINGS].admin_token

    def wrap(handler: Handler) -> Handler:
        async def serve(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            rid = request.headers.get("X-Request-ID", "")
            if not SANE_REQUEST_ID.match(rid):
                rid = new_request_id()
            ctx = RequestContext(request_id=rid, route=route)
            request[CONTEXT] = ctx
            team_name = NO_TEAM
            # Probes and scrapes are not work in flight (a scrape would count itself).
            counted = route not in QUIET_ROUTES
            if counted:
                metrics.hot.inflight += 1
            try:
                if team_auth:
                    authorization = request.headers.get("Authorization")
                    team = teams.registry.authenticate(authorization)
                    if team is None and admin_token is not None:
                        team = _admin(authorization, admin_token)
                    if team is None:
                        bind_request(request_id=rid, route=route, team=NO_TEAM)
                        raise Unauthorized("Invalid API Token, please use a valid gateway team key")
                    ctx.team = team
                    team_name = team.name
                    if team.quota.requests_per_second:
                        await request.app[BUDGETS].check_rate(team)
                bind_request(request_id=rid, route=route, team=team_name)
                response = await handler(request)
            except GatewayError as exc:
                response = exc.to_response()
            except web.HTTPException as exc:
                response = _translate(exc).to_response()
            except ConnectionError:
                # The caller hung up while we read its body: nobody to answer.
                response = _hung_up()
            except Exception:
                log.exception("unhandled_error", method=request.method, path=request.path)
                response = GatewayError("Internal gateway error").to_response()
            finally:
                if counted:
                    metrics.hot.inflight -= 1
            response.headers["X-Request-ID"] = rid
            elapsed = time.perf_counter() - started
            # nginx's convention: a caller gone before its answer is 499, not
            # a server error (the answer is computed, but cannot be delivered).
            status = CLIENT_CLOSED if request.transport is None else response.status
            metrics.observe_request(route, team_name, status, elapsed)
            if counted:
                access(
                    method=request.method,
                    path=request.path,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                    cache=ctx.cache,
                    upstream_ms=ctx.upstream_ms,
                )
            return response

        return serve

    return wrap


def _hung_up() -> web.Response:
    return web.Response(status=CLIENT_CLOSED, reason="Client Closed Request")


def _admin(authorization: str | None, admin_token: str) -> Team | None:
    """The admin pseudo-team when the admin token is presented on a finder route."""
    presented = presented_key(authorization)
    if presented is not None and hmac.compare_digest(key_bytes(presented), key_bytes(admin_token)):
        return ADMIN_TEAM
    return None


async def not_found(_request: web.Request) -> web.StreamResponse:
    raise RouteNotFound("Resource not found")


async def method_not_allowed(_request: web.Request) -> web.StreamResponse:
    raise MethodNotAllowed("Method not allowed on this resource")
