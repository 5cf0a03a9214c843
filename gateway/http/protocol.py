"""The HTTP connection layer: aiohttp's protocol with a header deadline and envelope errors.

aiohttp parses each connection's bytes into requests before any handler
runs, so two duties cannot live in a handler or middleware:

* **A header deadline.**  aiohttp bounds an idle keep-alive connection
  (`keepalive_timeout`) but not a request whose headers trickle in a byte at
  a time (slow-loris): such a connection would be held for good.  Here the
  first byte of a request's head starts a timer of GATEWAY_HEADER_TIMEOUT_SECONDS;
  if the head is not complete by then the connection is closed.
* **Parse errors in the envelope.**  A malformed request line, header or
  chunked body is answered by aiohttp itself in plain text (echoing part of
  the input) and logged with a traceback.  Here it is answered in the
  Clearout envelope (400 `bad_request`, 431 `headers_too_large`), counted
  in the request metrics as route `other`, and logged as one info line.

`GatewayRunner` is `web.AppRunner` building its server with this protocol;
the CLI and the tests both run the app through it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from gateway.errors import BadRequest, GatewayError, HeadersTooLarge
from gateway.http.endpoint import new_request_id
from gateway.http.keys import METRICS
from gateway.http.responses import error_response
from gateway.metrics import NO_TEAM, Metrics
from gateway.settings import Settings

log = structlog.get_logger("gateway.http")


class GatewayProtocol(RequestHandler):
    """One client connection (aiohttp's `RequestHandler` plus the duties above)."""

    def __init__(
        self, manager: GatewayServer, *, header_timeout: float, metrics: Metrics, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._metrics = metrics
        self._header_deadline: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        # Bytes that arrive while no request is queued or being handled are a
        # new request's head; the deadline runs from the first of them.
        waiting_for_head = not self._messages and self._current_request is None
        super().data_received(data)
        if self._messages or self._current_request is not None:
            self._cancel_header_deadline()
        elif data and waiting_for_head and self._header_deadline is None and self._timed:
            self._header_deadline = self._loop.call_later(
                self._header_timeout, self._head_too_slow
            )

    @property
    def _timed(self) -> bool:
        return self._header_timeout > 0 and self.transport is not None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _head_too_slow(self) -> None:
        self._header_deadline = None
        if self._messages or self._current_request is not None:
            return
        self._metrics.connections_closed.labels("header_timeout").inc()
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        error: GatewayError
        if isinstance(exc, LineTooLong) or "Too many headers" in str(message or ""):
            error = HeadersTooLarge("The request line or its headers are too large")
        elif status == 400:
            error = BadRequest("The request is not valid HTTP")
        else:
            error = GatewayError("Internal gateway error")
            error.status = status
        if request.writer.output_size > 0:
            # Part of an answer is out already: there is no way to send another.
            raise ConnectionError("response already started")
        log.info(
            "bad_http_request", status=error.status, reason=error.reason, error=type(exc).__name__
        )
        self._metrics.observe_request("other", NO_TEAM, error.status, 0.0)
        response = error_response(error)
        # The head did not parse, so the caller's own id is not to be trusted.
        response.headers["X-Request-ID"] = new_request_id()
        response.force_close()
        return response


class GatewayServer(web.Server):
    """aiohttp's low-level server, making `GatewayProtocol` connections."""

    def __init__(self, *args: Any, header_timeout: float, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._metrics = metrics

    def __call__(self) -> RequestHandler:
        return GatewayProtocol(
            self,
            loop=self._loop,
            header_timeout=self._header_timeout,
            metrics=self._metrics,
            **self._kwargs,
        )


class GatewayRunner(web.AppRunner):
    """`web.AppRunner` serving the app through `GatewayServer`."""

    def __init__(
        self, app: web.Application, *, header_timeout: float, metrics: Metrics, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout
        self._metrics = metrics

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        # Rebuilt with the same handler, factory and arguments aiohttp chose.
        return GatewayServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            header_timeout=self._header_timeout,
            metrics=self._metrics,
            **plain._kwargs,
        )


def make_runner(app: web.Application, settings: Settings, **kwargs: Any) -> GatewayRunner:
    """The runner the CLI and the tests serve the app with."""
    return GatewayRunner(
        app,
        header_timeout=settings.header_timeout,
        metrics=app[METRICS],
        access_log=None,
        keepalive_timeout=settings.keepalive_timeout,
        # After an early answer (413, 408) aiohttp reads and drops what is
        # left of the body for this long before closing; keep it short.
        lingering_time=2.0,
        **kwargs,
    )
