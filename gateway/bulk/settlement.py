"""Settling a bulk list's credit reservation from its result file.

A bulk upload reserved the found-address price for every distinct row.  When
the list completes or is cancelled, the gateway asks upstream for the result
link, downloads the file (to the spool, never into memory), counts the rows
with an address (role addresses at the role price) and settles the
reservation to that.  Triggers: a caller seeing `completed` in
`progress_status`, a successful cancel, a remove (settled first, while the
result still exists), and the background poller for lists nobody asks about.

If the result cannot be read yet, the reservation is put back and tried
again later: credits are never released on a guess.  (Side effect worth
knowing: the gateway's own download counts as "downloaded" upstream, so a
later remove needs no `ignore_result`.)
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import structlog

from gateway.budget.budgets import Budgets
from gateway.budget.credits import Reservation
from gateway.bulk import tables
from gateway.bulk.fetch import FETCH_ERRORS, fetch_result
from gateway.bulk.harvest import Harvester
from gateway.bulk.limits import result_limits
from gateway.bulk.merge import result_kind
from gateway.bulk.pending import PendingLists
from gateway.lookup.pricing import Prices, success_data
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.tasks import Tasks
from gateway.upstream import Upstream

log = structlog.get_logger("gateway.bulk.settlement")

LIST_RESERVATION_TTL = 30 * 24 * 3600


# Why a result file could not be read now (the settlement is tried again later).
RESULT_ERRORS = (*FETCH_ERRORS, tables.UnreadableFile)


@dataclass
class ListSettler:
    settings: Settings
    upstream: Upstream
    session: aiohttp.ClientSession
    pending: PendingLists
    budgets: Budgets
    prices: Prices
    metrics: Metrics
    tasks: Tasks
    harvester: Harvester
    # The team whose cache keys a list's rows fill (team scope); "" for shared.
    owner_of: Callable[[str], str] = lambda _list_id: ""

    async def hold(self, list_id: str, reservation: Reservation) -> None:
        # Held even when it reserves nothing (a team without a quota, or the
        # `allow` policy during an outage): settling it is what counts the
        # list's spend in credits_spent_total, exactly once.
        await self.pending.add(list_id, reservation, LIST_RESERVATION_TTL)

    def settle_soon(self, list_id: str) -> None:
        """Settle in the background (the caller's answer does not wait for it)."""
        self.tasks.spawn(self.settle(list_id), "list-settlement")

    async def settle(self, list_id: str) -> bool:
        reservation = await self.pending.take(list_id)
        if reservation is None:
            return False  # settled already, by us or another replica
        try:
            found, roles = await self._count_results(list_id)
        except RESULT_ERRORS as exc:  # not readable yet: keep the credits held
            await self.pending.add(list_id, reservation, LIST_RESERVATION_TTL)
            log.warning("list_settlement_deferred", list_id=list_id, error=str(exc)[:200])
            return False
        actual = (found - roles) * self.prices.found + roles * self.prices.role
        await self.budgets.settle(reservation, actual)
        self.metrics.credits_spent.labels(reservation.team).inc(actual)
        log.info(
            "list_settled", list_id=list_id, team=reservation.team, found=found,
            reserved=reservation.amount, charged=actual,
        )  # fmt: skip
        return True

    async def poll_once(self, limit: int = 20) -> None:
        """Settle pending lists that finished without anyone asking."""
        for list_id in await self.pending.pending(limit):
            answer = await self.upstream.call(
                "progress_status", "GET", "/email_finder/bulk/progress_status",
                params={"list_id": list_id}, timeout=self.settings.upstream_timeout,
            )  # fmt: skip
            data = success_data(answer.json())
            if data and data.get("progress_status") in ("completed", "cancelled"):
                await self.settle(list_id)

    async def _count_results(self, list_id: str) -> tuple[int, int]:
        """(found, role) rows of the list's result file, which also fills the cache."""
        with tempfile.TemporaryDirectory(dir=self.settings.spool_dir) as work:
            path = await fetch_result(
                self.upstream, self.session, self.settings, list_id, Path(work) / "result"
            )
            counts = await asyncio.to_thread(
                tables.count_found, path, result_kind(path), limits=result_limits(self.settings)
            )
            harvested = await self.harvester.harvest(path, self.owner_of(list_id))
            log.info("list_harvested", list_id=list_id, imported=harvested.imported)
            return counts
