"""Request bodies in, upstream answers out: helpers every finder handler uses.

`read_json` enforces the small JSON size limit; `spool_upload` writes a bulk
file to disk in chunks (never whole in memory) while enforcing the bulk limit;
`relay` turns an upstream answer back into the caller's response unchanged.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from gateway.appkeys import CONTEXT, UPSTREAM
from gateway.errors import PayloadTooLarge, ValidationFailed
from gateway.settings import Settings
from gateway.upstream import UpstreamAnswer

CHUNK = 256 * 1024

# aiohttp only knows IANA reason phrases; Clearout's 524 is Cloudflare's.
REASONS = {524: "A Timeout Occurred"}


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body exceeds the gateway's limit of {limit} bytes")


async def read_json(request: web.Request, limit: int) -> Any:
    """The JSON body, or a 400 in Clearout's validation shape / 413 when too big."""
    try:
        return orjson.loads(await read_body(request, limit))
    except orjson.JSONDecodeError:
        raise ValidationFailed(
            "value", "body", '"value" must be valid JSON of type object', "object.base"
        ) from None


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, or 413 when over `limit`.

    `client_max_size` of the app equals `limit`, so aiohttp enforces it while
    reading even when the body comes without a Content-Length.
    """
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)
    content = request.content
    # A small body usually arrives with the headers: take it without awaiting.
    if length is not None and content.is_eof() and content.total_bytes == length:
        raw = content.read_nowait()
    else:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large(limit) from None
    return raw


@dataclass
class Upload:
    filename: str
    content_type: str
    path: Path
    size: int
    ignore_duplicate_file: str | None

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _file_required() -> ValidationFailed:
    return ValidationFailed("file", "body", '"file" is required', "any.required")


async def spool_upload(request: web.Request, settings: Settings) -> Upload:
    """Write the multipart `file` part to the spool directory, enforcing the size limit."""
    limit = settings.max_bulk_bytes
    # The multipart envelope adds a little; refuse early only when clearly over.
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise _too_large(limit)
    if not request.content_type.startswith("multipart/"):
        raise _file_required()
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError):
        raise _file_required() from None
    upload: Upload | None = None
    ignore_duplicate: str | None = None
    try:
        while (part := await reader.next()) is not None:
            name = getattr(part, "name", None)
            if name == "file" and upload is None and hasattr(part, "read_chunk"):
                upload = await _spool_part(part, settings, limit)
            elif name == "ignore_duplicate_file" and hasattr(part, "text"):
                ignore_duplicate = (await part.text(encoding="utf-8"))[:16]
            elif hasattr(part, "release"):
                await part.release()
    except BaseException:
        if upload is not None:
            upload.discard()
        raise
    if upload is None:
        raise _file_required()
    upload.ignore_duplicate_file = ignore_duplicate
    return upload


async def _spool_part(part: Any, settings: Settings, limit: int) -> Upload:
    fd, tmp = tempfile.mkstemp(prefix="bulk-", suffix=".upload", dir=settings.spool_dir)
    path = Path(tmp)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await part.read_chunk(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    filename = os.path.basename(part.filename or "upload")
    content_type = part.headers.get("Content-Type", "application/octet-stream")
    return Upload(filename, content_type, path, size, None)


async def call_upstream(
    request: web.Request, route: str, method: str, path: str, **kwargs: Any
) -> UpstreamAnswer:
    """Call the upstream on behalf of `request`, noting its latency for the access log."""
    answer = await request.app[UPSTREAM].call(
        route, method, path, caller_headers=request.headers, **kwargs
    )
    request[CONTEXT].upstream_ms = answer.elapsed_ms
    return answer


def relay(answer: UpstreamAnswer, extra_headers: dict[str, str] | None = None) -> web.Response:
    """The upstream's answer as the caller's response: status, headers and body unchanged."""
    headers = answer.headers.copy()
    if answer.status == 429 and "Retry-After" not in headers:
        headers["Retry-After"] = str(retry_after(answer))
    if extra_headers:
        headers.update(extra_headers)
    return web.Response(
        status=answer.status,
        reason=REASONS.get(answer.status),
        body=answer.body,
        headers=headers,
    )


def retry_after(answer: UpstreamAnswer) -> int:
    """Seconds until the upstream's rate window resets (x-ratelimit-reset), at least 1."""
    reset = answer.headers.get("x-ratelimit-reset", "")
    try:
        value = float(reset)
    except ValueError:
        return 60
    # Clearout sends an epoch timestamp; small values are already a delay.
    delay = value - time.time() if value > 1_000_000_000 else value
    return max(1, min(3600, int(delay + 0.999)))
