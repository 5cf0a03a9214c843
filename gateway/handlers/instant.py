"""Instant finder routes: `POST /instant` and `GET /instant/queue_status`."""

from __future__ import annotations

from aiohttp import web

from gateway import validation
from gateway.appkeys import CONTEXT, FINDER, SETTINGS
from gateway.handlers.common import call_upstream, read_body, relay


async def instant(request: web.Request) -> web.StreamResponse:
    lookup = validation.instant_request_from_bytes(
        await read_body(request, request.app[SETTINGS].max_json_bytes)
    )
    ctx = request[CONTEXT]
    assert ctx.team is not None  # the middleware authenticated this route
    response, ctx.cache = await request.app[FINDER].instant(request, ctx.team, lookup)
    return response


async def queue_status(request: web.Request) -> web.StreamResponse:
    qid = validation.query_id(dict(request.query), "qid")
    answer = await call_upstream(
        request,
        "queue_status",
        "GET",
        "/email_finder/instant/queue_status",
        params={"qid": qid},
        timeout=request.app[SETTINGS].upstream_timeout,
    )
    # A completed queued lookup fills the cache, so the next ask is a hit.
    await request.app[FINDER].complete_queued(qid, answer)
    return relay(answer)
