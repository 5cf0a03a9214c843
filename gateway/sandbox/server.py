"""The sandbox upstream: a Clearout-compatible HTTP server with scripted answers.

It serves the seven finder routes and `getcredits` under `/v2`, exactly as
documented upstream (status codes, envelopes, Joi validation shapes), with
deterministic answers per `gateway.sandbox.people`.  It is a real aiohttp
application: `GATEWAY_SANDBOX=1` runs it on an internal loopback port and
points the gateway's upstream seam at it, and the test suite runs it on its
own port as the upstream.  Nothing here is reachable from the gateway code
except over HTTP, so the sandbox exercises the same path as the real API.

This module owns the app: `Sandbox` is the shared state (`gateway.sandbox.state`)
with the route families wired in (`instant`, `lists`, `results`), one middleware
that checks the token and counts calls, and one that answers every
`ValidationFailed` a handler raises in Clearout's validation shape.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.errors import ValidationFailed
from gateway.sandbox.answers import failed, validation_failed
from gateway.sandbox.instant import InstantRoutes
from gateway.sandbox.lists import ListRoutes
from gateway.sandbox.results import ResultFiles
from gateway.sandbox.state import SandboxConfig, SandboxState

__all__ = ["Sandbox", "SandboxConfig"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FINDER = "/v2/email_finder/"
RESULTS = "/sandbox/results/"


class Sandbox(SandboxState):
    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config)
        self._instant = InstantRoutes(self)
        self._results = ResultFiles(self)
        self._lists = ListRoutes(self, self._results)

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth_and_count, _validation_errors])
        instant, lists = self._instant, self._lists
        app.router.add_post(FINDER + "instant", instant.instant)
        app.router.add_get(FINDER + "instant/queue_status", instant.queue_status)
        app.router.add_post(FINDER + "bulk", lists.bulk)
        app.router.add_get(FINDER + "bulk/progress_status", lists.progress)
        app.router.add_post(FINDER + "download/result", lists.download)
        app.router.add_post(FINDER + "list/cancel", lists.cancel)
        app.router.add_post(FINDER + "list/remove", lists.remove)
        app.router.add_get("/v2/email_verify/getcredits", self.getcredits)
        app.router.add_get(RESULTS + "{list_id}/{filename}", self.serve_result)
        app.on_cleanup.append(self._cleanup)
        return app

    def calls_to(self, route: str) -> int:
        return self.calls.get(FINDER + route, 0)

    async def serve_result(self, request: web.Request) -> web.StreamResponse:
        """A result file behind its signed link (the gateway serves these links itself)."""
        return await self._results.serve(request)

    async def getcredits(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": {"available_credits": self.credits}})

    async def _cleanup(self, _app: web.Application) -> None:
        for item in self.lists.values():
            item.path.unlink(missing_ok=True)

    @web.middleware
    async def _auth_and_count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.calls[request.path] = self.calls.get(request.path, 0) + 1
        if request.path.startswith(RESULTS):
            return await handler(request)  # presigned: the signature is the credential
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(presented.encode(), self.config.token.encode()):
            return failed(1000, "Invalid API Token, please generate new token", status=401)
        if self.config.latency:
            await asyncio.sleep(self.config.latency)
        return await handler(request)


@web.middleware
async def _validation_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Handlers raise ValidationFailed; Clearout answers it 400 in its Joi shape."""
    try:
        return await handler(request)
    except ValidationFailed as exc:
        return validation_failed(exc)
