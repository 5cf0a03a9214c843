"""The upstream account's credit balance, polled for operators (and for teams without a quota).

Every `GATEWAY_CREDITS_POLL_SECONDS` one replica-local call to Clearout's
`getcredits` sets `clearout_gateway_upstream_credits_available`; a failed poll
is counted (`clearout_gateway_credits_poll_errors_total`) and logged, never
fatal.  The latest figure (and the account's `credits.total`, when upstream
sends one) is also what a team without a quota is shown when its Clearout
client asks for its credits; nothing else of the account is kept.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog

from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.upstream.client import Upstream

log = structlog.get_logger("gateway.balance")


def available_credits(payload: object) -> int | float | None:
    """`data.available_credits` of a getcredits answer, when it is a number."""
    data = payload.get("data") if isinstance(payload, dict) else None
    value = data.get("available_credits") if isinstance(data, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def total_credits(payload: object) -> int | float | None:
    """`data.credits.total` of a getcredits answer, when upstream sends it as a number."""
    data = payload.get("data") if isinstance(payload, dict) else None
    credits = data.get("credits") if isinstance(data, dict) else None
    value = credits.get("total") if isinstance(credits, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


@dataclass
class Balance:
    upstream: Upstream
    metrics: Metrics
    timeout: float
    latest: int | float | None = None
    total: int | float | None = None
    # Callers arriving before the first poll share one poll instead of each
    # sending their own.
    _first: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def known(self) -> int | float | None:
        """The latest balance; polled once now when nothing was polled yet (None: it failed)."""
        if self.latest is None:
            async with self._first:
                if self.latest is None:
                    await self.poll_once()
        return self.latest

    async def poll_once(self) -> None:
        try:
            answer = await self.upstream.call(
                "getcredits", "GET", "/email_verify/getcredits", timeout=self.timeout
            )
        except GatewayError as exc:
            self._failed(type(exc).__name__, exc.message)
            return
        payload = answer.json() if answer.status == 200 else None
        value = available_credits(payload)
        if value is None:
            self._failed("unexpected_answer", f"HTTP {answer.status}")
            return
        self.latest, self.total = value, total_credits(payload)
        self.metrics.upstream_credits_available.set(value)

    def _failed(self, error: str, detail: str) -> None:
        self.metrics.credits_poll_errors.inc()
        log.warning("credits_poll_failed", error=error, detail=detail[:200])
