"""Fetching an upstream list's result file: the download link, then the file, to disk.

Clearout answers `download/result` with a presigned link on an outside host
(valid five minutes); the file is streamed from it to the spool directory,
never held in memory, and no Authorization header goes with it.  Whoever
needs a list's results (settlement, the merge, the harvest) fetches them
through here.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

from gateway.errors import GatewayError
from gateway.lookup.pricing import success_data
from gateway.settings import Settings
from gateway.upstream import Upstream

CHUNK = 256 * 1024


class ResultUnavailable(Exception):
    """Upstream gave no result link for the list (yet), or the link failed."""


# Why a result file could not be had now (whoever needs it tries again later).
FETCH_ERRORS = (ResultUnavailable, GatewayError, aiohttp.ClientError, OSError, TimeoutError)


async def fetch_result(
    upstream: Upstream, session: aiohttp.ClientSession, settings: Settings, list_id: str,
    dest: Path,
) -> Path:  # fmt: skip
    """Write upstream list `list_id`'s result file to `dest`."""
    answer = await upstream.call(
        "download_result", "POST", "/email_finder/download/result",
        json_body={"list_id": list_id}, timeout=settings.upstream_timeout,
    )  # fmt: skip
    data = success_data(answer.json())
    url = data.get("url") if data else None
    if not isinstance(url, str):
        raise ResultUnavailable(f"no result link (HTTP {answer.status})")
    timeout = aiohttp.ClientTimeout(total=settings.upstream_bulk_timeout)
    with dest.open("wb") as out:
        async with session.get(url, timeout=timeout) as resp:
            if resp.status != 200:
                raise ResultUnavailable(f"result link answered HTTP {resp.status}")
            async for chunk in resp.content.iter_chunked(CHUNK):
                out.write(chunk)
    return dest
