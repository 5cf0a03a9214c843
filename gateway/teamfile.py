"""The teams file at run time: reload on demand, on SIGHUP, and when it changes.

The registry is replaced in place inside the app's `TeamDirectory`, so
everything holding the directory sees the new teams at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from gateway.appkeys import METRICS, TEAMS
from gateway.auth import TeamRegistry, TeamsFileError

log = structlog.get_logger("gateway.teams")

TEAMS_WATCH_SECONDS = 5.0


def reload_teams(app: web.Application, source: str) -> str | None:
    """Re-read the teams file in place; the error text when it cannot be used.

    On a bad file the previous teams stay in force: a typo must not lock
    every caller out.
    """
    directory = app[TEAMS]
    if directory.path is None:
        return "no teams file to reload (sandbox demo team)"
    try:
        registry = TeamRegistry.from_file(directory.path)
    except TeamsFileError as exc:
        log.error("teams_reload_failed", error=str(exc), source=source)
        return str(exc)
    directory.registry, directory.loaded_at = registry, time.time()
    with contextlib.suppress(OSError):
        directory.mtime = directory.path.stat().st_mtime
    for name in registry.names():
        app[METRICS].add_team(name)
    log.info("teams_reloaded", teams=len(registry.teams), source=source)
    return None


async def watch_teams_ctx(app: web.Application) -> AsyncIterator[None]:
    """Reload the teams file when it changes on disk (a ConfigMap update, say)."""
    directory = app[TEAMS]

    async def watch() -> None:
        while True:
            await asyncio.sleep(TEAMS_WATCH_SECONDS)
            if directory.path is None:
                return
            try:
                mtime = directory.path.stat().st_mtime
            except OSError:
                continue  # mid-update (Kubernetes swaps a symlink): look again later
            if mtime != directory.mtime:
                directory.mtime = mtime  # a bad file is reported once, not every round
                reload_teams(app, "file_change")

    task = asyncio.create_task(watch(), name="teams-watch")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
