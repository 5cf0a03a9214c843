"""The sandbox's result files: the signed links to them, and the file each link serves.

`download/result` hands out a presigned-style link, valid `RESULT_LINK_SECONDS` like
Clearout's S3 links, whose HMAC signature is its only credential.  The file it serves is
the uploaded CSV or XLSX as CSV, every row followed by the finder columns Clearout
appends (`RESULT_COLUMNS`, named and ordered as Clearout's), with every cell neutralised
against formula injection and a CSV's undecodable bytes written back as they came.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from gateway.bulk.formulas import neutralise
from gateway.sandbox.bulk_list import BulkList
from gateway.sandbox.people import Outcome
from gateway.sandbox.state import SandboxState

RESULT_LINK_SECONDS = 300
RESULT_COLUMNS = (
    "Clearout Finder Full Name",
    "Clearout Finder First Name",
    "Clearout Finder Last Name",
    "Clearout Finder Domain",
    "Clearout Finder Company",
    "Clearout Finder Email Address",
    "Clearout Finder Confidence Score",
    "Clearout Finder Business Account",
    "Clearout Finder Status",
    "Clearout Finder Reason",
    "Clearout Finder Processed At (UTC)",
)
# Why a row has no address, in the Reason column; anything else reads "No email found".
NOT_FOUND_REASONS = {"unsupported": "Unsupported characters in name"}
NO_EMAIL_FOUND = "No email found"
PROCESSED_AT_FORMAT = "%Y-%m-%d %H:%M:%S"
FLUSH_BYTES = 64 * 1024


class ResultFiles:
    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._link_key = secrets.token_bytes(32)

    def _sign(self, list_id: str, expires: int) -> str:
        return hmac.new(self._link_key, f"{list_id}|{expires}".encode(), hashlib.sha256).hexdigest()

    def link(self, origin: str, item: BulkList) -> str:
        """A link to the list's result file, valid RESULT_LINK_SECONDS from now."""
        expires = int(time.time()) + RESULT_LINK_SECONDS
        name = Path(item.filename).stem + "_appended_clearout_finder_results.csv"
        signature = self._sign(item.list_id, expires)
        return (
            f"{origin}/sandbox/results/{item.list_id}/{name}"
            f"?X-Amz-Expires={RESULT_LINK_SECONDS}&expires={expires}&signature={signature}"
        )

    def _refusal(self, request: web.Request) -> web.Response | None:
        """S3's answers to a link that is unsigned, signed wrongly or expired."""
        try:
            expires = int(request.query.get("expires", ""))
        except ValueError:
            return web.Response(status=403, text="AccessDenied: missing signature")
        signature = request.query.get("signature", "")
        if not hmac.compare_digest(signature, self._sign(request.match_info["list_id"], expires)):
            return web.Response(status=403, text="AccessDenied: bad signature")
        if time.time() > expires:
            return web.Response(status=403, text="AccessDenied: Request has expired")
        return None

    async def serve(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        item = self.state.lists.get(request.match_info["list_id"])
        if item is None:
            return web.Response(status=404, text="NoSuchKey")
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{request.match_info["filename"]}"',
            }
        )
        await resp.prepare(request)
        await _write_result(resp, item)
        await resp.write_eof()
        return resp


async def _write_result(resp: web.StreamResponse, item: BulkList) -> None:
    """The header and every answered row, in 64 KiB writes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([neutralise(cell) for cell in (*item.header(), *RESULT_COLUMNS)])
    processed_at = (item.finished_at or datetime.now(UTC)).strftime(PROCESSED_AT_FORMAT)
    for row, outcome in item.answers():
        cells = (*row, *result_cells(outcome, processed_at))
        writer.writerow([neutralise(cell) for cell in cells])
        if buffer.tell() > FLUSH_BYTES:
            await resp.write(_encoded(buffer))
    await resp.write(_encoded(buffer))


def _encoded(buffer: io.StringIO) -> bytes:
    """The buffer's text as bytes, emptying it.

    A CSV's bytes that are not UTF-8 were read as surrogate escapes: surrogateescape
    writes them back unchanged (a cp1252 upload gets its own bytes back).
    """
    data = buffer.getvalue().encode("utf-8", "surrogateescape")
    buffer.seek(0)
    buffer.truncate()
    return data


def result_cells(outcome: Outcome, processed_at: str) -> list[str]:
    """The RESULT_COLUMNS cells of one row, from the sandbox's answer for it."""
    data = outcome.data or {}
    company = data.get("company") or {}
    parsed = [str(data.get(key, "")) for key in ("full_name", "first_name", "last_name", "domain")]
    parsed.append(str(company.get("name", "")))
    emails = data.get("emails") or []
    if emails:
        email = emails[0]
        score = str(data.get("confidence_score", ""))
        found = [email["email_address"], score, email.get("business", ""), "Found", ""]
    else:
        reason = NOT_FOUND_REASONS.get(outcome.kind, NO_EMAIL_FOUND)
        found = ["", "", "", "Not Found", reason]
    return [*parsed, *found, processed_at]
