"""Admin routes (`/admin/...`): need GATEWAY_ADMIN_TOKEN; every action is audit-logged."""

from __future__ import annotations

import hmac

import structlog
from aiohttp import web

from gateway import validation
from gateway.appkeys import FINDER, SETTINGS, TEAMS
from gateway.auth import presented_key
from gateway.errors import AdminDisabled, Unauthorized
from gateway.handlers.common import read_json
from gateway.normalize import cache_key

audit = structlog.get_logger("gateway.audit")


def require_admin(request: web.Request) -> None:
    token = request.app[SETTINGS].admin_token
    if token is None:
        raise AdminDisabled("Admin routes are disabled: GATEWAY_ADMIN_TOKEN is not set")
    presented = presented_key(request.headers.get("Authorization")) or ""
    if not hmac.compare_digest(presented.encode(), token.encode()):
        audit.warning("admin_denied", path=request.path, remote=request.remote)
        raise Unauthorized("Invalid admin token")


async def purge_cache(request: web.Request) -> web.Response:
    """Forget one person's cached answer (every team's copy), by name and domain."""
    require_admin(request)
    payload = await read_json(request, request.app[SETTINGS].max_json_bytes)
    if not isinstance(payload, dict):
        raise validation.not_an_object()
    name = validation.required_string(payload, "name", "body")
    domain = validation.required_string(payload, "domain", "body")
    finder = request.app[FINDER]
    keys = finder.cache.team_keys(request.app[TEAMS].registry.names(), name, domain)
    deleted = await finder.cache.delete(keys)
    audit.info("admin_cache_purge", key=cache_key(name, domain), deleted=deleted)
    return web.json_response(
        {"status": "success", "data": {"key": cache_key(name, domain), "deleted": deleted}}
    )
