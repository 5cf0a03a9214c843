"""`GET /v2/email_verify/getcredits`: what a team may still spend, in Clearout's own shape.

A Clearout client asks this route for its credits before it starts a job;
behind the gateway its token is a team key, so the answer is the team's.
A team with a quota is shown what is left in its tightest window (day or
month, whichever leaves less) and that window's size, read from the quota
store (503 `store_unavailable` when the store cannot say).  A team without
one shares the company account, so it is shown the upstream balance the
gateway polls (polled now when nothing was yet; 503 `upstream_unavailable`
when that fails), with the account's `credits.total` when upstream sent one
and nothing else of the account.
"""

from __future__ import annotations

from aiohttp import web

from gateway.budget import limited
from gateway.budget.credits import Remaining
from gateway.errors import UpstreamUnavailable
from gateway.http.endpoint import team_of
from gateway.http.keys import BALANCE, BUDGETS
from gateway.teams import Team

Figure = int | float


def tightest(team: Team, left: Remaining) -> tuple[int, int]:
    """(credits left, window size) of the window that leaves the team less; day on a tie."""
    quota = team.quota
    windows = [
        (remaining, size)
        for remaining, size in ((left.day, quota.credits_per_day),
                                (left.month, quota.credits_per_month))
        if remaining is not None and size is not None
    ]  # fmt: skip
    return min(windows, key=lambda window: window[0])


def credits_answer(available: Figure, total: Figure) -> web.Response:
    data = {"available_credits": available, "credits": {"available": available, "total": total}}
    return web.json_response({"status": "success", "data": data})


async def getcredits(request: web.Request) -> web.Response:
    team = team_of(request)
    if limited(team):
        left = await request.app[BUDGETS].budget.remaining(team)
        return credits_answer(*tightest(team, left))
    balance = request.app[BALANCE]
    available = await balance.known()
    if available is None:
        raise UpstreamUnavailable("Clearout's credit balance cannot be read right now")
    return credits_answer(available, balance.total if balance.total is not None else available)
