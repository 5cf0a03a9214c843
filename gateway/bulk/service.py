"""The bulk list service: upload, progress, result download, cancel and remove, per team.

Every list id is tied to the team that uploaded it; any other team naming it
gets the upstream's own answer for an unknown list, without an upstream
call.  An upload is bounded first (rows, size, inflated size: 413 beyond
them, Clearout's 1100 for a file that cannot be read).  Then, unless the
caller sent `X-Gateway-Cache: bypass` (or its team has `bulk_cache: false`),
it becomes a gateway list answered from the cache where it can be
(`gateway.bulk.saver`, `gateway.bulk.actions`); otherwise it goes to Clearout
untouched, reserving the found price per distinct row for a team with a
quota and settling from the result file (`gateway.bulk.settlement`).  Like
the instant service it takes and returns plain values.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from gateway.budget import Budgets, foreign_id_answer, limited
from gateway.bulk import tables
from gateway.bulk.actions import ListActions, result_filename
from gateway.bulk.blobs import BlobStore
from gateway.bulk.harvest import Harvested, Harvester
from gateway.bulk.limits import upload_limits
from gateway.bulk.links import Links
from gateway.bulk.lists import GatewayList, ListStore
from gateway.bulk.plan import People
from gateway.bulk.saver import Saver
from gateway.bulk.settlement import ListSettler
from gateway.bulk.upload import Upload
from gateway.bulk.writers import media_type
from gateway.errors import PayloadTooLarge
from gateway.lookup.pricing import success_data
from gateway.lookup.request import CacheMode
from gateway.settings import Settings
from gateway.teams import Team
from gateway.upstream import Upstream, UpstreamAnswer, local_answer

INVALID_FILE = local_answer(
    {"status": "failed", "error": {"code": 1100, "message": "Invalid file type"}}
)
LIST_PATHS = {
    "download_result": "/email_finder/download/result",
    "list_cancel": "/email_finder/list/cancel",
    "list_remove": "/email_finder/list/remove",
}
POLL_BATCH = 20


@dataclass
class ResultFile:
    """A merged result ready to stream: its name, media type and chunks."""

    filename: str
    media_type: str
    chunks: AsyncIterator[bytes]


@dataclass
class BulkLists:
    settings: Settings
    upstream: Upstream
    budgets: Budgets
    settler: ListSettler
    saver: Saver
    actions: ListActions
    lists: ListStore
    blobs: BlobStore
    links: Links
    harvester: Harvester

    async def upload(
        self, team: Team, upload: Upload, forward: Mapping[str, str] | None = None,
        mode: CacheMode = "normal",
    ) -> UpstreamAnswer:  # fmt: skip
        """A new list's id (the gateway's own, or upstream's when sent on untouched)."""
        kind = tables.file_kind(upload.filename)
        try:
            info = await asyncio.to_thread(self._inspect, upload, kind) if kind else None
            columns, missing = tables.find_columns(info.header) if info else ({}, "unknown kind")
            if info is None or missing or mode == "bypass" or not team.bulk_cache:
                return await self._send_whole(team, upload, kind, forward)
            return await self.saver.start(team, upload, info, People.of(columns), forward)
        except tables.TableTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        except tables.UnreadableFile:
            # What Clearout answers for a file it cannot read; sending it on
            # unread could not be reserved for, and would be refused anyway.
            return INVALID_FILE

    def _inspect(self, upload: Upload, kind: tables.FileKind) -> tables.TableInfo:
        limits = upload_limits(self.settings)
        tables.check_bounds(upload.path, kind, limits)
        return tables.inspect(upload.path, kind, limits=limits)

    async def _send_whole(
        self, team: Team, upload: Upload, kind: tables.FileKind | None,
        forward: Mapping[str, str] | None,
    ) -> UpstreamAnswer:  # fmt: skip
        rows = 0
        if kind is not None and limited(team):
            rows = await asyncio.to_thread(
                tables.count_distinct_rows, upload.path, kind,
                limits=upload_limits(self.settings), spill_dir=self.settings.spool_dir,
            )  # fmt: skip
        reservation = await self.budgets.reserve(team, rows * self.settings.price_found)
        held = False
        try:
            answer = await self._forward_owned(team, upload, forward)
            data = success_data(answer.json())
            list_id = data.get("list_id") if data else None
            if isinstance(list_id, str):
                await self.budgets.record_owner("list", list_id, team)
                await self.settler.hold(list_id, reservation)
                held = True
            return answer
        finally:
            if not held:
                await self.budgets.settle(reservation, 0)

    async def _forward_owned(
        self, team: Team, upload: Upload, forward: Mapping[str, str] | None
    ) -> UpstreamAnswer:
        answer = await self._forward(upload, upload.ignore_duplicate_file, forward)
        duplicate = _duplicate_of(answer)
        if duplicate is not None and not await self.budgets.may_use("list", duplicate, team):
            # Upstream matched another team's upload: naming that list would
            # reveal it.  Upload anew, as the caller would with the flag.
            answer = await self._forward(upload, "true", forward)
        return answer

    async def _forward(
        self, upload: Upload, ignore_duplicate: str | None, forward: Mapping[str, str] | None
    ) -> UpstreamAnswer:
        with upload.path.open("rb") as fh:
            form = aiohttp.FormData()
            # aiohttp streams an open file in chunks; the upload never sits in memory.
            form.add_field("file", fh, filename=upload.filename, content_type=upload.content_type)
            if ignore_duplicate is not None:
                form.add_field("ignore_duplicate_file", ignore_duplicate)
            return await self.upstream.call(
                "bulk", "POST", "/email_finder/bulk", data=form, caller_headers=forward,
                timeout=self.settings.upstream_bulk_timeout,
            )  # fmt: skip

    async def _own_list(
        self, team: Team, route: str, list_id: str
    ) -> GatewayList | UpstreamAnswer | None:
        """The team's gateway list, None for an upstream list of its own, else the refusal."""
        if not await self.budgets.may_use("list", list_id, team):
            return foreign_id_answer(route)
        return await self.lists.get(list_id)

    async def progress(
        self, team: Team, list_id: str, forward: Mapping[str, str] | None = None
    ) -> UpstreamAnswer:
        found = await self._own_list(team, "progress_status", list_id)
        if isinstance(found, UpstreamAnswer):
            return found
        if found is not None:
            return await self.actions.progress(found, forward)
        answer = await self.upstream.call(
            "progress_status", "GET", "/email_finder/bulk/progress_status",
            params={"list_id": list_id}, caller_headers=forward,
            timeout=self.settings.upstream_timeout,
        )  # fmt: skip
        data = success_data(answer.json())
        if data and data.get("progress_status") in ("completed", "cancelled"):
            self.settler.settle_soon(list_id)
        return answer

    async def act(
        self, team: Team, route: str, list_id: str, payload: Any,
        forward: Mapping[str, str] | None = None, origin: str = "",
    ) -> UpstreamAnswer:  # fmt: skip
        """download_result, list_cancel or list_remove on a list of `team`."""
        found = await self._own_list(team, route, list_id)
        if isinstance(found, UpstreamAnswer):
            return found
        if found is not None:
            if route == "download_result":
                return await self.actions.download(found, origin, forward)
            if route == "list_cancel":
                return await self.actions.cancel(found, forward)
            answer = await self.actions.remove(found, payload, forward)
            if success_data(answer.json()) is not None:
                await self.budgets.forget("list", list_id)
            return answer
        return await self._act_upstream(route, list_id, payload, forward)

    async def _act_upstream(
        self, route: str, list_id: str, payload: Any, forward: Mapping[str, str] | None
    ) -> UpstreamAnswer:
        if route == "list_remove":
            # Settle while the result file still exists upstream.
            await self.settler.settle(list_id)
        answer = await self.upstream.call(
            route, "POST", LIST_PATHS[route], json_body=payload, caller_headers=forward,
            timeout=self.settings.upstream_timeout,
        )  # fmt: skip
        if success_data(answer.json()) is not None:
            if route == "list_cancel":
                self.settler.settle_soon(list_id)
            elif route == "list_remove":
                await self.budgets.forget("list", list_id)
        return answer

    async def result_file(self, list_id: str, expires: str, signature: str) -> ResultFile | None:
        """The merged result behind a signed link; None when the link or the list is not."""
        if not self.links.valid(list_id, expires, signature):
            return None
        item = await self.lists.get(list_id)
        if item is None or not await self.blobs.exists(f"{list_id}.result"):
            return None
        info = tables.TableInfo(item.kind, (), item.delimiter, item.bom)  # type: ignore[arg-type]  # kind is csv|xlsx
        chunks = self.blobs.read(f"{list_id}.result")
        return ResultFile(result_filename(item), media_type(info), chunks)

    async def import_results(self, path: Path, team: str = "") -> Harvested:
        """Fill the cache from a past result file (an operator's warm start)."""
        return await self.harvester.harvest(path, team)

    async def poll_once(self) -> None:
        """Move on lists nobody asks about: gateway lists, then upstream ones to settle."""
        for list_id in await self.lists.running(POLL_BATCH):
            item = await self.lists.get(list_id)
            if item is not None:
                await self.actions.progress(item, None)
        await self.settler.poll_once()


def _duplicate_of(answer: UpstreamAnswer) -> str | None:
    payload = answer.json()
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict) or error.get("code") != 2043:
        return None
    info = error.get("additional_info")
    list_id = info.get("list_id") if isinstance(info, dict) else None
    return list_id if isinstance(list_id, str) else None
