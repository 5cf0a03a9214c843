"""Bulk finder routes: upload, progress, result download, cancel and remove.

Every list id is tied to the team that uploaded it; any other team naming it
gets the upstream's own answer for an unknown list.  An upload reserves the
found-address price for each distinct row before it is forwarded, and the
reservation is settled from the result file (`gateway.settlement`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from gateway import tabular, validation
from gateway.appkeys import BUDGETS, CONTEXT, SETTINGS, SETTLER
from gateway.auth import Team
from gateway.budgets import not_found_answer
from gateway.handlers.bodies import Upload, read_json, spool_upload
from gateway.handlers.common import call_upstream, relay
from gateway.pricing import success_data
from gateway.quota import limited
from gateway.upstream import UpstreamAnswer


def _team(request: web.Request) -> Team:
    team = request[CONTEXT].team
    assert team is not None  # the wrapper authenticated this route
    return team


async def bulk(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    budgets, settler = request.app[BUDGETS], request.app[SETTLER]
    team = _team(request)
    upload = await spool_upload(request, settings)
    try:
        amount = 0
        if limited(team):
            kind = tabular.file_kind(upload.filename)
            if kind is not None:
                try:
                    rows = await asyncio.to_thread(tabular.count_distinct_rows, upload.path, kind)
                except tabular.UnreadableFile:
                    rows = 0  # upstream will refuse the file itself
                amount = rows * settings.price_found
        reservation = await budgets.reserve(team, amount)
        settled = False
        try:
            answer = await _forward(request, upload, upload.ignore_duplicate_file)
            list_id = _duplicate_of(answer)
            if list_id is not None and not await budgets.may_use("list", list_id, team):
                # Upstream matched another team's upload: naming that list would
                # reveal it.  Upload anew, as the caller would with the flag.
                answer = await _forward(request, upload, "true")
            data = success_data(answer.json())
            new_id = data.get("list_id") if data else None
            if isinstance(new_id, str):
                await budgets.record_owner("list", new_id, team)
                await settler.hold(new_id, reservation)
                settled = True
        finally:
            if not settled:
                await budgets.settle(reservation, 0)
    finally:
        upload.discard()
    return relay(answer)


async def _forward(request: web.Request, upload: Upload, ignore_duplicate: str | None) -> Any:
    with upload.path.open("rb") as fh:
        form = aiohttp.FormData()
        # aiohttp streams an open file in chunks; the upload never sits in memory.
        form.add_field("file", fh, filename=upload.filename, content_type=upload.content_type)
        if ignore_duplicate is not None:
            form.add_field("ignore_duplicate_file", ignore_duplicate)
        return await call_upstream(
            request,
            "bulk",
            "POST",
            "/email_finder/bulk",
            data=form,
            timeout=request.app[SETTINGS].upstream_bulk_timeout,
        )


def _duplicate_of(answer: UpstreamAnswer) -> str | None:
    payload = answer.json()
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict) or error.get("code") != 2043:
        return None
    info = error.get("additional_info")
    list_id = info.get("list_id") if isinstance(info, dict) else None
    return list_id if isinstance(list_id, str) else None


async def progress_status(request: web.Request) -> web.StreamResponse:
    list_id = validation.query_id(dict(request.query), "list_id")
    if not await request.app[BUDGETS].may_use("list", list_id, _team(request)):
        return not_found_answer("progress_status")
    answer = await call_upstream(
        request,
        "progress_status",
        "GET",
        "/email_finder/bulk/progress_status",
        params={"list_id": list_id},
        timeout=request.app[SETTINGS].upstream_timeout,
    )
    data = success_data(answer.json())
    if data and data.get("progress_status") in ("completed", "cancelled"):
        request.app[SETTLER].settle_soon(list_id)
    return relay(answer)


async def _list_action(request: web.Request, route: str, path: str) -> tuple[str, web.Response]:
    settings = request.app[SETTINGS]
    payload: Any = await read_json(request, settings)
    list_id = validation.list_id_in_body(payload)
    if not await request.app[BUDGETS].may_use("list", list_id, _team(request)):
        return list_id, not_found_answer(route)
    if route == "list_remove":
        # Settle while the result file still exists upstream.
        await request.app[SETTLER].settle(list_id)
    answer = await call_upstream(
        request, route, "POST", path, json_body=payload, timeout=settings.upstream_timeout
    )
    if success_data(answer.json()) is not None:
        if route == "list_cancel":
            request.app[SETTLER].settle_soon(list_id)
        elif route == "list_remove":
            await request.app[BUDGETS].forget("list", list_id)
    return list_id, relay(answer)


async def download_result(request: web.Request) -> web.StreamResponse:
    _, response = await _list_action(request, "download_result", "/email_finder/download/result")
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
    return (await _list_action(request, "list_cancel", "/email_finder/list/cancel"))[1]


async def list_remove(request: web.Request) -> web.StreamResponse:
    return (await _list_action(request, "list_remove", "/email_finder/list/remove"))[1]
