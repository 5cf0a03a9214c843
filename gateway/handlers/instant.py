"""Instant finder routes: `POST /instant` and `GET /instant/queue_status`."""

from __future__ import annotations

from aiohttp import web

from gateway import validation
from gateway.appkeys import BUDGETS, CONTEXT, FINDER, SETTINGS
from gateway.budgets import not_found_answer
from gateway.handlers.bodies import read_body
from gateway.handlers.common import call_upstream, relay


async def instant(request: web.Request) -> web.StreamResponse:
    lookup = validation.instant_request_from_bytes(await read_body(request, request.app[SETTINGS]))
    ctx = request[CONTEXT]
    assert ctx.team is not None  # the wrapper authenticated this route
    response, ctx.cache = await request.app[FINDER].instant(request, ctx.team, lookup)
    return response


async def queue_status(request: web.Request) -> web.StreamResponse:
    qid = validation.query_id(dict(request.query), "qid")
    team = request[CONTEXT].team
    assert team is not None
    if not await request.app[BUDGETS].may_use("queue", qid, team):
        return not_found_answer("queue_status")
    answer = await call_upstream(
        request,
        "queue_status",
        "GET",
        "/email_finder/instant/queue_status",
        params={"qid": qid},
        timeout=request.app[SETTINGS].upstream_timeout,
    )
    # A completed queued lookup settles its credits and fills the cache, so
    # the next ask is a hit.
    await request.app[FINDER].complete_queued(qid, answer)
    return relay(answer)
