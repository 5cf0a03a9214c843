"""The sandbox's bulk finder: upload, progress, result link, cancel and remove.

An upload is spooled by the gateway's own bounded reader (`gateway.uploads`), with
generous limits of its own, and refused the way Clearout refuses one: 1100 for a file it
cannot take (not CSV/XLSX, unreadable, over the caps of `gateway.bulk.tables`), 1083 past
`max_running_lists`, 2043 for the same name and size again, 1028 when the credits cannot
cover four per distinct row, and sandbox code 1101 when the name or domain column is
missing.  The list then runs on the clock of `SandboxState`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from aiohttp import web

from gateway import validation
from gateway.bulk import tables
from gateway.bulk.upload import Upload
from gateway.errors import GatewayError, PayloadTooLarge, RequestTimeout
from gateway.sandbox.answers import failed, file_required, invalid_file_type
from gateway.sandbox.bulk_list import BulkList, fails
from gateway.sandbox.results import ResultFiles
from gateway.sandbox.state import SandboxState, object_id
from gateway.uploads import UploadLimits, spool_upload

# Generous: the gateway in front bounds uploads itself (GATEWAY_MAX_BULK_BYTES, 50 MiB by
# default); these only keep a stray client from filling the disk or holding a connection.
UPLOAD_MAX_BYTES = 200 * tables.MiB
UPLOAD_STALL_SECONDS = 60.0
UPLOAD_TOTAL_SECONDS = 600.0
# What a list costs to reserve, per distinct row (Clearout's found-address price).
CREDITS_PER_ROW = 4


class ListRoutes:
    def __init__(self, state: SandboxState, results: ResultFiles) -> None:
        self.state = state
        self.results = results
        self.upload_limits = UploadLimits(
            UPLOAD_MAX_BYTES, UPLOAD_STALL_SECONDS, UPLOAD_TOTAL_SECONDS, state.config.spool_dir,
            prefix="sandbox-",
        )

    # ---- upload ----------------------------------------------------------------

    async def bulk(self, request: web.Request) -> web.StreamResponse:
        upload = await self._spool(request)
        if isinstance(upload, web.Response):
            return upload
        kept = False
        try:
            answer, kept = self._take(upload)
        finally:
            if not kept:
                upload.discard()
        return answer

    async def _spool(self, request: web.Request) -> Upload | web.Response:
        try:
            return await spool_upload(request, self.upload_limits)
        except (PayloadTooLarge, RequestTimeout) as exc:
            # Clearout documents neither; this is what the proxy in front of it would say.
            return web.Response(status=exc.status, text=HTTPStatus(exc.status).phrase)
        except GatewayError:
            # No readable "file" part (none, not multipart, malformed): Clearout answers
            # all of them with its validation shape for "file".
            raise file_required() from None

    def _take(self, upload: Upload) -> tuple[web.Response, bool]:
        """The answer to a spooled upload, and whether the sandbox keeps it as a list."""
        kind = tables.file_kind(upload.filename)
        if kind is None:
            return invalid_file_type(), False
        refusal = self._refusal(upload, kind)
        if refusal is not None:
            return refusal, False
        try:
            rows = tables.count_distinct_rows(upload.path, kind)
        except tables.UnreadableFile:  # TableTooLarge too: over the caps
            return invalid_file_type(), False
        if rows * CREDITS_PER_ROW > self.state.credits:
            return self._not_enough_credits(rows), False
        list_id = object_id()
        self.state.lists[list_id] = BulkList(
            list_id, upload.filename, upload.size, upload.path, kind, rows,
            time.monotonic(), datetime.now(UTC), fails=fails(upload.path, kind),
        )  # fmt: skip
        return web.json_response({"status": "success", "data": {"list_id": list_id}}), True

    def _not_enough_credits(self, rows: int) -> web.Response:
        available = self.state.credits
        needed = rows * CREDITS_PER_ROW - available
        return failed(
            1028,
            f"Your available credits {available} is not enough to find {rows} email "
            f"addresses from the list, so please purchase {needed} more credits",
            status=402,
            required_credits=needed,
        )

    def _refusal(self, upload: Upload, kind: tables.FileKind) -> web.Response | None:
        state = self.state
        running = [item for item in state.lists.values() if state.state_of(item) == "running"]
        if len(running) >= state.config.max_running_lists:
            return failed(
                1083,
                "You have reached the maximum number of email finder bulk requests, please try "
                "after the existing request completes or contact support",
            )
        ignore_duplicate = (upload.ignore_duplicate_file or "").strip().lower() == "true"
        if not ignore_duplicate:
            for item in state.lists.values():
                if item.filename == upload.filename and item.size == upload.size:
                    return failed(
                        2043,
                        "Duplicate file not allowed, set ignore_duplicate_file=true to allow "
                        "duplicate file",
                        list_id=item.list_id,
                    )
        try:
            header = next(tables.iter_rows(upload.path, kind), [])
        except tables.UnreadableFile:
            return invalid_file_type()
        _, missing = tables.find_columns(header)
        if missing:
            # Sandbox-only code: Clearout documents the requirement, not its error.
            return failed(1101, f"Invalid file: {missing}")
        return None

    # ---- one list ----------------------------------------------------------------

    async def _list_from_body(self, request: web.Request) -> tuple[BulkList | None, Any]:
        try:
            payload = await request.json()
        except ValueError:
            raise validation.not_an_object() from None
        list_id = validation.list_id_in_body(payload)
        return self.state.lists.get(list_id), payload

    async def progress(self, request: web.Request) -> web.Response:
        list_id = validation.query_id(dict(request.query), "list_id")
        item = self.state.lists.get(list_id)
        if item is None:
            return failed(1008, "You are not authorized to access this resource")
        state = self.state.state_of(item)
        data = {"progress_status": state, "percentage": self.state.percentage(item)}
        return web.json_response({"status": "success", "data": data})

    async def download(self, request: web.Request) -> web.Response:
        item, _ = await self._list_from_body(request)
        if item is None or self.state.state_of(item) == "running":
            return failed(1029, "List is not available")
        item.downloaded = True
        url = self.results.link(str(request.url.origin()), item)
        return web.json_response({"status": "success", "data": {"url": url}})

    async def cancel(self, request: web.Request) -> web.Response:
        item, _ = await self._list_from_body(request)
        if item is None:
            return failed(1029, "List is not available")
        if self.state.state_of(item) != "running":
            return failed(1116, "List is not in the cancellable stage")
        self.state.cancel(item)
        return web.json_response({"status": "success", "data": item.summary()})

    async def remove(self, request: web.Request) -> web.Response:
        item, payload = await self._list_from_body(request)
        ignore_result = validation.optional_flag(payload, "ignore_result")
        if item is None:
            return failed(1029, "List is not available")
        if self.state.state_of(item) == "running":
            return failed(1116, "List is not in the removable stage, cancel it first")
        if not item.downloaded and not ignore_result:
            # Sandbox-only code: Clearout documents the denial, not its code.
            return failed(
                1117, "Result file is not downloaded yet, set ignore_result=true to remove"
            )
        del self.state.lists[item.list_id]
        item.path.unlink(missing_ok=True)
        return web.json_response({"status": "success", "data": item.summary()})
