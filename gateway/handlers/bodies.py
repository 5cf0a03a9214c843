"""Request bodies in, bounded: JSON bodies and multipart bulk uploads.

Every body the gateway reads passes through here, and every way a body can
be wrong becomes a 4xx in the Clearout envelope before anything else sees it:

* the wrong `Content-Type` → 415 (`unsupported_media_type`);
* over the size limit → 413, with or without a Content-Length;
* too slow → 408: a JSON body must arrive within GATEWAY_BODY_TIMEOUT_SECONDS;
  an upload may not stall longer than that between chunks and must finish
  within GATEWAY_UPLOAD_TIMEOUT_SECONDS;
* a multipart body that does not parse (no or a wrong boundary, a missing
  closing boundary, a part header without a colon, an empty body, …) → 400
  (`bad_request`);
* the caller hanging up surfaces as `ConnectionError`, which the request
  wrapper counts as 499.

A bulk file is written to the spool directory in 256 KiB chunks, never held
whole in memory, and its file name is reduced to a safe ASCII form at once,
since it is sent on upstream and ends up in headers and logs.
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
from typing import Any

import orjson
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

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


def _not_json() -> ValidationFailed:
    return ValidationFailed(
        "value", "body", '"value" must be valid JSON of type object', "object.base"
    )


def is_json_type(content_type: str) -> bool:
    return content_type in ("application/json", "text/json") or content_type.endswith("+json")


async def read_body(request: web.Request, settings: Settings) -> bytes:
    """The raw JSON body: 415 for another type, 413 over the limit, 408 when too slow.

    A body without any Content-Type is read as JSON, as Clearout's own
    examples sometimes send it; a declared other type (a form, say) is not.
    """
    declared = request.body_exists and "Content-Type" in request.headers
    if declared and not is_json_type(request.content_type):
        raise UnsupportedMediaType(
            f"This route takes application/json, not {request.content_type[:60]}"
        )
    limit = settings.max_json_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)
    content = request.content
    # A small body usually arrives with the headers: take it without awaiting.
    if length is not None and content.is_eof() and content.total_bytes == length:
        return content.read_nowait()
    try:
        async with asyncio.timeout(settings.body_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit) from None
    except TimeoutError:
        raise RequestTimeout("The request body did not arrive in time") from None


async def read_json(request: web.Request, settings: Settings) -> Any:
    """The JSON body parsed, or a 400 in Clearout's validation shape."""
    try:
        return orjson.loads(await read_body(request, settings))
    except orjson.JSONDecodeError:
        raise _not_json() from None


@dataclass
class Upload:
    filename: str  # already safe: see safe_filename
    content_type: str
    path: Path
    size: int
    ignore_duplicate_file: str | None

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


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


async def spool_upload(request: web.Request, settings: Settings) -> Upload:
    """Write the multipart `file` part to the spool directory, bounded in size and time."""
    limit = settings.max_bulk_bytes
    if request.content_length is not None and request.content_length > limit + ENVELOPE_ALLOWANCE:
        raise _too_large(limit)
    if not request.content_type.startswith("multipart/"):
        raise UnsupportedMediaType(
            'Bulk uploads are multipart/form-data with the list in a "file" field'
        )
    try:
        async with asyncio.timeout(settings.upload_timeout):
            return await _read_form(request, settings)
    except TimeoutError:
        raise RequestTimeout("The upload did not arrive in time") from None
    except MALFORMED:
        raise BadRequest("The multipart body is malformed") from None


class _Form:
    """What the parts of one upload leave behind, and the bytes they took."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.upload: Upload | None = None
        self.ignore_duplicate: str | None = None
        self.budget = settings.max_bulk_bytes + ENVELOPE_ALLOWANCE

    def take(self, size: int) -> None:
        self.budget -= size
        if self.budget < 0:
            raise _too_large(self.settings.max_bulk_bytes)


async def _read_form(request: web.Request, settings: Settings) -> Upload:
    reader = await request.multipart()
    form = _Form(settings)
    try:
        while (part := await reader.next()) is not None:
            await _read_part(part, form)
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
        async with asyncio.timeout(form.settings.body_timeout):
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
    fd, tmp = tempfile.mkstemp(prefix="bulk-", suffix=".upload", dir=settings.spool_dir)
    path = Path(tmp)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in _chunks(part, form):
                size += len(chunk)
                if size > settings.max_bulk_bytes:
                    raise _too_large(settings.max_bulk_bytes)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    content_type = part.headers.get("Content-Type", "application/octet-stream")
    if not content_type.isascii() or not content_type.isprintable():
        content_type = "application/octet-stream"
    return Upload(filename, content_type[:100], path, size, None)
