"""Operational routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.http.keys import LIFECYCLE, METRICS, REDIS
from gateway.store import STORE_ERRORS


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when started, not draining, and the backing store answers a ping."""
    lifecycle = request.app[LIFECYCLE]
    metrics = request.app[METRICS]
    problem = None
    if not lifecycle.accepting:
        problem = "draining" if lifecycle.draining else "starting"
    else:
        redis = request.app[REDIS]
        if redis is not None:
            try:
                await asyncio.wait_for(redis.ping(), timeout=1.0)
            except STORE_ERRORS:
                problem = "redis unreachable"
    metrics.ready.set(0 if problem else 1)
    if problem:
        return web.json_response({"status": "not_ready", "reason": problem}, status=503)
    return web.json_response({"status": "ready"})


async def metrics_text(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
