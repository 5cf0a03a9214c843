"""Typed keys for everything the app and a request hold, and the app's small state holders.

Kept apart from `gateway.http.app` so handlers can import the keys without
importing the factory that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.tasks import Tasks
from gateway.teams import Team, TeamDirectory
from gateway.upstream import Upstream

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.budget import Budgets
    from gateway.bulk.service import BulkLists
    from gateway.lookup.finder import Finder
    from gateway.sandbox import Sandbox
    from gateway.upstream.balance import Balance


@dataclass
class Lifecycle:
    """Readiness as the orchestrator sees it: false while starting and draining."""

    started: bool = False
    draining: bool = False

    @property
    def accepting(self) -> bool:
        return self.started and not self.draining


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
TEAMS = web.AppKey("teams", TeamDirectory)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
TASKS = web.AppKey("tasks", Tasks)
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", Upstream)
REDIS: web.AppKey[Redis | None] = web.AppKey("redis")
SANDBOX: web.AppKey[Sandbox] = web.AppKey("sandbox")
FINDER: web.AppKey[Finder] = web.AppKey("finder")
BUDGETS: web.AppKey[Budgets] = web.AppKey("budgets")
BULK: web.AppKey[BulkLists] = web.AppKey("bulk")
BALANCE: web.AppKey[Balance] = web.AppKey("balance")

# The authenticated team of a request (set by the endpoint wrapper).
TEAM = web.RequestKey("team", Team)
