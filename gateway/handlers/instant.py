"""Instant finder routes: `POST /instant` and `GET /instant/queue_status`."""

from __future__ import annotations

from aiohttp import web

from gateway import validation
from gateway.appkeys import SETTINGS
from gateway.handlers.common import call_upstream, read_json, relay


async def instant(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    lookup = validation.instant_request(await read_json(request, settings.max_json_bytes))
    answer = await call_upstream(
        request,
        "instant",
        "POST",
        "/email_finder/instant",
        json_body=lookup.upstream_body(),
        # Clearout answers 524 itself once the caller's timeout passes; the
        # margin lets that answer (with its queue id) reach us first.
        timeout=lookup.timeout_ms / 1000 + settings.upstream_timeout_margin,
    )
    return relay(answer)


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
    return relay(answer)
