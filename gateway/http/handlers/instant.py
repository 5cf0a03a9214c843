"""Instant finder routes: `POST /instant` and `GET /instant/queue_status`."""

from __future__ import annotations

from aiohttp import web

from gateway import validation
from gateway.budget import foreign_id_answer
from gateway.http.bodies import read_body
from gateway.http.endpoint import team_of
from gateway.http.keys import BUDGETS, FINDER, SETTINGS, UPSTREAM
from gateway.http.responses import lookup_response, relay
from gateway.lookup.request import CacheMode


def cache_mode(request: web.Request) -> CacheMode:
    """`X-Gateway-Cache: refresh|bypass`; any other header (Cache-Control too) changes nothing."""
    value = request.headers.get("X-Gateway-Cache", "").strip().lower()
    if value == "refresh":
        return "refresh"
    if value == "bypass":
        return "bypass"
    return "normal"


async def instant(request: web.Request) -> web.StreamResponse:
    lookup = validation.instant_request_from_bytes(await read_body(request, request.app[SETTINGS]))
    result = await request.app[FINDER].instant(
        team_of(request), lookup, cache_mode(request), request.headers
    )
    return lookup_response(result)


async def queue_status(request: web.Request) -> web.StreamResponse:
    qid = validation.query_id(dict(request.query), "qid")
    if not await request.app[BUDGETS].may_use("queue", qid, team_of(request)):
        return relay(foreign_id_answer("queue_status"))
    answer = await request.app[UPSTREAM].call(
        "queue_status", "GET", "/email_finder/instant/queue_status", params={"qid": qid},
        caller_headers=request.headers, timeout=request.app[SETTINGS].upstream_timeout,
    )  # fmt: skip
    # A completed queued lookup settles its credits and fills the cache, so
    # the next ask is a hit.
    await request.app[FINDER].queue.complete(qid, answer)
    return relay(answer)
