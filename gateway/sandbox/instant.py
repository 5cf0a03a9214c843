"""The sandbox's instant finder: `instant` and `queue_status`, with Clearout's rate headers.

An instant lookup answers from `gateway.sandbox.people` at once, or after `slow_seconds`,
or times out with 524 and parks the lookup in a queue that `queue_status` reports
`running` until `queue_seconds` have passed; the credits are charged when an address is
handed out.  Every answer carries `X-RateLimit-*` headers from a sliding one-minute window,
and past `rate_limit_per_minute` the call is refused with 429 (code 1030).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque

from aiohttp import web

from gateway import validation
from gateway.lookup.request import InstantRequest
from gateway.sandbox.answers import failed
from gateway.sandbox.people import Outcome, lookup
from gateway.sandbox.state import QueuedLookup, SandboxState, object_id

# What Clearout shows as the limit when the sandbox is configured without one.
UNLIMITED_SHOWN = 10_000


class InstantRoutes:
    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._window: deque[float] = deque()  # monotonic times of the calls let through

    def _rate_headers(self) -> tuple[dict[str, str], bool]:
        now = time.monotonic()
        limit = self.state.config.rate_limit_per_minute
        while self._window and now - self._window[0] >= 60:
            self._window.popleft()
        over = limit is not None and len(self._window) >= limit
        if not over:
            self._window.append(now)
        shown = limit if limit is not None else UNLIMITED_SHOWN
        reset = int(time.time() + (60 - (now - self._window[0]) if self._window else 60))
        headers = {
            "X-RateLimit-Limit": str(shown),
            "X-RateLimit-Remaining": str(max(0, shown - len(self._window))),
            "X-RateLimit-Reset": str(reset),
        }
        return headers, over

    async def instant(self, request: web.Request) -> web.StreamResponse:
        self.state.instant_times.append(time.monotonic())
        headers, over = self._rate_headers()
        if over:
            resp = failed(
                1030,
                "You have reached API rate limit, try calling after a minute or to increase "
                "limit, upgrade plan or reach support",
                status=429,
            )
            resp.headers.update(headers)
            return resp
        try:
            payload = await request.json()
        except ValueError:
            raise validation.not_an_object() from None
        req = validation.instant_request(payload)
        resp = await self._answer(lookup(req.name, req.domain), req)
        resp.headers.update(headers)
        return resp

    async def _answer(self, outcome: Outcome, req: InstantRequest) -> web.Response:
        if outcome.kind == "unsupported":
            return failed(1088, "Unsupported characters in name fields")
        if outcome.kind == "ratelimited":
            return failed(
                1030, "You have reached API rate limit, try calling after a minute", status=429
            )
        if outcome.kind == "nocredits" or self.state.credits < outcome.credits:
            return failed(
                1099, "You do not have sufficient credits for instant email finder", status=402
            )
        if outcome.kind == "unavailable":
            return web.Response(status=503)
        if outcome.queued:
            return self._timed_out(outcome, req)
        if outcome.slow:
            await asyncio.sleep(self.state.config.slow_seconds)
        self.state.credits -= outcome.credits
        return web.json_response({"status": "success", "data": outcome.data})

    def _timed_out(self, outcome: Outcome, req: InstantRequest) -> web.Response:
        """Clearout's 524; with `queue`, the lookup goes on and its id comes back."""
        resource = {"name": req.name, "domain": req.domain, "timeout": req.timeout_ms}
        info = {
            "resource_name": "email_finder",
            "resource_value": json.dumps(resource, separators=(",", ":")),
        }
        if req.queue:
            qid = object_id()
            ready_at = time.monotonic() + self.state.config.queue_seconds
            self.state.queues[qid] = QueuedLookup(outcome, ready_at)
            info["queue_id"] = qid
        body = {
            "status": "failed",
            "error": {"message": "Timeout occurred", "additional_info": info},
        }
        return web.json_response(body, status=524)

    async def queue_status(self, request: web.Request) -> web.Response:
        qid = validation.query_id(dict(request.query), "qid")
        item = self.state.queues.get(qid)
        if item is None:
            return failed(1104, "Invalid queue ID")
        if time.monotonic() < item.ready_at:
            return web.json_response({"status": "success", "data": {"query_status": "running"}})
        if item.outcome.data is None:
            return failed(1104, "Invalid queue ID")
        if not item.charged:
            self.state.credits -= item.outcome.credits
            item.charged = True
        data = {"query_status": "completed", **item.outcome.data}
        return web.json_response({"status": "success", "data": data})
