"""The teams file at run time: reload on demand, on SIGHUP, and when it changes.

The registry is replaced in place inside the app's `TeamDirectory`, so
everything holding the directory sees the new teams at once.
"""

from __future__ import annotations

import contextlib

import structlog
from aiohttp import web

from gateway.http.keys import METRICS, TEAMS
from gateway.teams import TeamRegistry, TeamsFileError

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
        # No traceback: the message names the file and the line at fault.
        log.error("teams_reload_failed", error=str(exc), source=source)  # noqa: TRY400
        return str(exc)
    directory.registry = registry
    with contextlib.suppress(OSError):
        directory.mtime = directory.path.stat().st_mtime
    for name in registry.names():
        app[METRICS].add_team(name)
    log.info("teams_reloaded", teams=len(registry.teams), source=source)
    return None


def check_for_change(app: web.Application) -> None:
    """Reload the teams file when it changed on disk (a ConfigMap update, say)."""
    directory = app[TEAMS]
    if directory.path is None:
        return
    try:
        mtime = directory.path.stat().st_mtime
    except OSError:
        return  # mid-update (Kubernetes swaps a symlink): look again later
    if mtime != directory.mtime:
        directory.mtime = mtime  # a bad file is reported once, not every round
        reload_teams(app, "file_change")
