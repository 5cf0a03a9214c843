"""The one seam to Clearout: a pooled client session, token injection, timeouts.

Everything the gateway sends upstream goes through `Upstream.call`, whether
the base URL is the real API, the built-in sandbox or a test's fake server.
It sends only headers it chose (so caller cookies, hop-by-hop headers and the
caller's own Authorization never travel), adds the real token, measures the
call, and translates transport failures into the gateway's own errors at this
boundary: the rest of the code never sees an aiohttp client exception.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from gateway.metrics import Metrics
from gateway.resilience import CircuitBreaker, RetryBudget, backoff_delay

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


RETRYABLE_STATUSES = frozenset({502, 503, 504})
ssl_errors = (aiohttp.ClientSSLError,)


def forwarded_headers(caller_headers: Mapping[str, str] | None) -> dict[str, str]:
    """The caller headers worth passing on, when their values are plain printable ASCII.

    A value with raw bytes or control characters is dropped rather than
    forwarded: it could not be sent as is, and it is never needed upstream.
    """
    if not caller_headers:
        return {}
    out = {}
    for name in FORWARDED_REQUEST_HEADERS:
        value = caller_headers.get(name)
        if value is not None and value.isascii() and value.isprintable():
            out[name] = value
    return out


@dataclass(slots=True)
class _Request:
    method: str
    url: str
    params: Mapping[str, str] | None
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def _body(json_body: Any, data: Any) -> Any:
    if json_body is not None:
        return json.dumps(json_body).encode()
    return data


class _Failed(Exception):
    """One attempt failed without an answer; `error` is what the caller gets."""

    def __init__(self, error: GatewayError, *, sent: bool, ssl: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.sent = sent
        self.ssl = ssl

    def retryable(self, method: str) -> bool:
        if self.ssl:
            return False  # a certificate problem does not heal in a second
        return not self.sent or method == "GET"


def _unreachable() -> UpstreamUnavailable:
    return UpstreamUnavailable("Clearout is unreachable from the gateway, try again later")


class Upstream:
    """Calls to Clearout with the real token, retries where safe, and a breaker.

    Retry rules (each retry also needs the shared `RetryBudget` and must fit
    in the call's own `timeout`):

    * a call that provably never reached Clearout (the connection was
      refused, reset or timed out before the request was written) is retried
      whatever its method: it cannot have been charged;
    * an idempotent call (GET: queue_status, progress_status, getcredits) is
      also retried on a timeout, a dropped connection or a 502/503/504;
    * a paid POST that may have reached Clearout (instant, bulk upload,
      download, cancel, remove) is never retried: a second send could pay
      twice or act twice.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str,
        metrics: Metrics,
        *,
        retries: int = 2,
        budget: RetryBudget | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._token = token
        self._metrics = metrics
        self._retries = retries
        self._budget = budget or RetryBudget()
        self.breaker = breaker or CircuitBreaker(threshold=0)

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
        request = _Request(method, self._base + path, params, _body(json_body, data))
        request.headers.update(forwarded_headers(caller_headers))
        request.headers["Authorization"] = self._token
        if json_body is not None:
            request.headers["Content-Type"] = "application/json"
        # A body that is a stream (a bulk file) can be sent once only.
        replayable = data is None
        deadline = time.monotonic() + timeout
        self._budget.record_call()
        attempt = 0
        while True:
            probe = self._admit()
            try:
                answer = await self._attempt(route, request, deadline, timeout)
            except _Failed as failed:
                self._judge(probe, ok=False)
                if not self._may_retry(failed.retryable(method), replayable, attempt, deadline):
                    raise failed.error from None
            except BaseException:
                self.breaker.abandoned(probe)
                raise
            else:
                ok = answer.status < 500 or answer.status == 524
                self._judge(probe, ok=ok)
                retry = not ok and method == "GET" and answer.status in RETRYABLE_STATUSES
                if not (retry and self._may_retry(True, replayable, attempt, deadline)):
                    return answer
            attempt += 1
            self._metrics.upstream_retries.labels(route).inc()
            await asyncio.sleep(min(backoff_delay(attempt), max(0.0, deadline - time.monotonic())))

    def _admit(self) -> bool:
        try:
            return self.breaker.admit()
        finally:
            self._metrics.upstream_circuit_open.set(int(self.breaker.is_open))

    def _judge(self, probe: bool, *, ok: bool) -> None:
        if ok:
            self.breaker.succeeded(probe)
        else:
            self.breaker.failed(probe)
        self._metrics.upstream_circuit_open.set(int(self.breaker.is_open))

    def _may_retry(self, retryable: bool, replayable: bool, attempt: int, deadline: float) -> bool:
        # Half a second of the caller's time must be left, or a retry could
        # only turn a prompt error into a late one.
        return (
            retryable
            and replayable
            and attempt < self._retries
            and deadline - time.monotonic() > 0.5
            and self._budget.try_spend()
        )

    async def _attempt(
        self, route: str, request: _Request, deadline: float, timeout: float
    ) -> UpstreamAnswer:
        left = max(0.001, deadline - time.monotonic())
        client_timeout = aiohttp.ClientTimeout(total=left, sock_connect=min(left, 10.0))
        started = time.perf_counter()
        try:
            async with self._session.request(
                request.method, request.url, params=request.params, headers=request.headers,
                data=request.body, timeout=client_timeout,
            ) as resp:  # fmt: skip
                body = await resp.read()
                elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
                answer = UpstreamAnswer(
                    resp.status, response_headers(resp.headers), body, elapsed_ms
                )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Refused, reset or timed out while connecting: nothing was sent.
            self._record(route, "unreachable", "unreachable", started)
            raise _Failed(_unreachable(), sent=False, ssl=isinstance(exc, ssl_errors)) from None
        except TimeoutError:
            self._record(route, "timeout", "timeout", started)
            raise _Failed(
                UpstreamTimeout(f"Clearout did not answer within {timeout:.0f} s, try again later"),
                sent=True,
            ) from None
        except (aiohttp.ClientError, OSError):
            self._record(route, "unreachable", "unreachable", started)
            raise _Failed(_unreachable(), sent=True) from None
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
