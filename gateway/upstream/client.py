"""The one seam to Clearout: a pooled client session, the token, timeouts, retries, the breaker.

Everything the gateway sends upstream goes through `Upstream.call`, whether
the base URL is the real API, the built-in sandbox or a test's fake server.
It sends only headers it chose (so caller cookies, hop-by-hop headers and the
caller's own Authorization never travel), adds the real token, measures the
call (and notes its time in the current request's facts), and translates
transport failures into the gateway's own errors at this boundary: the rest
of the code never sees an aiohttp client exception.

Retry rules (each retry also needs the shared `RetryBudget` and must fit in
the call's own `timeout`):

* a call that provably never reached Clearout (refused, or timed out while
  connecting) is retried whatever its method: it cannot have been charged;
* an idempotent call (GET: queue_status, progress_status, getcredits) is also
  retried on a timeout, a dropped connection or a 502/503/504;
* a paid POST that may have reached Clearout (instant, bulk upload, download,
  cancel, remove) is never retried: a second send could pay or act twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from gateway import context
from gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from gateway.metrics import Metrics
from gateway.upstream.answer import UpstreamAnswer, forwarded_headers, response_headers
from gateway.upstream.resilience import CircuitBreaker, RetryBudget, backoff_delay

RETRYABLE_STATUSES = frozenset({502, 503, 504})
# Half a second of the caller's time must be left, or a retry could only
# turn a prompt error into a late one.
MIN_TIME_FOR_RETRY = 0.5
# Error codes come from upstream bodies: remember only so many of their series.
MAX_REMEMBERED_SERIES = 256


@dataclass(slots=True)
class _Call:
    route: str
    method: str
    url: str
    params: Mapping[str, str] | None
    body: Any
    timeout: float
    deadline: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    @property
    def replayable(self) -> bool:
        # A body that is a stream (a bulk file) can be sent once only.
        return not isinstance(self.body, aiohttp.FormData)


class _Failed(Exception):
    """One attempt got no answer; `error` is what the caller gets if it is the last."""

    def __init__(self, error: GatewayError, *, sent: bool, permanent: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.sent = sent
        self.permanent = permanent  # a certificate problem does not heal in a second

    def retryable(self, method: str) -> bool:
        return not self.permanent and (not self.sent or method == "GET")


@dataclass
class Resilience:
    """How hard the seam tries: retries (within `budget`) and the breaker."""

    retries: int = 2
    budget: RetryBudget = field(default_factory=RetryBudget)
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(threshold=0))


class Upstream:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str,
        metrics: Metrics,
        resilience: Resilience | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._token = token
        self._metrics = metrics
        resilience = resilience or Resilience()
        self._retries = resilience.retries
        self._budget = resilience.budget
        self.breaker = resilience.breaker
        # Labelled children looked up once: prometheus_client validates the
        # labels and takes a lock on every labels() call.
        self._series: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._errors: dict[tuple[str, str], Any] = {}
        self._circuit_shown: int | None = None

    async def call(  # noqa: PLR0913 - the seam's one entry point: each part of a request
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
        """One upstream call, retried per the module's rules; the answer or a GatewayError."""
        body = orjson.dumps(json_body) if json_body is not None else data
        call = _Call(route, method, self._base + path, params, body, timeout)
        call.headers.update(forwarded_headers(caller_headers))
        call.headers["Authorization"] = self._token
        if json_body is not None:
            call.headers["Content-Type"] = "application/json"
        self._budget.record_call()
        attempt = 0
        while True:
            answer, failure = await self._attempt(call)
            if not self._retry(call, answer, failure, attempt):
                if failure is not None:
                    raise failure.error from None
                assert answer is not None
                context.note_upstream_ms(answer.elapsed_ms)
                return answer
            attempt += 1
            self._metrics.upstream_retries.labels(route).inc()
            await asyncio.sleep(min(backoff_delay(attempt), call.deadline - time.monotonic()))

    def _retry(
        self, call: _Call, answer: UpstreamAnswer | None, failure: _Failed | None, attempt: int
    ) -> bool:
        if failure is not None:
            retryable = failure.retryable(call.method)
        else:
            assert answer is not None
            retryable = call.method == "GET" and answer.status in RETRYABLE_STATUSES
        return (
            retryable
            and call.replayable
            and attempt < self._retries
            and call.deadline - time.monotonic() > MIN_TIME_FOR_RETRY
            and self._budget.try_spend()
        )

    async def _attempt(self, call: _Call) -> tuple[UpstreamAnswer | None, _Failed | None]:
        """One send through the breaker: the answer, or why there is none."""
        probe = self._admit()
        try:
            answer = await self._send(call)
        except _Failed as failed:
            self._judge(probe, ok=False)
            return None, failed
        except BaseException:
            self.breaker.abandoned(probe)
            raise
        self._judge(probe, ok=answer.status < 500 or answer.status == 524)
        return answer, None

    def _admit(self) -> bool:
        try:
            return self.breaker.admit()
        finally:
            self._show_circuit()

    def _judge(self, probe: bool, *, ok: bool) -> None:
        if ok:
            self.breaker.succeeded(probe)
        else:
            self.breaker.failed(probe)
        self._show_circuit()

    def _show_circuit(self) -> None:
        is_open = int(self.breaker.is_open)
        if is_open != self._circuit_shown:
            self._metrics.upstream_circuit_open.set(is_open)
            self._circuit_shown = is_open

    async def _send(self, call: _Call) -> UpstreamAnswer:
        left = max(0.001, call.deadline - time.monotonic())
        timeout = aiohttp.ClientTimeout(total=left, sock_connect=min(left, 10.0))
        started = time.perf_counter()
        try:
            async with self._session.request(
                call.method, call.url, params=call.params, headers=call.headers,
                data=call.body, timeout=timeout,
            ) as resp:  # fmt: skip
                body = await resp.read()
                elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
                answer = UpstreamAnswer(
                    resp.status, response_headers(resp.headers), body, elapsed_ms
                )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Refused, reset or timed out while connecting: nothing was sent.
            self._record(call.route, "unreachable", "unreachable", started)
            ssl = isinstance(exc, aiohttp.ClientSSLError)
            raise _Failed(_unreachable(), sent=False, permanent=ssl) from None
        except TimeoutError:
            self._record(call.route, "timeout", "timeout", started)
            message = f"Clearout did not answer within {call.timeout:.0f} s, try again later"
            raise _Failed(UpstreamTimeout(message), sent=True) from None
        except (aiohttp.ClientError, OSError):
            self._record(call.route, "unreachable", "unreachable", started)
            raise _Failed(_unreachable(), sent=True) from None
        self._observe(call.route, answer, started)
        return answer

    def _observe(self, route: str, answer: UpstreamAnswer, started: float) -> None:
        self._record(route, str(answer.status), answer.error_code(), started)
        remaining = answer.headers.get("x-ratelimit-remaining")
        if remaining is not None and remaining.isdigit():
            self._metrics.upstream_ratelimit_remaining.set(int(remaining))

    def _record(self, route: str, status: str, error_code: str | None, started: float) -> None:
        series = self._series.get((route, status))
        if series is None:
            m = self._metrics
            series = (m.upstream_requests.labels(route, status), m.upstream_duration.labels(route))
            self._series[route, status] = series
        series[0].inc()
        series[1].observe(time.perf_counter() - started)
        if error_code is not None:
            errors = self._errors.get((route, error_code))
            if errors is None:
                errors = self._metrics.upstream_errors.labels(route, error_code)
                if len(self._errors) < MAX_REMEMBERED_SERIES:
                    self._errors[route, error_code] = errors
            errors.inc()


def _unreachable() -> UpstreamUnavailable:
    return UpstreamUnavailable("Clearout is unreachable from the gateway, try again later")


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
