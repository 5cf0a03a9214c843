"""The one seam to Clearout: a pooled client session, token injection, timeouts.

Everything the gateway sends upstream goes through `Upstream.call`, whether
the base URL is the real API, the built-in sandbox or a test's fake server.
It sends only headers it chose (so caller cookies, hop-by-hop headers and the
caller's own Authorization never travel), adds the real token, measures the
call, and translates transport failures into the gateway's own errors at this
boundary: the rest of the code never sees an aiohttp client exception.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.metrics import Metrics

# RFC 9110 7.6.1 hop-by-hop headers, plus the framing headers aiohttp
# recomputes for the body it sends on.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "date",
        "server",
        "set-cookie",
    }
)

# Request headers worth passing on; everything else the caller sent stays here.
FORWARDED_REQUEST_HEADERS = ("Accept", "Accept-Language", "User-Agent", "X-Request-ID")


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    status: int
    headers: CIMultiDict[str]
    body: bytes
    elapsed_ms: float = 0.0

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def error_code(self, payload: Any = None) -> str | None:
        """Clearout's `error.code` (or HTTP status) when this answer is a failure."""
        payload = self.json() if payload is None else payload
        failed = isinstance(payload, dict) and payload.get("status") == "failed"
        if self.status < 400 and not failed:
            return None
        if failed:
            error = payload.get("error")
            if isinstance(error, dict) and isinstance(error.get("code"), int):
                return str(error["code"])
        return str(self.status)


def response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Upstream headers worth replaying to the caller (hop-by-hop removed)."""
    extra_hop = {
        token.strip().lower()
        for value in upstream.getall("Connection", [])
        for token in value.split(",")
    }
    return CIMultiDict(
        (k, v) for k, v in upstream.items() if k.lower() not in HOP_BY_HOP | extra_hop
    )


class Upstream:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str,
        metrics: Metrics,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._token = token
        self._metrics = metrics

    async def call(
        self,
        route: str,
        method: str,
        path: str,
        *,
        timeout: float,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: Any = None,
        caller_headers: Mapping[str, str] | None = None,
    ) -> UpstreamAnswer:
        headers = {
            name: caller_headers[name]
            for name in FORWARDED_REQUEST_HEADERS
            if caller_headers and name in caller_headers
        }
        headers["Authorization"] = self._token
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if json_body is not None:
            kwargs["data"] = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            kwargs["data"] = data
        client_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0))
        started = time.perf_counter()
        try:
            async with self._session.request(
                method, self._base + path, timeout=client_timeout, **kwargs
            ) as resp:
                body = await resp.read()
                elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
                answer = UpstreamAnswer(
                    resp.status, response_headers(resp.headers), body, elapsed_ms
                )
        except TimeoutError:
            self._record(route, "timeout", "timeout", started)
            raise UpstreamTimeout(
                f"Clearout did not answer within {timeout:.0f} s, try again later"
            ) from None
        except (aiohttp.ClientError, OSError):
            self._record(route, "unreachable", "unreachable", started)
            raise UpstreamUnavailable(
                "Clearout is unreachable from the gateway, try again later"
            ) from None
        self._observe(route, answer, started)
        return answer

    def _observe(self, route: str, answer: UpstreamAnswer, started: float) -> None:
        self._record(route, str(answer.status), answer.error_code(), started)
        remaining = answer.headers.get("x-ratelimit-remaining")
        if remaining is not None and remaining.isdigit():
            self._metrics.upstream_ratelimit_remaining.set(int(remaining))

    def _record(self, route: str, status: str, error_code: str | None, started: float) -> None:
        self._metrics.upstream_requests.labels(route, status).inc()
        self._metrics.upstream_duration.labels(route).observe(time.perf_counter() - started)
        if error_code is not None:
            self._metrics.upstream_errors.labels(route, error_code).inc()


async def open_session(limit: int = 100) -> aiohttp.ClientSession:
    """The shared pooled session (one per app, closed in cleanup)."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ttl_dns_cache=300)
    # No total timeout here: each call sets its own from the caller's timeout.
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        auto_decompress=True,
        raise_for_status=False,
    )
