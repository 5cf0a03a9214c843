"""The list routes on a gateway list: progress, result download, cancel, remove.

Each answers in Clearout's documented shapes and codes, combining the
gateway's part of the list (answered at upload) with the upstream list of its
unknown people: progress counts the known rows as done and upstream's
percentage for the rest; a cancelled or failed upstream part is reported as
upstream reported it, and merged with what it did answer.  The result link is
the gateway's own (`gateway.bulk.links`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import validation
from gateway.bulk.blobs import BlobStore
from gateway.bulk.links import Links
from gateway.bulk.lists import GatewayList, ListStore
from gateway.bulk.saver import Saver
from gateway.lookup.pricing import success_data
from gateway.settings import Settings
from gateway.tasks import Tasks
from gateway.upstream import Upstream, UpstreamAnswer, local_answer

RUNNING = ("running", "merging")
# A progress call waits this long for a list's merge before answering 99%:
# small lists answer `completed` at once, big ones do not hold the caller.
MERGE_WAIT_SECONDS = 2.0
# How often a call waiting on a merge another task (or replica) runs looks again.
MERGE_POLL_SECONDS = 0.05


def failed(code: int, message: str) -> UpstreamAnswer:
    return local_answer({"status": "failed", "error": {"code": code, "message": message}})


def progress_answer(state: str, percentage: int) -> UpstreamAnswer:
    data = {"progress_status": state, "percentage": percentage}
    return local_answer({"status": "success", "data": data})


def summary(item: GatewayList) -> UpstreamAnswer:
    """What cancel and remove answer: the list's name, source and creation time."""
    data = {"name": item.filename, "source": "upload", "created_on": item.created_on}
    return local_answer({"status": "success", "data": data})


def result_filename(item: GatewayList) -> str:
    return f"{Path(item.filename).stem}_appended_clearout_finder_results.{item.kind}"


@dataclass
class ListActions:
    settings: Settings
    upstream: Upstream
    lists: ListStore
    blobs: BlobStore
    saver: Saver
    links: Links
    tasks: Tasks

    async def progress(
        self, item: GatewayList, forward: Mapping[str, str] | None
    ) -> UpstreamAnswer:
        if item.state == "completed":
            return progress_answer("completed", 100)
        if item.state not in RUNNING:
            return progress_answer(item.state, item.percentage)
        if not item.upstream_list or item.state == "merging":
            return await self._merged_or_running(item)
        return await self._upstream_progress(item, forward)

    async def _merged_or_running(self, item: GatewayList) -> UpstreamAnswer:
        """Merge now; a list merged within MERGE_WAIT_SECONDS answers completed at once.

        When another task or replica holds the merge (the claim), this call
        waits for it as long as it would have waited for its own merge.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MERGE_WAIT_SECONDS
        task = self.tasks.spawn(self.saver.finish(item.list_id), "bulk-merge")
        await asyncio.wait({task}, timeout=MERGE_WAIT_SECONDS)
        now = await self.lists.get(item.list_id)
        # Whatever the list's state: a cancelled list's merge ends with its state
        # unchanged, and a download waits for it as a progress call does.
        while (
            now is not None and loop.time() < deadline and await self.lists.claimed(item.list_id)
        ):  # fmt: skip
            await asyncio.sleep(min(MERGE_POLL_SECONDS, max(0.0, deadline - loop.time())))
            now = await self.lists.get(item.list_id)
        if now is not None and now.state == "completed":
            return progress_answer("completed", 100)
        if now is not None and now.state not in RUNNING:
            return progress_answer(now.state, now.percentage)
        return progress_answer("running", 99)

    async def _upstream_progress(
        self, item: GatewayList, forward: Mapping[str, str] | None
    ) -> UpstreamAnswer:
        answer = await self._upstream("progress_status", item, forward)
        data = success_data(answer.json())
        if data is None:
            return answer  # upstream's failure (a daily limit, say) as it sent it
        state = str(data.get("progress_status"))
        overall = self._overall(item, _percentage(data.get("percentage")))
        if state == "running":
            return progress_answer("running", overall)
        if state != "completed":
            # Cancelled or failed upstream: reported as upstream reported it.
            await self.lists.update(item.list_id, state=state, percentage=overall)
        return await self._merged_or_running(item)

    @staticmethod
    def _overall(item: GatewayList, upstream_pct: int) -> int:
        people = item.cache_rows + item.upstream_rows
        if people == 0:
            return 99
        done = item.cache_rows + item.upstream_rows * upstream_pct / 100
        return min(99, int(100 * done / people))

    def _finish_soon(self, item: GatewayList) -> None:
        self.tasks.spawn(self.saver.finish(item.list_id), "bulk-merge")

    async def download(
        self, item: GatewayList, origin: str, forward: Mapping[str, str] | None = None
    ) -> UpstreamAnswer:
        result = f"{item.list_id}.result"
        if not await self.blobs.exists(result):
            # A caller may ask for the result without asking for progress
            # first (or just after a cancel): look, as progress would, and
            # merge what has ended.
            if item.state in RUNNING:
                await self.progress(item, forward)
            elif item.state != "completed":
                await self._merged_or_running(item)
        if not await self.blobs.exists(result):
            return failed(1029, "List is not available")
        await self.lists.update(item.list_id, downloaded=True)
        base = self.settings.public_url or origin
        url = self.links.url(base, item.list_id, result_filename(item))
        return local_answer({"status": "success", "data": {"url": url}})

    async def cancel(
        self, item: GatewayList, forward: Mapping[str, str] | None
    ) -> UpstreamAnswer:
        if item.state != "running" or not item.upstream_list:
            return failed(1116, "List is not in the cancellable stage")
        answer = await self._upstream("list_cancel", item, forward)
        if success_data(answer.json()) is None:
            return answer
        percentage = self._overall(item, 0)
        await self.lists.update(item.list_id, state="cancelled", percentage=percentage)
        self._finish_soon(item)
        return summary(item)

    async def remove(
        self, item: GatewayList, payload: dict[str, Any], forward: Mapping[str, str] | None
    ) -> UpstreamAnswer:
        if item.state in RUNNING:
            return failed(1116, "List is not in the removable stage, cancel it first")
        if not item.downloaded and not validation.optional_flag(payload, "ignore_result"):
            return failed(
                1117, "Result file is not downloaded yet, set ignore_result=true to remove"
            )
        if item.upstream_list:
            # The gateway keeps the merged result; upstream's own copy can go.
            await self._upstream("list_remove", item, forward, ignore_result=True)
        for part in ("src", "known", "people", "result"):
            await self.blobs.delete(f"{item.list_id}.{part}")
        await self.lists.forget_file(item.file_token)
        await self.lists.delete(item.list_id)
        return summary(item)

    async def _upstream(
        self, route: str, item: GatewayList, forward: Mapping[str, str] | None, **extra: Any
    ) -> UpstreamAnswer:
        if route == "progress_status":
            return await self.upstream.call(
                route, "GET", "/email_finder/bulk/progress_status",
                params={"list_id": item.upstream_list}, caller_headers=forward,
                timeout=self.settings.upstream_timeout,
            )  # fmt: skip
        path = {
            "list_cancel": "/email_finder/list/cancel",
            "list_remove": "/email_finder/list/remove",
        }
        return await self.upstream.call(
            route, "POST", path[route], json_body={"list_id": item.upstream_list, **extra},
            caller_headers=forward, timeout=self.settings.upstream_timeout,
        )  # fmt: skip


def _percentage(value: object) -> int:
    try:
        return max(0, min(100, int(float(str(value)))))
    except ValueError:
        return 0

