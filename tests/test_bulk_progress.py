"""Progress of a gateway list while its merge runs in another task.

The sandbox is the real upstream on loopback, with its result links answering
after `RESULT_DELAY` seconds, so the merge of a list lasts about that long
and a second progress call arrives while the first one's merge holds the
claim.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.sandbox import Sandbox
from gateway.sandbox.server import RESULTS
from tests.conftest import GatewayFactory, auth
from tests.test_bulk_saver import Client, csv_bytes, progress, result_link, upload

RESULT_DELAY = 0.8
CANCEL = "/v2/email_finder/list/cancel"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def slow_results(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(RESULTS):
        await asyncio.sleep(RESULT_DELAY)
    return await handler(request)


@pytest.fixture
async def upstream_url(sandbox: Sandbox) -> AsyncIterator[str]:
    """The sandbox as the upstream (as in conftest), its result files served late."""
    app = sandbox.make_app()
    app.middlewares.append(slow_results)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}/v2"
    await server.close()


async def test_a_progress_call_waits_for_the_merge_another_call_is_running(
    gateway: Client, sandbox: Sandbox
) -> None:
    """The second of two progress calls finds the merge claimed by the first: it waits for
    it, as the first does, instead of answering 99 % while the merge is a moment away."""
    rows = [["Name", "Domain"], ["Nia Oak", "apple.com"], ["Otto Pike", "apple.com"]]
    list_id = (await upload(gateway, csv_bytes(rows)))["data"]["list_id"]
    await asyncio.sleep(sandbox.config.bulk_seconds + 0.2)  # upstream's part is done
    first = asyncio.create_task(progress(gateway, list_id))  # claims the merge
    await asyncio.sleep(RESULT_DELAY / 4)
    second = await progress(gateway, list_id)
    completed = {"progress_status": "completed", "percentage": 100}
    assert second["data"] == completed, "the caller without the claim waited for the merge"
    assert (await first)["data"] == completed


async def test_a_replica_waits_for_the_merge_another_replica_is_running(
    make_gateway: GatewayFactory, redis_url: str, sandbox: Sandbox
) -> None:
    """The same across replicas sharing Redis: the claim is seen there."""
    first_replica = await make_gateway(redis_url=redis_url)
    second_replica = await make_gateway(redis_url=redis_url)
    rows = [["Name", "Domain"], ["Pia Quinn", "apple.com"]]
    list_id = (await upload(first_replica, csv_bytes(rows)))["data"]["list_id"]
    await asyncio.sleep(sandbox.config.bulk_seconds + 0.2)
    first = asyncio.create_task(progress(first_replica, list_id))
    await asyncio.sleep(RESULT_DELAY / 4)
    second = await progress(second_replica, list_id)
    completed = {"progress_status": "completed", "percentage": 100}
    assert second["data"] == completed
    assert (await first)["data"] == completed


async def test_a_download_just_after_a_cancel_waits_for_the_merge_the_cancel_started(
    gateway: Client, sandbox: Sandbox
) -> None:
    """Cancel starts the merge of what upstream answered; a download asked at once finds
    it claimed and waits for it (a cancelled list keeps its state when merged, so the
    wait cannot end on a state change), instead of answering 1029."""
    sandbox.config.bulk_seconds = 5.0  # still running upstream when cancelled
    rows = [["Name", "Domain"], ["Rae Stone", "apple.com"]]
    list_id = (await upload(gateway, csv_bytes(rows)))["data"]["list_id"]
    resp = await gateway.post(CANCEL, json={"list_id": list_id}, headers=auth())
    assert (await resp.json())["status"] == "success"
    link = await result_link(gateway, list_id)
    assert link["status"] == "success", link
    assert "/v2/email_finder/results/" in link["data"]["url"]
