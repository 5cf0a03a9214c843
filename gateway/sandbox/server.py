"""The sandbox upstream: a Clearout-compatible HTTP server with scripted answers.

It serves the seven finder routes and `getcredits` under `/v2`, exactly as
documented upstream (status codes, envelopes, Joi validation shapes), with
deterministic answers per `gateway.sandbox.people`.  It is a real aiohttp
application: `GATEWAY_SANDBOX=1` runs it on an internal loopback port and
points the gateway's upstream seam at it, and the test suite runs it on its
own port as the upstream.  Nothing here is reachable from the gateway code
except over HTTP, so the sandbox exercises the same path as the real API.

Bulk lists run on a clock: `running` with a growing percentage for
`bulk_seconds`, then `completed`; results are served from a presigned-style
URL valid five minutes, like Clearout's S3 links.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import json
import secrets
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway import tabular, validation
from gateway.errors import ValidationFailed
from gateway.formulas import neutralise
from gateway.sandbox.people import Outcome, lookup

RESULT_LINK_SECONDS = 300
RESULT_COLUMNS = (
    "Clearout Finder Email Address",
    "Clearout Finder Email Confidence Score",
    "Clearout Finder Role Address",
    "Clearout Finder Status",
)


@dataclass
class SandboxConfig:
    token: str
    credits: int = 1_000_000
    queue_seconds: float = 5.0
    slow_seconds: float = 2.0
    bulk_seconds: float = 3.0
    latency: float = 0.0
    rate_limit_per_minute: int | None = None
    max_running_lists: int = 5
    spool_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))


@dataclass
class QueuedLookup:
    outcome: Outcome
    ready_at: float
    charged: bool = False


@dataclass
class BulkList:
    list_id: str
    filename: str
    size: int
    path: Path
    kind: tabular.FileKind
    rows: int
    created: float
    created_iso: str
    state: str = "running"  # running | completed | cancelled
    progress_at_cancel: int = 0
    downloaded: bool = False


def _object_id() -> str:
    # Clearout's ids are 24-hex MongoDB ObjectIds: 4-byte time + 8 random bytes.
    return f"{int(time.time()):08x}" + secrets.token_hex(8)


def _failed(code: int, message: str, status: int = 200, **extra: Any) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if extra:
        error["additional_info"] = extra
    return web.json_response({"status": "failed", "error": error}, status=status)


def _validation_response(exc: ValidationFailed) -> web.Response:
    # Upstream's shape: no `code` in validation failures.
    body = {"status": "failed", "error": {"message": exc.message, "reasons": exc.reasons}}
    return web.json_response(body, status=400)


class Sandbox:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.credits = config.credits
        self.queues: dict[str, QueuedLookup] = {}
        self.lists: dict[str, BulkList] = {}
        self.calls: dict[str, int] = {}
        self.instant_times: list[float] = []  # monotonic time of each instant call
        self._window: deque[float] = deque()
        self._link_key = secrets.token_bytes(32)

    # ---- app -------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth_and_count])
        app.router.add_post("/v2/email_finder/instant", self.instant)
        app.router.add_get("/v2/email_finder/instant/queue_status", self.queue_status)
        app.router.add_post("/v2/email_finder/bulk", self.bulk)
        app.router.add_get("/v2/email_finder/bulk/progress_status", self.progress)
        app.router.add_post("/v2/email_finder/download/result", self.download)
        app.router.add_post("/v2/email_finder/list/cancel", self.cancel)
        app.router.add_post("/v2/email_finder/list/remove", self.remove)
        app.router.add_get("/v2/email_verify/getcredits", self.getcredits)
        app.router.add_get("/sandbox/results/{list_id}/{filename}", self.serve_result)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, _app: web.Application) -> None:
        for item in self.lists.values():
            item.path.unlink(missing_ok=True)

    @web.middleware
    async def _auth_and_count(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        self.calls[request.path] = self.calls.get(request.path, 0) + 1
        if request.path.startswith("/sandbox/results/"):
            return await handler(request)  # presigned: the signature is the credential
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(presented.encode(), self.config.token.encode()):
            return _failed(1000, "Invalid API Token, please generate new token", status=401)
        if self.config.latency:
            await asyncio.sleep(self.config.latency)
        return await handler(request)

    def calls_to(self, route: str) -> int:
        return self.calls.get("/v2/email_finder/" + route, 0)

    # ---- instant ---------------------------------------------------------------

    def _rate_headers(self) -> tuple[dict[str, str], bool]:
        now = time.monotonic()
        limit = self.config.rate_limit_per_minute
        while self._window and now - self._window[0] >= 60:
            self._window.popleft()
        over = limit is not None and len(self._window) >= limit
        if not over:
            self._window.append(now)
        shown = limit if limit is not None else 10_000
        reset = int(time.time() + (60 - (now - self._window[0]) if self._window else 60))
        headers = {
            "X-RateLimit-Limit": str(shown),
            "X-RateLimit-Remaining": str(max(0, shown - len(self._window))),
            "X-RateLimit-Reset": str(reset),
        }
        return headers, over

    async def instant(self, request: web.Request) -> web.StreamResponse:
        self.instant_times.append(time.monotonic())
        headers, over = self._rate_headers()
        if over:
            resp = _failed(
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
            return _validation_response(validation.not_an_object())
        try:
            req = validation.instant_request(payload)
        except ValidationFailed as exc:
            return _validation_response(exc)
        outcome = lookup(req.name, req.domain)
        resp = await self._answer(outcome, req)
        resp.headers.update(headers)
        return resp

    async def _answer(self, outcome: Outcome, req: validation.InstantRequest) -> web.Response:
        if outcome.kind == "unsupported":
            return _failed(1088, "Unsupported characters in name fields")
        if outcome.kind == "ratelimited":
            return _failed(
                1030, "You have reached API rate limit, try calling after a minute", status=429
            )
        if outcome.kind == "nocredits" or self.credits < outcome.credits:
            return _failed(
                1099, "You do not have sufficient credits for instant email finder", status=402
            )
        if outcome.kind == "unavailable":
            return web.Response(status=503)
        if outcome.queued:
            qid = _object_id()
            self.queues[qid] = QueuedLookup(outcome, time.monotonic() + self.config.queue_seconds)
            info = {
                "resource_name": "email_finder",
                "resource_value": json.dumps(
                    {"name": req.name, "domain": req.domain, "timeout": req.timeout_ms},
                    separators=(",", ":"),
                ),
            }
            if req.queue:
                info["queue_id"] = qid
            else:
                del self.queues[qid]
            body = {
                "status": "failed",
                "error": {"message": "Timeout occurred", "additional_info": info},
            }
            return web.json_response(body, status=524)
        if outcome.slow:
            await asyncio.sleep(self.config.slow_seconds)
        self.credits -= outcome.credits
        return web.json_response({"status": "success", "data": outcome.data})

    async def queue_status(self, request: web.Request) -> web.Response:
        try:
            qid = validation.query_id(dict(request.query), "qid")
        except ValidationFailed as exc:
            return _validation_response(exc)
        item = self.queues.get(qid)
        if item is None:
            return _failed(1104, "Invalid queue ID")
        if time.monotonic() < item.ready_at:
            return web.json_response({"status": "success", "data": {"query_status": "running"}})
        if item.outcome.data is None:
            return _failed(1104, "Invalid queue ID")
        if not item.charged:
            self.credits -= item.outcome.credits
            item.charged = True
        data = {"query_status": "completed", **item.outcome.data}
        return web.json_response({"status": "success", "data": data})

    # ---- bulk ------------------------------------------------------------------

    async def bulk(self, request: web.Request) -> web.Response:
        try:
            reader = await request.multipart()
        except (AssertionError, ValueError, KeyError):
            return _validation_response(
                ValidationFailed("file", "body", '"file" is required', "any.required")
            )
        spooled: tuple[str, int, Path] | None = None
        ignore_duplicate = False
        while (part := await reader.next()) is not None:
            if getattr(part, "name", None) == "file" and hasattr(part, "read_chunk"):
                filename = getattr(part, "filename", None) or "upload"
                fd, tmp = tempfile.mkstemp(prefix="sandbox-", dir=self.config.spool_dir)
                size = 0
                with open(fd, "wb") as out:
                    while chunk := await part.read_chunk(256 * 1024):
                        size += len(chunk)
                        out.write(chunk)
                spooled = (filename, size, Path(tmp))
            elif getattr(part, "name", None) == "ignore_duplicate_file" and hasattr(part, "text"):
                ignore_duplicate = (await part.text()).strip().lower() == "true"
        if spooled is None:
            return _validation_response(
                ValidationFailed("file", "body", '"file" is required', "any.required")
            )
        filename, size, path = spooled
        kind = tabular.file_kind(filename)
        refusal = self._refuse_upload(filename, size, path, kind, ignore_duplicate)
        if refusal is not None or kind is None:
            path.unlink(missing_ok=True)
            return refusal or _failed(1100, "Invalid file type")
        rows = tabular.count_distinct_rows(path, kind)
        if rows * 4 > self.credits:
            path.unlink(missing_ok=True)
            needed = rows * 4 - self.credits
            return _failed(
                1028,
                f"Your available credits {self.credits} is not enough to find {rows} email "
                f"addresses from the list, so please purchase {needed} more credits",
                status=402,
                required_credits=needed,
            )
        list_id = _object_id()
        now = datetime.now(UTC)
        self.lists[list_id] = BulkList(
            list_id, filename, size, path, kind, rows, time.monotonic(),
            now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        )  # fmt: skip
        return web.json_response({"status": "success", "data": {"list_id": list_id}})

    def _refuse_upload(
        self,
        filename: str,
        size: int,
        path: Path,
        kind: tabular.FileKind | None,
        ignore_duplicate: bool,
    ) -> web.Response | None:
        if kind is None:
            return _failed(1100, "Invalid file type")
        running = [item for item in self.lists.values() if self._state(item) == "running"]
        if len(running) >= self.config.max_running_lists:
            return _failed(
                1083,
                "You have reached the maximum number of email finder bulk requests, please try "
                "after the existing request completes or contact support",
            )
        if not ignore_duplicate:
            for item in self.lists.values():
                if item.filename == filename and item.size == size:
                    return _failed(
                        2043,
                        "Duplicate file not allowed, set ignore_duplicate_file=true to allow "
                        "duplicate file",
                        list_id=item.list_id,
                    )
        try:
            header = next(tabular.iter_rows(path, kind), [])
        except tabular.UnreadableFile:
            return _failed(1100, "Invalid file type")
        _, missing = tabular.find_columns(header)
        if missing:
            # Sandbox-only code: Clearout documents the requirement, not its error.
            return _failed(1101, f"Invalid file: {missing}")
        return None

    def _percentage(self, item: BulkList) -> int:
        if item.state == "cancelled":
            return item.progress_at_cancel
        elapsed = time.monotonic() - item.created
        duration = max(self.config.bulk_seconds, 1e-9)
        return min(100, int(100 * elapsed / duration))

    def _state(self, item: BulkList) -> str:
        if item.state == "running" and self._percentage(item) >= 100:
            item.state = "completed"
            self.credits -= sum(o.credits for _, o in self._results(item))
        return item.state

    async def _list_from_body(self, request: web.Request) -> tuple[BulkList | None, Any]:
        try:
            payload = await request.json()
        except ValueError:
            raise ValidationFailed(
                "value", "body", '"value" must be of type object', "object.base"
            ) from None
        list_id = validation.list_id_in_body(payload)
        return self.lists.get(list_id), payload

    async def progress(self, request: web.Request) -> web.Response:
        try:
            list_id = validation.query_id(dict(request.query), "list_id")
        except ValidationFailed as exc:
            return _validation_response(exc)
        item = self.lists.get(list_id)
        if item is None:
            return _failed(1008, "You are not authorized to access this resource")
        state = self._state(item)
        return web.json_response(
            {
                "status": "success",
                "data": {"progress_status": state, "percentage": self._percentage(item)},
            }
        )

    async def download(self, request: web.Request) -> web.Response:
        try:
            item, _ = await self._list_from_body(request)
        except ValidationFailed as exc:
            return _validation_response(exc)
        if item is None or self._state(item) == "running":
            return _failed(1029, "List is not available")
        item.downloaded = True
        expires = int(time.time()) + RESULT_LINK_SECONDS
        name = Path(item.filename).stem + "_appended_clearout_finder_results.csv"
        signature = self._sign(item.list_id, expires)
        url = (
            f"{request.url.origin()}/sandbox/results/{item.list_id}/{name}"
            f"?X-Amz-Expires={RESULT_LINK_SECONDS}&expires={expires}&signature={signature}"
        )
        return web.json_response({"status": "success", "data": {"url": url}})

    def _list_summary(self, item: BulkList) -> dict[str, Any]:
        return {"name": item.filename, "source": "upload", "created_on": item.created_iso}

    async def cancel(self, request: web.Request) -> web.Response:
        try:
            item, _ = await self._list_from_body(request)
        except ValidationFailed as exc:
            return _validation_response(exc)
        if item is None:
            return _failed(1029, "List is not available")
        if self._state(item) != "running":
            return _failed(1116, "List is not in the cancellable stage")
        item.progress_at_cancel = self._percentage(item)
        item.state = "cancelled"
        self.credits -= sum(o.credits for _, o in self._results(item))
        return web.json_response({"status": "success", "data": self._list_summary(item)})

    async def remove(self, request: web.Request) -> web.Response:
        try:
            item, payload = await self._list_from_body(request)
            ignore_result = validation.optional_flag(payload, "ignore_result")
        except ValidationFailed as exc:
            return _validation_response(exc)
        if item is None:
            return _failed(1029, "List is not available")
        state = self._state(item)
        if state == "running":
            return _failed(1116, "List is not in the removable stage, cancel it first")
        if not item.downloaded and not ignore_result:
            # Sandbox-only code: Clearout documents the denial, not its code.
            return _failed(
                1117, "Result file is not downloaded yet, set ignore_result=true to remove"
            )
        del self.lists[item.list_id]
        item.path.unlink(missing_ok=True)
        return web.json_response({"status": "success", "data": self._list_summary(item)})

    # ---- results ---------------------------------------------------------------

    def _sign(self, list_id: str, expires: int) -> str:
        return hmac.new(self._link_key, f"{list_id}|{expires}".encode(), hashlib.sha256).hexdigest()

    def _results(self, item: BulkList) -> Iterator[tuple[list[str], Outcome]]:
        rows = tabular.iter_rows(item.path, item.kind)
        header = next(rows, [])
        columns, _ = tabular.find_columns(header)
        limit = None
        if item.state == "cancelled":
            limit = item.rows * item.progress_at_cancel // 100
        seen: set[tuple[str, ...]] = set()
        for row in rows:
            if not any(row) or tuple(row) in seen:
                continue
            if limit is not None and len(seen) >= limit:
                return
            seen.add(tuple(row))
            padded = row + [""] * (len(header) - len(row))
            if "name" in columns:
                name = padded[columns["name"]]
            else:
                name = f"{padded[columns['first_name']]} {padded[columns['last_name']]}".strip()
            domain = padded[columns["domain"]]
            outcome = lookup(name, domain) if name and domain else Outcome("unsupported")
            yield row, outcome

    async def serve_result(self, request: web.Request) -> web.StreamResponse:
        list_id = request.match_info["list_id"]
        try:
            expires = int(request.query.get("expires", ""))
        except ValueError:
            return web.Response(status=403, text="AccessDenied: missing signature")
        signature = request.query.get("signature", "")
        if not hmac.compare_digest(signature, self._sign(list_id, expires)):
            return web.Response(status=403, text="AccessDenied: bad signature")
        if time.time() > expires:
            return web.Response(status=403, text="AccessDenied: Request has expired")
        item = self.lists.get(list_id)
        if item is None:
            return web.Response(status=404, text="NoSuchKey")
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{request.match_info["filename"]}"',
            }
        )
        await resp.prepare(request)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        header = next(tabular.iter_rows(item.path, item.kind), [])
        writer.writerow([neutralise(cell) for cell in (*header, *RESULT_COLUMNS)])
        for row, outcome in self._results(item):
            writer.writerow([neutralise(cell) for cell in (*row, *_result_cells(outcome))])
            if buffer.tell() > 64 * 1024:
                await resp.write(buffer.getvalue().encode())
                buffer.seek(0)
                buffer.truncate()
        await resp.write(buffer.getvalue().encode())
        await resp.write_eof()
        return resp

    async def getcredits(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": {"available_credits": self.credits}})


def _result_cells(outcome: Outcome) -> list[str]:
    if outcome.data and outcome.data.get("emails"):
        email = outcome.data["emails"][0]
        return [
            email["email_address"],
            str(outcome.data.get("confidence_score", "")),
            email["role"],
            "found",
        ]
    if outcome.kind == "not_found":
        return ["", "", "", "not_found"]
    return ["", "", "", "failed"]
