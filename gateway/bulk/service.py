"""The bulk list service: upload, progress, result download, cancel and remove, per team.

Every list id is tied to the team that uploaded it; any other team naming it
gets the upstream's own answer for an unknown list, without an upstream
call.  An upload is bounded before it is sent on (`inspect_upload`: rows and
inflated size), reserves the found-address price for each distinct row of a
team with a quota, and the reservation is settled from the result file
(`gateway.bulk.settlement`).  Like the instant service it takes and returns
plain values: the HTTP handlers only parse and render.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.budget import Budgets, foreign_id_answer, limited
from gateway.bulk import tables
from gateway.bulk.settlement import ListSettler
from gateway.bulk.upload import Upload
from gateway.errors import PayloadTooLarge
from gateway.lookup.pricing import success_data
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


def limits(settings: Settings) -> tables.Limits:
    return tables.Limits(max_rows=settings.max_bulk_rows)


@dataclass
class BulkLists:
    settings: Settings
    upstream: Upstream
    budgets: Budgets
    settler: ListSettler

    async def upload(
        self, team: Team, upload: Upload, forward: Mapping[str, str] | None = None
    ) -> UpstreamAnswer:
        """Bound, reserve, forward; the upstream's answer (with a list id the team owns)."""
        try:
            rows = await self._distinct_rows(team, upload)
        except tables.TableTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        except tables.UnreadableFile:
            # What Clearout answers for a file it cannot read; sending it on
            # unread could not be reserved for, and would be refused anyway.
            return INVALID_FILE
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

    async def _distinct_rows(self, team: Team, upload: Upload) -> int:
        """The rows to reserve for (0 for a team without a quota), after the file's bounds."""
        kind = tables.file_kind(upload.filename)
        if kind is None:
            return 0  # upstream refuses the file type itself (1100)
        bounds = limits(self.settings)
        if not limited(team):
            await asyncio.to_thread(tables.check_bounds, upload.path, kind, bounds)
            return 0
        return await asyncio.to_thread(
            tables.count_distinct_rows, upload.path, kind,
            limits=bounds, spill_dir=self.settings.spool_dir,
        )  # fmt: skip

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

    async def progress(
        self, team: Team, list_id: str, forward: Mapping[str, str] | None = None
    ) -> UpstreamAnswer:
        if not await self.budgets.may_use("list", list_id, team):
            return foreign_id_answer("progress_status")
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
        forward: Mapping[str, str] | None = None,
    ) -> UpstreamAnswer:  # fmt: skip
        """download_result, list_cancel or list_remove on a list of `team`."""
        if not await self.budgets.may_use("list", list_id, team):
            return foreign_id_answer(route)
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


def _duplicate_of(answer: UpstreamAnswer) -> str | None:
    payload = answer.json()
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict) or error.get("code") != 2043:
        return None
    info = error.get("additional_info")
    list_id = info.get("list_id") if isinstance(info, dict) else None
    return list_id if isinstance(list_id, str) else None

