"""Bulk lists paid only for the people the cache does not know.

An upload becomes a gateway list (`gateway.bulk.lists`): the plan answers
every row whose person the cache knows (`gateway.bulk.plan`), only the
unknown distinct people go upstream as a reduced file (reserved and charged
for them alone), and when upstream's part ends — or at once, when nobody was
unknown — the merge writes every uploaded row with its answer
(`gateway.bulk.merge`) where every replica can serve it
(`gateway.bulk.blobs`), settles the credits from what upstream charged, and
teaches the cache upstream's answers (`gateway.bulk.harvest`).  The list's
upload and pre-answers are kept beside it until then, so whichever replica
sees the end does the merge; a claim makes sure only one does.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import structlog

from gateway.budget import Budgets, Reservation
from gateway.bulk import tables
from gateway.bulk.blobs import BlobStore, fetch
from gateway.bulk.fetch import FETCH_ERRORS, fetch_result
from gateway.bulk.harvest import Harvester
from gateway.bulk.limits import result_limits, upload_limits
from gateway.bulk.lists import GatewayList, ListStore, file_token, new_list_id
from gateway.bulk.merge import Charged, Merger
from gateway.bulk.plan import People, Plan, Planner
from gateway.bulk.results import processed_now
from gateway.bulk.upload import Upload
from gateway.lookup.cache import LookupCache
from gateway.lookup.pricing import Prices, success_data
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.tasks import Tasks
from gateway.teams import Team
from gateway.upstream import Upstream, UpstreamAnswer, local_answer

log = structlog.get_logger("gateway.saver")

CLAIM_MS = 10 * 60 * 1000  # a merge running longer than this is taken over
MERGE_ERRORS = (*FETCH_ERRORS, tables.UnreadableFile)


@asynccontextmanager
async def work_dir(parent: Path) -> AsyncIterator[Path]:
    """A scratch directory on the spool disk, removed after use.

    Made and removed in a worker thread: unlinking a list's databases and
    files takes tens of milliseconds the event loop would otherwise wait.
    """
    path = Path(await asyncio.to_thread(tempfile.mkdtemp, dir=parent))
    try:
        yield path
    finally:
        await asyncio.to_thread(shutil.rmtree, path, True)


def duplicate_file(list_id: str) -> UpstreamAnswer:
    message = "Duplicate file not allowed, set ignore_duplicate_file=true to allow duplicate file"
    error = {"code": 2043, "message": message, "additional_info": {"list_id": list_id}}
    return local_answer({"status": "failed", "error": error})


def created_on(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass
class Saver:
    settings: Settings
    upstream: Upstream
    session: aiohttp.ClientSession
    cache: LookupCache
    budgets: Budgets
    lists: ListStore
    blobs: BlobStore
    harvester: Harvester
    prices: Prices
    metrics: Metrics
    tasks: Tasks

    # ---- upload ------------------------------------------------------------

    async def start(
        self, team: Team, upload: Upload, info: tables.TableInfo, people: People,
        forward: Mapping[str, str] | None,
    ) -> UpstreamAnswer:  # fmt: skip
        """Pre-answer the upload, send on its unknown people; the new list's id."""
        token = file_token(team.name, upload.filename, upload.size)
        again = await self.lists.same_file(token)
        if again is not None and (upload.ignore_duplicate_file or "").lower() != "true":
            return duplicate_file(again)  # as Clearout answers a repeated upload
        async with work_dir(self.settings.spool_dir) as work:
            planner = Planner(
                upload.path, info, people, self._key_of(team), upload_limits(self.settings),
                work, processed_now(),
            )  # fmt: skip
            started = time.perf_counter()
            plan = await planner.plan(self.cache.get_many)
            plan_ms = round((time.perf_counter() - started) * 1000, 1)
            item = self._new_list(team, upload, info, plan)
            item.file_token = token
            price = plan.upstream_people * self.prices.found
            reservation = await self.budgets.reserve(team, price)
            answer = await self._send_unknown(team, upload, plan, item, reservation, forward)
            if answer is not None:
                return answer  # upstream refused the reduced file: its answer, no list
            await self._keep(item, upload, plan)
        await self.lists.remember_file(token, item.list_id, self.settings.bulk_list_ttl)
        self._count(team, item, plan_ms)
        if not item.upstream_list:
            self.tasks.spawn(self.finish(item.list_id), "bulk-merge")
        return local_answer({"status": "success", "data": {"list_id": item.list_id}})

    def _key_of(self, team: Team) -> Callable[[str, str], str]:
        return lambda name, domain: self.cache.key(team.name, name, domain, memoized=False)

    def _new_list(
        self, team: Team, upload: Upload, info: tables.TableInfo, plan: Plan
    ) -> GatewayList:
        return GatewayList(
            list_id=new_list_id(), team=team.name, filename=upload.filename, kind=info.kind,
            delimiter=info.delimiter, bom=info.bom, created_on=created_on(), rows=plan.rows,
            cache_rows=plan.cache_people, upstream_rows=plan.upstream_people,
            duplicate_rows=plan.duplicates, saved_credits=plan.saved_credits,
        )  # fmt: skip

    async def _send_unknown(
        self, team: Team, upload: Upload, plan: Plan, item: GatewayList,
        reservation: Reservation, forward: Mapping[str, str] | None,
    ) -> UpstreamAnswer | None:  # fmt: skip
        """Upload the reduced file; None when it went (or was not needed), else the refusal."""
        item.reservation = reservation.dumps()
        if plan.reduced is None:
            await self.budgets.settle(reservation, 0)
            item.reservation, item.settled = "", True
            return None
        reduced = Upload(upload.filename, upload.content_type, plan.reduced,
                         plan.reduced.stat().st_size, "true")  # fmt: skip
        try:
            answer = await _forward(self.upstream, self.settings, reduced, forward)
        except BaseException:
            await self.budgets.settle(reservation, 0)
            raise
        data = success_data(answer.json())
        upstream_id = data.get("list_id") if data else None
        if isinstance(upstream_id, str):
            item.upstream_list = upstream_id
            return None
        await self.budgets.settle(reservation, 0)
        return answer

    async def _keep(self, item: GatewayList, upload: Upload, plan: Plan) -> None:
        ttl = self.settings.bulk_list_ttl
        await self.blobs.put(f"{item.list_id}.src", upload.path, ttl)
        await self.blobs.put(f"{item.list_id}.known", plan.known, ttl)
        await self.blobs.put(f"{item.list_id}.people", plan.row_people, ttl)
        await self.lists.create(item, ttl)
        await self.budgets.record_owner("list", item.list_id, Team(item.team, ()))

    def _count(self, team: Team, item: GatewayList, plan_ms: float) -> None:
        rows = self.metrics.bulk_rows
        rows.labels(team.name, "cache").inc(item.cache_rows)
        rows.labels(team.name, "upstream").inc(item.upstream_rows)
        rows.labels(team.name, "duplicate").inc(item.duplicate_rows)
        self.metrics.count_saved(team.name, item.saved_credits)
        log.info(
            "bulk_list_started", list_id=item.list_id, rows=item.rows, cache=item.cache_rows,
            upstream=item.upstream_rows, duplicate=item.duplicate_rows,
            saved_credits=item.saved_credits, upstream_list=item.upstream_list or None,
            plan_ms=plan_ms,
        )  # fmt: skip

    # ---- the end of a list -----------------------------------------------------

    async def finish(self, list_id: str) -> bool:
        """Settle, merge and store the result of a list whose upstream part ended; once."""
        if not await self.lists.claim(list_id, CLAIM_MS):
            return False  # another replica (or task) is at it
        try:
            item = await self.lists.get(list_id)
            done = item is None or await self.blobs.exists(f"{list_id}.result")
            if item is None or done:
                return False
            if item.state == "running":
                await self.lists.update(list_id, state="merging")
            await self._finish(item)
        except MERGE_ERRORS as exc:  # upstream's file not to be had yet: the poller retries
            log.warning("bulk_merge_deferred", list_id=list_id, error=str(exc)[:200])
            return False
        else:
            return True
        finally:
            await self.lists.release(list_id)

    async def _finish(self, item: GatewayList) -> None:
        laps = _Laps()
        async with work_dir(self.settings.spool_dir) as work:
            source, known = work / f"source.{item.kind}", work / "known.jsonl"
            await fetch(self.blobs, f"{item.list_id}.src", source)
            await fetch(self.blobs, f"{item.list_id}.known", known)
            people = work / "people.bin"
            has_people = await fetch(self.blobs, f"{item.list_id}.people", people)
            # None for a list planned by an older gateway: the merge keys every row.
            row_people = people if has_people else None
            upstream = await self._upstream_result(item, work)
            laps.lap("fetch_ms")
            kind: tables.FileKind = "xlsx" if item.kind == "xlsx" else "csv"
            header = await asyncio.to_thread(lambda: tables.inspect(source, kind).header)
            info = tables.TableInfo(kind, header, item.delimiter, item.bom)
            columns, _ = tables.find_columns(header)
            merger = Merger(source, info, People.of(columns), self._key_of(Team(item.team, ())),
                            result_limits(self.settings), work)  # fmt: skip
            out = work / f"result.{item.kind}"
            charged = await asyncio.to_thread(merger.merge, known, upstream, out, row_people)
            laps.lap("merge_ms")
            await self._settle(item, charged)
            if upstream is not None:
                await self.harvester.harvest_keyed(merger.harvest_path)
            laps.lap("harvest_ms")
            await self.blobs.put(f"{item.list_id}.result", out, self.settings.bulk_list_ttl)
            laps.lap("store_ms")
        final = "completed" if item.state in ("running", "merging") else item.state
        await self.lists.update(item.list_id, state=final)
        log.info("bulk_list_merged", list_id=item.list_id, state=final, found=charged.found,
                 **laps.times)  # fmt: skip

    async def _upstream_result(self, item: GatewayList, work: Path) -> Path | None:
        if not item.upstream_list:
            return None
        return await fetch_result(
            self.upstream, self.session, self.settings, item.upstream_list, work / "upstream"
        )

    async def _settle(self, item: GatewayList, charged: Charged) -> None:
        if item.settled or not item.reservation:
            return
        prices = self.prices
        actual = (charged.found - charged.roles) * prices.found + charged.roles * prices.role
        await self.budgets.settle(Reservation.loads(item.reservation), actual)
        await self.lists.update(item.list_id, settled=True)
        self.metrics.credits_spent.labels(item.team).inc(actual)


class _Laps:
    """Milliseconds each step of a merge took, for its log line."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = round((now - self._last) * 1000, 1)
        self._last = now


async def _forward(
    upstream: Upstream, settings: Settings, upload: Upload, forward: Mapping[str, str] | None
) -> UpstreamAnswer:
    with upload.path.open("rb") as fh:
        form = aiohttp.FormData()
        # aiohttp streams an open file in chunks; the upload never sits in memory.
        form.add_field("file", fh, filename=upload.filename, content_type=upload.content_type)
        if upload.ignore_duplicate_file is not None:
            form.add_field("ignore_duplicate_file", upload.ignore_duplicate_file)
        return await upstream.call(
            "bulk", "POST", "/email_finder/bulk", data=form, caller_headers=forward,
            timeout=settings.upstream_bulk_timeout,
        )  # fmt: skip
