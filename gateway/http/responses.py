"""Answers out: the services' results rendered as the caller's responses.

An upstream answer is relayed unchanged (status, headers, body; a 429 gains a
`Retry-After`); a lookup result gains `X-Cache` and the team's
remaining-credit headers; a `GatewayError` becomes the Clearout envelope
with `X-Gateway-Error`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import orjson
from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import GatewayError
from gateway.lookup.request import LookupResult
from gateway.upstream import UpstreamAnswer

# aiohttp only knows IANA reason phrases; Clearout's 524 is Cloudflare's.
REASONS = {524: "A Timeout Occurred"}
JSON_TYPE = "application/json; charset=utf-8"
CACHED_HEADERS = {
    status: {"Content-Type": JSON_TYPE, "X-Cache": status}
    for status in ("HIT", "MISS", "COALESCED", "BYPASS")
}


def error_response(error: GatewayError) -> web.Response:
    return web.Response(
        status=error.status,
        body=orjson.dumps(error.body()),
        content_type="application/json",
        headers=error.response_headers(),
    )


def relay(answer: UpstreamAnswer, extra: Mapping[str, str] | None = None) -> web.Response:
    """The upstream's answer as the caller's response: status, headers and body unchanged."""
    headers = answer.headers.copy()
    if answer.status == 429 and "Retry-After" not in headers:
        headers["Retry-After"] = str(retry_after(answer))
    if extra:
        headers.update(extra)
    return web.Response(
        status=answer.status, reason=REASONS.get(answer.status), body=answer.body, headers=headers
    )


def lookup_response(result: LookupResult) -> web.Response:
    """An instant lookup's answer, with X-Cache and the team's credits left."""
    if not result.headers and result.status == 200:
        # A replayed cache entry: its headers are always these (aiohttp copies them once).
        return web.Response(
            body=result.body, headers={**CACHED_HEADERS[result.cache], **result.credits_left}
        )
    headers: CIMultiDict[str] = CIMultiDict(result.headers or {"Content-Type": JSON_TYPE})
    headers["X-Cache"] = result.cache
    headers.update(result.credits_left)
    if result.status == 429 and "Retry-After" not in headers:
        headers["Retry-After"] = str(_retry_after(headers))
    return web.Response(
        status=result.status, reason=REASONS.get(result.status), body=result.body, headers=headers
    )


def retry_after(answer: UpstreamAnswer) -> int:
    return _retry_after(answer.headers)


def _retry_after(headers: Mapping[str, str]) -> int:
    """Seconds until the upstream's rate window resets (x-ratelimit-reset), at least 1."""
    reset = headers.get("x-ratelimit-reset", "")
    try:
        value = float(reset)
    except ValueError:
        return 60
    # Clearout sends an epoch timestamp; small values are already a delay.
    delay = value - time.time() if value > 1_000_000_000 else value
    return max(1, min(3600, int(delay + 0.999)))
