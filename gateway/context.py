"""The current request's facts, in a context variable: its id, route, team, cache, upstream time.

The HTTP layer starts them when a request arrives (`begin`); code far below
it, with no request object in sight, adds what it learns: the upstream seam
notes how long Clearout took, the lookup service how the cache answered.
The access-log line and every other log line written while serving the
request read them back (`gateway.logging`).  aiohttp runs each request in a
task of its own, which copies the context, so requests never see each
other's facts; work a request spawns (a settlement in the background) keeps
the request's id in its log lines.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

NO_TEAM = "none"


@dataclass(slots=True)
class RequestFacts:
    request_id: str
    route: str
    team: str = NO_TEAM
    cache: str | None = None
    upstream_ms: float | None = None


_CURRENT: contextvars.ContextVar[RequestFacts | None] = contextvars.ContextVar(
    "gateway_request", default=None
)


def begin(request_id: str, route: str) -> RequestFacts:
    facts = RequestFacts(request_id, route)
    _CURRENT.set(facts)
    return facts


def current() -> RequestFacts | None:
    return _CURRENT.get()


def note_upstream_ms(elapsed_ms: float) -> None:
    facts = _CURRENT.get()
    if facts is not None:
        facts.upstream_ms = elapsed_ms


def note_cache(status: str) -> None:
    facts = _CURRENT.get()
    if facts is not None:
        facts.cache = status
