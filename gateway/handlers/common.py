"""Upstream answers out: calling the upstream for a request, and relaying its answer.

`relay` turns an upstream answer back into the caller's response unchanged
(request bodies come in through `gateway.handlers.bodies`).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from gateway.appkeys import CONTEXT, UPSTREAM
from gateway.upstream import UpstreamAnswer

# aiohttp only knows IANA reason phrases; Clearout's 524 is Cloudflare's.
REASONS = {524: "A Timeout Occurred"}


async def call_upstream(
    request: web.Request, route: str, method: str, path: str, **kwargs: Any
) -> UpstreamAnswer:
    """Call the upstream on behalf of `request`, noting its latency for the access log."""
    answer = await request.app[UPSTREAM].call(
        route, method, path, caller_headers=request.headers, **kwargs
    )
    request[CONTEXT].upstream_ms = answer.elapsed_ms
    return answer


def relay(answer: UpstreamAnswer, extra_headers: dict[str, str] | None = None) -> web.Response:
    """The upstream's answer as the caller's response: status, headers and body unchanged."""
    headers = answer.headers.copy()
    if answer.status == 429 and "Retry-After" not in headers:
        headers["Retry-After"] = str(retry_after(answer))
    if extra_headers:
        headers.update(extra_headers)
    return web.Response(
        status=answer.status,
        reason=REASONS.get(answer.status),
        body=answer.body,
        headers=headers,
    )


def retry_after(answer: UpstreamAnswer) -> int:
    """Seconds until the upstream's rate window resets (x-ratelimit-reset), at least 1."""
    reset = answer.headers.get("x-ratelimit-reset", "")
    try:
        value = float(reset)
    except ValueError:
        return 60
    # Clearout sends an epoch timestamp; small values are already a delay.
    delay = value - time.time() if value > 1_000_000_000 else value
    return max(1, min(3600, int(delay + 0.999)))
