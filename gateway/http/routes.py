"""The route table: every path the gateway serves, its method, handler and metric label.

Each route's handler is wrapped in an `Endpoint` (request duties); the same
path with any other method answers 405 in the envelope, and every unknown
path 404, so nothing ever reaches aiohttp's plain-text errors.
"""

from __future__ import annotations

from aiohttp import web

from gateway.http.endpoint import Endpoint, Handler, method_not_allowed, not_found
from gateway.http.handlers import admin, credits, instant, lists, openapi, ops
from gateway.http.keys import SANDBOX

# (method, path, handler, route label); finder routes need a team key.
FINDER_ROUTES: list[tuple[str, str, Handler, str]] = [
    ("POST", "/v2/email_finder/instant", instant.instant, "instant"),
    ("GET", "/v2/email_finder/instant/queue_status", instant.queue_status, "queue_status"),
    ("POST", "/v2/email_finder/bulk", lists.bulk, "bulk"),
    ("GET", "/v2/email_finder/bulk/progress_status", lists.progress_status, "progress_status"),
    ("POST", "/v2/email_finder/download/result", lists.download_result, "download_result"),
    ("POST", "/v2/email_finder/list/cancel", lists.list_cancel, "list_cancel"),
    ("POST", "/v2/email_finder/list/remove", lists.list_remove, "list_remove"),
    ("GET", "/v2/email_verify/getcredits", credits.getcredits, "getcredits"),
]
OPERATOR_ROUTES: list[tuple[str, str, Handler, str]] = [
    ("GET", "/healthz", ops.healthz, "healthz"),
    ("GET", "/readyz", ops.readyz, "readyz"),
    ("GET", "/metrics", ops.metrics_text, "metrics"),
    ("GET", "/openapi.json", openapi.openapi_document, "openapi"),
    ("POST", "/admin/cache/purge", admin.purge_cache, "admin"),
    ("GET", "/admin/teams", admin.teams, "admin"),
    ("POST", "/admin/teams/reload", admin.reload, "admin"),
    ("POST", "/admin/cache/import", admin.import_results, "admin"),
    ("GET", "/v2/email_finder/results/{list_id}/{filename}", lists.result_file, "result_file"),
]


def add_routes(app: web.Application) -> None:
    for method, path, handler, route in FINDER_ROUTES:
        _add(app, method, path, handler, route, team_auth=True)
    operator = list(OPERATOR_ROUTES)
    if SANDBOX in app:
        operator.append(
            ("GET", "/sandbox/results/{list_id}/{filename}", app[SANDBOX].serve_result, "other")
        )
    for method, path, handler, route in operator:
        _add(app, method, path, handler, route, team_auth=False)
    catch_all = Endpoint(app, "other", not_found, team_auth=False)
    app.router.add_route("*", "/{tail:.*}", catch_all.serve)


def _add(
    app: web.Application, method: str, path: str, handler: Handler, route: str, *, team_auth: bool
) -> None:
    app.router.add_route(method, path, Endpoint(app, route, handler, team_auth=team_auth).serve)
    # Same path, other methods: 405 in the envelope, no key needed to learn that.
    wrong_method = Endpoint(app, route, method_not_allowed, team_auth=False)
    app.router.add_route("*", path, wrong_method.serve)
