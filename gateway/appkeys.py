"""Typed `web.AppKey`s for every resource the app holds, and small state holders.

Kept apart from `gateway.app` so handlers can import the keys without
importing the factory that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from gateway.auth import Team, TeamRegistry
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.upstream import Upstream

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.budgets import Budgets
    from gateway.finder import Finder
    from gateway.sandbox import Sandbox
    from gateway.settlement import ListSettler


@dataclass
class Lifecycle:
    """Readiness as the orchestrator sees it: false while starting and draining."""

    started: bool = False
    draining: bool = False

    @property
    def accepting(self) -> bool:
        return self.started and not self.draining


@dataclass
class TeamDirectory:
    """The current teams, swapped whole when the teams file is reloaded."""

    registry: TeamRegistry
    path: Path | None = None
    loaded_at: float = 0.0
    mtime: float | None = None


@dataclass(slots=True)
class RequestContext:
    """What one request's access-log line and metrics need to know."""

    request_id: str
    route: str
    team: Team | None = None
    cache: str | None = None
    upstream_ms: float | None = None


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
TEAMS = web.AppKey("teams", TeamDirectory)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", Upstream)
REDIS: web.AppKey[Redis | None] = web.AppKey("redis")
SANDBOX: web.AppKey[Sandbox] = web.AppKey("sandbox")
FINDER: web.AppKey[Finder] = web.AppKey("finder")
BUDGETS: web.AppKey[Budgets] = web.AppKey("budgets")
SETTLER: web.AppKey[ListSettler] = web.AppKey("settler")

CONTEXT = web.RequestKey("context", RequestContext)
