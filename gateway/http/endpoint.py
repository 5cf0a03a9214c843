"""What every request passes: id, team auth, team rate, error envelope, metrics, access log.

Applied as a wrapper around each route's handler (`Endpoint.serve`, wired in
`gateway.http.routes`) rather than as aiohttp middleware.  aiohttp >= 3.10
caches its middleware chain, so a middleware is no dearer than a wrapper
(re-measured with wrk on aiohttp 3.14: within noise of each other, both
~10-15% under a bare handler); the wrapper stays because each route's metric
label and whether it needs a team key are bound once, at registration,
instead of being looked up from the matched route on every request.
Unmatched paths and wrong methods have catch-all routes so they get the same
envelope.

Order of work: take a request id (the caller's `X-Request-ID` when it looks
sane, else a new one) and start the request's facts → authenticate by team
key where the route needs one (401 before any body is read or any upstream
call is made) → the team's request rate (429) → the handler → turn
`GatewayError`s, aiohttp's own HTTP errors and unexpected exceptions into the
Clearout envelope (a caller that hung up is 499) → count, time and log.
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

from gateway import context
from gateway.context import RequestFacts
from gateway.errors import (
    BadRequest,
    GatewayError,
    HeadersTooLarge,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestTimeout,
    RouteNotFound,
    Unauthorized,
    UnsupportedMediaType,
)
from gateway.http.keys import BUDGETS, METRICS, SETTINGS, TEAM, TEAMS
from gateway.http.responses import error_response
from gateway.logging import access
from gateway.teams import ADMIN_TEAM, Team, key_bytes, presented_key

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


class Endpoint:
    """The gateway's request duties around one route's handler."""

    def __init__(
        self, app: web.Application, route: str, handler: Handler, *, team_auth: bool
    ) -> None:
        # Resolved once: these live as long as the app (the team directory is
        # updated in place on reload).
        self._metrics, self._teams = app[METRICS], app[TEAMS]
        self._admin_token = app[SETTINGS].admin_token
        self._app = app
        self.route = route
        self._handler = handler
        self._team_auth = team_auth
        # Probes and scrapes are not work in flight (a scrape would count itself).
        self._counted = route not in QUIET_ROUTES

    async def serve(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request.headers.get("X-Request-ID")
        if rid is None or SANE_REQUEST_ID.match(rid) is None:
            rid = new_request_id()
        facts = context.begin(rid, self.route)
        hot = self._metrics.hot
        if self._counted:
            hot.inflight += 1
        try:
            response = await self._answer(request, facts)
        finally:
            if self._counted:
                hot.inflight -= 1
        response.headers["X-Request-ID"] = facts.request_id
        self._account(request, response, facts, time.perf_counter() - started)
        return response

    async def _answer(self, request: web.Request, facts: RequestFacts) -> web.StreamResponse:
        try:
            if self._team_auth:
                await self._authenticate(request, facts)
            return await self._handler(request)
        except GatewayError as exc:
            return error_response(exc)
        except web.HTTPException as exc:
            return error_response(_translate(exc))
        except ConnectionError:
            # The caller hung up while we read its body: nobody to answer.
            return web.Response(status=CLIENT_CLOSED, reason="Client Closed Request")
        except Exception:
            log.exception("unhandled_error", method=request.method, path=request.path)
            return error_response(GatewayError("Internal gateway error"))

    async def _authenticate(self, request: web.Request, facts: RequestFacts) -> None:
        authorization = request.headers.get("Authorization")
        team = self._teams.registry.authenticate(authorization)
        if team is None and self._admin_token is not None:
            team = _admin(authorization, self._admin_token)
        if team is None:
            raise Unauthorized("Invalid API Token, please use a valid gateway team key")
        request[TEAM] = team
        facts.team = team.name
        if team.quota.requests_per_second:
            await self._app[BUDGETS].check_rate(team)

    def _account(
        self, request: web.Request, response: web.StreamResponse, facts: RequestFacts,
        elapsed: float,
    ) -> None:  # fmt: skip
        # nginx's convention: a caller gone before its answer is 499, not a
        # server error (the answer was computed, but cannot be delivered).
        status = CLIENT_CLOSED if request.transport is None else response.status
        self._metrics.observe_request(self.route, facts.team, status, elapsed)
        if self._counted:
            access(facts, request.method, request.path, status, round(elapsed * 1000, 2))


_BY_STATUS: dict[int, tuple[type[GatewayError], str]] = {
    404: (RouteNotFound, "Resource not found"),
    405: (MethodNotAllowed, "Method not allowed on this resource"),
    408: (RequestTimeout, "The request did not arrive in time"),
    413: (PayloadTooLarge, "Request body is too large"),
    415: (UnsupportedMediaType, "Unsupported request body type"),
    431: (HeadersTooLarge, "The request line or its headers are too large"),
}


def _translate(exc: web.HTTPException) -> GatewayError:
    """aiohttp's own HTTP errors in the envelope: a 4xx is the caller's (9106
    `bad_request` when no closer code fits, its status kept), a 5xx is ours."""
    known = _BY_STATUS.get(exc.status)
    if known is not None:
        return known[0](known[1])
    error: GatewayError
    if 400 <= exc.status < 500:
        error = BadRequest(exc.reason or "The request cannot be served")
    else:
        error = GatewayError("Internal gateway error")
    error.status = exc.status
    return error


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


def team_of(request: web.Request) -> Team:
    """The team the wrapper authenticated (only on routes that need a team key)."""
    return request[TEAM]
