"""Bulk finder routes: upload, progress, result download, cancel and remove.

Each handler parses, asks the bulk service (`gateway.bulk.service`) and
renders its answer; ownership, bounds and credits live in the service.
"""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from gateway import validation
from gateway.errors import LinkRefused
from gateway.http.bodies import read_json
from gateway.http.endpoint import team_of
from gateway.http.handlers.instant import cache_mode
from gateway.http.keys import BULK, SETTINGS
from gateway.http.responses import relay
from gateway.lookup.pricing import success_data
from gateway.uploads import spool_upload
from gateway.upstream import UpstreamAnswer, local_answer


async def bulk(request: web.Request) -> web.StreamResponse:
    upload = await spool_upload(request, request.app[SETTINGS])
    try:
        answer = await request.app[BULK].upload(
            team_of(request), upload, request.headers, cache_mode(request)
        )
    finally:
        upload.discard()
    return relay(answer)


async def progress_status(request: web.Request) -> web.StreamResponse:
    list_id = validation.query_id(dict(request.query), "list_id")
    return relay(await request.app[BULK].progress(team_of(request), list_id, request.headers))


async def _list_action(request: web.Request, route: str) -> UpstreamAnswer:
    payload = await read_json(request, request.app[SETTINGS])
    list_id = validation.list_id_in_body(payload)
    origin = str(request.url.origin())
    return await request.app[BULK].act(
        team_of(request), route, list_id, payload, request.headers, origin
    )


async def download_result(request: web.Request) -> web.StreamResponse:
    answer = await _list_action(request, "download_result")
    if request.app[SETTINGS].sandbox and answer.status == 200:
        answer = _sandbox_link_via_gateway(request, answer)
    return relay(answer)


def _sandbox_link_via_gateway(request: web.Request, answer: UpstreamAnswer) -> UpstreamAnswer:
    """Point the sandbox's result link at this gateway, which serves the file.

    The sandbox listens on an internal loopback port a caller cannot reach;
    the gateway serves the same `/sandbox/results/...` path itself.
    """
    payload = answer.json()
    data = success_data(payload)
    if data is None or not isinstance(data.get("url"), str):
        return answer
    link = URL(data["url"])
    data["url"] = str(request.url.origin().with_path(link.path).with_query(link.query))
    return local_answer(payload)


async def list_cancel(request: web.Request) -> web.StreamResponse:
    return relay(await _list_action(request, "list_cancel"))


async def list_remove(request: web.Request) -> web.StreamResponse:
    return relay(await _list_action(request, "list_remove"))


async def result_file(request: web.Request) -> web.StreamResponse:
    """A gateway list's merged result, behind the signed link `download/result` gave."""
    found = await request.app[BULK].result_file(
        request.match_info["list_id"],
        request.query.get("expires", ""),
        request.query.get("signature", ""),
    )
    if found is None:
        raise LinkRefused("The result link is not valid, has expired, or its list is gone")
    response = web.StreamResponse(headers={
        "Content-Type": found.media_type,
        "Content-Disposition": f'attachment; filename="{found.filename}"',
    })  # fmt: skip
    await response.prepare(request)
    async for chunk in found.chunks:
        await response.write(chunk)
    await response.write_eof()
    return response
