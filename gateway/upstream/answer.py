"""What travels to and from Clearout: the answer as it came, and the headers worth passing on.

`UpstreamAnswer` is the upstream's answer kept whole (status, relayable
headers, body bytes), so it can be replayed to the caller unchanged or
cached; `json()` reads it once and remembers.  Request headers pass only
from a short allow-list and only when plain printable ASCII; answer headers
lose the hop-by-hop ones (RFC 9110 7.6.1) and those the gateway recomputes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 7.6.1 hop-by-hop headers, plus the framing headers aiohttp
# recomputes for the body it sends on, and what must not reach a caller.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "content-length", "content-encoding", "date", "server", "set-cookie",
})  # fmt: skip

# Request headers worth passing on; everything else the caller sent stays here.
FORWARDED_REQUEST_HEADERS = ("Accept", "Accept-Language", "User-Agent", "X-Request-ID")

_UNREAD = object()


@dataclass(slots=True)
class UpstreamAnswer:
    status: int
    headers: CIMultiDict[str]
    body: bytes
    elapsed_ms: float = 0.0
    _json: Any = field(default=_UNREAD, repr=False, compare=False)

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (parsed once)."""
        if self._json is _UNREAD:
            try:
                self._json = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                self._json = None
        return self._json

    def error_code(self) -> str | None:
        """Clearout's `error.code` (or the HTTP status) when this answer is a failure."""
        payload = self.json()
        failed = isinstance(payload, dict) and payload.get("status") == "failed"
        if self.status < 400 and not failed:
            return None
        if failed:
            error = payload.get("error")
            if isinstance(error, dict) and isinstance(error.get("code"), int):
                return str(error["code"])
        return str(self.status)


def local_answer(payload: Any, status: int = 200) -> UpstreamAnswer:
    """An answer the gateway gives in the upstream's own shape (an unknown id, say)."""
    headers = CIMultiDict({"Content-Type": "application/json; charset=utf-8"})
    return UpstreamAnswer(status, headers, orjson.dumps(payload))


def response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Upstream headers worth replaying to the caller (hop-by-hop removed)."""
    extra_hop = {
        token.strip().lower()
        for value in upstream.getall("Connection", [])
        for token in value.split(",")
    }
    return CIMultiDict(
        (k, v) for k, v in upstream.items() if k.lower() not in HOP_BY_HOP | extra_hop
    )


def forwarded_headers(caller_headers: Mapping[str, str] | None) -> dict[str, str]:
    """The caller headers worth passing on, when their values are plain printable ASCII.

    A value with raw bytes or control characters is dropped rather than
    forwarded: it could not be sent as is, and it is never needed upstream.
    """
    if not caller_headers:
        return {}
    out = {}
    for name in FORWARDED_REQUEST_HEADERS:
        value = caller_headers.get(name)
        if value is not None and value.isascii() and value.isprintable():
            out[name] = value
    return out
