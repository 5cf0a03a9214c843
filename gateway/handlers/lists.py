"""Bulk finder routes: upload, progress, result download, cancel and remove."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from gateway import validation
from gateway.appkeys import SETTINGS
from gateway.handlers.common import call_upstream, read_json, relay, spool_upload


async def bulk(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    upload = await spool_upload(request, settings)
    try:
        with upload.path.open("rb") as fh:
            form = aiohttp.FormData()
            # aiohttp streams an open file in chunks; the upload never sits in memory.
            form.add_field("file", fh, filename=upload.filename, content_type=upload.content_type)
            if upload.ignore_duplicate_file is not None:
                form.add_field("ignore_duplicate_file", upload.ignore_duplicate_file)
            answer = await call_upstream(
                request,
                "bulk",
                "POST",
                "/email_finder/bulk",
                data=form,
                timeout=settings.upstream_bulk_timeout,
            )
    finally:
        upload.discard()
    return relay(answer)


async def progress_status(request: web.Request) -> web.StreamResponse:
    list_id = validation.query_id(dict(request.query), "list_id")
    answer = await call_upstream(
        request,
        "progress_status",
        "GET",
        "/email_finder/bulk/progress_status",
        params={"list_id": list_id},
        timeout=request.app[SETTINGS].upstream_timeout,
    )
    return relay(answer)


async def _list_action(request: web.Request, route: str, path: str) -> web.Response:
    settings = request.app[SETTINGS]
    payload: Any = await read_json(request, settings.max_json_bytes)
    validation.list_id_in_body(payload)
    answer = await call_upstream(
        request,
        route,
        "POST",
        path,
        json_body=payload,
        timeout=settings.upstream_timeout,
    )
    return relay(answer)


async def download_result(request: web.Request) -> web.StreamResponse:
    response = await _list_action(request, "download_result", "/email_finder/download/result")
    if request.app[SETTINGS].sandbox and response.status == 200:
        response = _sandbox_link_via_gateway(request, response)
    return response


def _sandbox_link_via_gateway(request: web.Request, response: web.Response) -> web.Response:
    """Point the sandbox's result link at this gateway, which serves the file.

    The sandbox listens on an internal loopback port a caller cannot reach;
    the gateway serves the same `/sandbox/results/...` path itself.
    """
    payload = json.loads(response.body)  # type: ignore[arg-type]
    data = payload.get("data") if isinstance(payload, dict) else None
    if isinstance(data, dict) and isinstance(data.get("url"), str):
        link = URL(data["url"])
        data["url"] = str(request.url.origin().with_path(link.path).with_query(link.query))
        response.body = json.dumps(payload).encode()
    return response


async def list_cancel(request: web.Request) -> web.StreamResponse:
    return await _list_action(request, "list_cancel", "/email_finder/list/cancel")


async def list_remove(request: web.Request) -> web.StreamResponse:
    return await _list_action(request, "list_remove", "/email_finder/list/remove")
