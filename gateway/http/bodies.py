"""JSON request bodies in, bounded: the right type, the size limit, in time.

* a declared `Content-Type` that is not JSON → 415 (`unsupported_media_type`);
* over GATEWAY_MAX_JSON_BYTES → 413, with or without a Content-Length;
* not arrived within GATEWAY_BODY_TIMEOUT_SECONDS → 408;
* not JSON → 400 in Clearout's validation shape.

Bulk uploads come in through `gateway.uploads`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import PayloadTooLarge, RequestTimeout, UnsupportedMediaType, ValidationFailed
from gateway.settings import Settings


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
