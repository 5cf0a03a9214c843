"""`GET /openapi.json`: the gateway's own OpenAPI 3.1 document.

The document is written by hand (`gateway/http/openapi.json`, shipped as package
data) and read once, on first use: it cannot change while the process runs,
so every answer is the same bytes and costs no file access.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

DOCUMENT = "openapi.json"


@functools.cache
def document_bytes() -> bytes:
    """The document exactly as shipped inside the `gateway` package."""
    return resources.files("gateway.http").joinpath(DOCUMENT).read_bytes()


async def openapi_document(_request: web.Request) -> web.Response:
    return web.Response(body=document_bytes(), content_type="application/json")
