"""Admin routes (`/admin/...`): need GATEWAY_ADMIN_TOKEN; every action is audit-logged."""

from __future__ import annotations

import hmac
from typing import Any

import structlog
from aiohttp import web

from gateway import validation
from gateway.budget import Budgets, limited
from gateway.bulk import tables
from gateway.errors import AdminDisabled, PayloadTooLarge, Unauthorized, ValidationFailed
from gateway.http.bodies import read_json
from gateway.http.keys import BUDGETS, BULK, FINDER, SETTINGS, TEAMS
from gateway.http.teams_reload import reload_teams
from gateway.lookup.normalize import cache_key
from gateway.teams import Team, key_bytes, presented_key
from gateway.uploads import spool_upload

audit = structlog.get_logger("gateway.audit")


def require_admin(request: web.Request) -> None:
    token = request.app[SETTINGS].admin_token
    if token is None:
        raise AdminDisabled("Admin routes are disabled: GATEWAY_ADMIN_TOKEN is not set")
    presented = presented_key(request.headers.get("Authorization")) or ""
    if not hmac.compare_digest(key_bytes(presented), key_bytes(token)):
        audit.warning("admin_denied", path=request.path, remote=request.remote)
        raise Unauthorized("Invalid admin token")


async def purge_cache(request: web.Request) -> web.Response:
    """Forget one person's cached answer (every team's copy), by name and domain."""
    require_admin(request)
    payload = await read_json(request, request.app[SETTINGS])
    if not isinstance(payload, dict):
        raise validation.not_an_object()
    name = validation.required_string(payload, "name", "body", validation.MAX_NAME_CHARS)
    domain = validation.required_string(
        payload, "domain", "body", validation.MAX_DOMAIN_CHARS
    )
    finder = request.app[FINDER]
    keys = finder.cache.team_keys(request.app[TEAMS].registry.names(), name, domain)
    deleted = await finder.cache.delete(keys)
    audit.info("admin_cache_purge", key=cache_key(name, domain), deleted=deleted)
    return web.json_response(
        {"status": "success", "data": {"key": cache_key(name, domain), "deleted": deleted}}
    )


async def teams(request: web.Request) -> web.Response:
    """Every team with its limits, usage and what is left in the current windows."""
    require_admin(request)
    registry = request.app[TEAMS].registry
    rows = [await _team_row(request.app[BUDGETS], registry.teams[n]) for n in registry.names()]
    audit.info("admin_teams_viewed", teams=len(rows))
    return web.json_response({"status": "success", "data": {"teams": rows}})


async def _team_row(budgets: Budgets, team: Team) -> dict[str, Any]:
    quota = team.quota
    row: dict[str, Any] = {
        "name": team.name,
        "keys": len(team.key_sha256),
        "quota": {
            "credits_per_day": quota.credits_per_day,
            "credits_per_month": quota.credits_per_month,
            "requests_per_second": quota.requests_per_second,
            "charge_cache_hits": quota.charge_cache_hits,
        },
        "used": None,  # not counted: the team has no limits
        "remaining": {"day": None, "month": None},
    }
    if limited(team):
        used_day, used_month = await budgets.budget.used(team)
        left = await budgets.budget.remaining(team)
        row["used"] = {"day": used_day, "month": used_month}
        row["remaining"] = {"day": left.day, "month": left.month}
    return row


async def reload(request: web.Request) -> web.Response:
    """Re-read the teams file now (also done on SIGHUP and when the file changes)."""
    require_admin(request)
    error = reload_teams(request.app, "admin")
    audit.info("admin_teams_reload", ok=error is None)
    if error is not None:
        raise ValidationFailed("teams_file", "body", error, "teams.invalid")
    return web.json_response(
        {"status": "success", "data": {"teams": request.app[TEAMS].registry.names()}}
    )


async def import_results(request: web.Request) -> web.Response:
    """Fill the cache from a past Clearout finder result file (multipart `file`)."""
    require_admin(request)
    upload = await spool_upload(request, request.app[SETTINGS])
    try:
        harvested = await request.app[BULK].import_results(upload.path)
    except tables.TableTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    except tables.UnreadableFile as exc:
        raise ValidationFailed(
            "file", "body", f'"file" is not a Clearout finder result file: {exc}', "file.invalid"
        ) from None
    finally:
        upload.discard()
    audit.info("admin_cache_import", imported=harvested.imported, skipped=harvested.skipped)
    data = {"imported": harvested.imported, "skipped": harvested.skipped}
    return web.json_response({"status": "success", "data": data})
