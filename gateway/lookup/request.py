"""What a lookup is asked and what it answers, in plain values (no HTTP types).

`InstantRequest` is a validated instant-finder body; `LookupResult` is the
answer the lookup service gives back, which the HTTP layer renders as the
caller's response and a bulk job reads as a row's result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

CacheMode = Literal["normal", "refresh", "bypass"]
CacheStatus = Literal["HIT", "MISS", "COALESCED", "BYPASS"]


@dataclass(frozen=True, slots=True)
class InstantRequest:
    name: str
    domain: str
    timeout_ms: int
    queue: bool

    def upstream_body(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "domain": self.domain,
            "timeout": self.timeout_ms,
            "queue": self.queue,
        }


@dataclass(frozen=True, slots=True)
class LookupResult:
    """One instant answer: the upstream's status, headers and body bytes, and how it came.

    `headers` are the upstream headers worth relaying (empty for a cache
    hit, whose body is replayed alone); `credits_left` are the team's
    remaining-credit headers.
    """

    status: int
    body: bytes
    cache: CacheStatus
    headers: Mapping[str, str] = field(default_factory=dict)
    credits_left: Mapping[str, str] = field(default_factory=dict)
