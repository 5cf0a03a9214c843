"""Multipart bulk uploads, bounded: spooled to disk in chunks, within size and time limits.

Used by the gateway's `/bulk` route and by its sandbox alike.  Every way an
upload can be wrong becomes a gateway error before anything else sees it:
over the size limit → 413; stalling longer than the stall timeout between
chunks, or slower than the total timeout → 408; a multipart body that does
not parse (no or a wrong boundary, no closing boundary, a part header
without a colon, an empty body, …) or has more than MAX_PARTS parts → 400
`bad_request`; no `file` part → 400 in Clearout's validation shape.  The
caller hanging up surfaces as
`ConnectionError`.  A file is written to the spool directory in 256 KiB
chunks, never held whole in memory, and its name is reduced to a safe ASCII
form at once, since it is sent on upstream and ends up in headers and logs.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from gateway.bulk.upload import Upload
from gateway.errors import (
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    ValidationFailed,
)
from gateway.settings import Settings

CHUNK = 256 * 1024
# The multipart envelope (boundaries, part headers, the small form field)
# adds a little to the file itself.
ENVELOPE_ALLOWANCE = 64 * 1024
MAX_FIELD_BYTES = 1024
MAX_FILENAME_CHARS = 120
# Clearout's bulk form has two fields (file, ignore_duplicate_file); a client
# may add a few of its own.  Each part costs aiohttp's reader ~0.2 ms on the
# event loop, so a body of thousands of tiny parts held every other caller
# for seconds: beyond this many the upload is refused.
MAX_PARTS = 32

# What aiohttp's multipart reader raises for input it cannot parse.
MALFORMED = (
    ValueError,
    AssertionError,
    RuntimeError,
    TypeError,
    LookupError,
    HttpProcessingError,
    RequestPayloadError,
)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body exceeds the gateway's limit of {limit} bytes")


def _file_required() -> ValidationFailed:
    return ValidationFailed("file", "body", '"file" is required', "any.required")


_UNSAFE = re.compile(r"[^A-Za-z0-9._()+-]+")


def safe_filename(raw: str | None) -> str:
    """An ASCII file name safe to resend in a multipart header and to log.

    Accents are folded (`Liste_Überblick.csv` → `Liste_Uberblick.csv`), path
    parts, control characters, quotes and anything else outside a small set
    become `_`, and the length is capped with the extension kept, so the
    same upload always gets the same name (Clearout matches duplicates by
    name and size).
    """
    text = unicodedata.normalize("NFKD", raw or "").encode("ascii", "ignore").decode()
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = text.rpartition(".")
    if not dot:
        stem, ext = text, ""
    ext = _UNSAFE.sub("", ext)[:10]
    stem = _UNSAFE.sub("_", stem)[: MAX_FILENAME_CHARS - len(ext) - 1].strip("._") or "upload"
    return f"{stem}.{ext}" if ext else stem


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """What an upload may cost: bytes, time between chunks, time in all, and where it goes."""

    max_bytes: int
    stall_timeout: float
    total_timeout: float
    spool_dir: Path
    prefix: str = "bulk-"  # of spooled files' names, so each owner knows its own

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(
            settings.max_bulk_bytes, settings.body_timeout, settings.upload_timeout,
            settings.spool_dir,
        )  # fmt: skip


async def spool_upload(request: web.Request, settings: Settings | UploadLimits) -> Upload:
    """Write the multipart `file` part to the spool directory, bounded in size and time."""
    if isinstance(settings, Settings):
        settings = UploadLimits.from_settings(settings)
    limit = settings.max_bytes
    if request.content_length is not None and request.content_length > limit + ENVELOPE_ALLOWANCE:
        raise _too_large(limit)
    if not request.content_type.startswith("multipart/"):
        raise UnsupportedMediaType(
            'Bulk uploads are multipart/form-data with the list in a "file" field'
        )
    try:
        async with asyncio.timeout(settings.total_timeout):
            return await _read_form(request, settings)
    except TimeoutError:
        raise RequestTimeout("The upload did not arrive in time") from None
    except MALFORMED:
        raise BadRequest("The multipart body is malformed") from None


class _Form:
    """What the parts of one upload leave behind, and the bytes they took."""

    def __init__(self, settings: UploadLimits) -> None:
        self.settings = settings
        self.upload: Upload | None = None
        self.ignore_duplicate: str | None = None
        self.budget = settings.max_bytes + ENVELOPE_ALLOWANCE
        self.parts = 0

    def count_part(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise BadRequest(f"A bulk upload has at most {MAX_PARTS} form fields")

    def take(self, size: int) -> None:
        self.budget -= size
        if self.budget < 0:
            raise _too_large(self.settings.max_bytes)


async def _read_form(request: web.Request, settings: UploadLimits) -> Upload:
    reader = await request.multipart()
    form = _Form(settings)
    try:
        while (part := await reader.next()) is not None:
            form.count_part()
            await _read_part(part, form)
            # A part already in the buffer is parsed without the loop getting a turn.
            await asyncio.sleep(0)
    except BaseException:
        if form.upload is not None:
            form.upload.discard()
        raise
    if form.upload is None:
        raise _file_required()
    form.upload.ignore_duplicate_file = form.ignore_duplicate
    return form.upload


async def _read_part(part: Any, form: _Form) -> None:
    if not isinstance(part, BodyPartReader):
        raise BadRequest("Nested multipart bodies are not accepted")
    # aiohttp warns (and guesses) on a malformed Content-Disposition; the
    # guess is fine, the warning must not reach the log or the test run.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        name, filename = part.name, part.filename
    if name == "file" and form.upload is None:
        form.upload = await _spool_part(part, form, safe_filename(filename))
    elif name == "ignore_duplicate_file":
        raw = await _small_field(part, form)
        form.ignore_duplicate = raw.decode("utf-8", "replace").strip()[:16]
    else:
        await _drain(part, form)


async def _chunks(part: BodyPartReader, form: _Form) -> Any:
    """The part's chunks, each awaited within the body timeout and counted."""
    while True:
        async with asyncio.timeout(form.settings.stall_timeout):
            chunk = await part.read_chunk(CHUNK)
        if not chunk:
            return
        form.take(len(chunk))
        yield chunk


async def _small_field(part: BodyPartReader, form: _Form) -> bytes:
    data = bytearray()
    async for chunk in _chunks(part, form):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise BadRequest("A form field other than the file is too long")
    return bytes(data)


async def _drain(part: BodyPartReader, form: _Form) -> None:
    async for _ in _chunks(part, form):
        pass


async def _spool_part(part: BodyPartReader, form: _Form, filename: str) -> Upload:
    settings = form.settings
    fd, tmp = tempfile.mkstemp(prefix=settings.prefix, suffix=".upload", dir=settings.spool_dir)
    path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            size = await _copy(part, form, out)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    content_type = part.headers.get("Content-Type", "application/octet-stream")
    if not content_type.isascii() or not content_type.isprintable():
        content_type = "application/octet-stream"
    return Upload(filename, content_type[:100], path, size, None)


async def _copy(part: BodyPartReader, form: _Form, out: BinaryIO) -> int:
    limit = form.settings.max_bytes
    size = 0
    async for chunk in _chunks(part, form):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        out.write(chunk)
    return size
