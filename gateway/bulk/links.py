"""Signed, expiring links to a list's merged result, served by the gateway itself.

`download/result` answers an absolute URL of the gateway (GATEWAY_PUBLIC_URL,
else the request's own origin) like Clearout's presigned one: the path names
the list and the file, the query carries the expiry and an HMAC-SHA256 of
both.  Any replica can check it: the key is GATEWAY_RESULT_LINK_SECRET, or
else derived from the upstream token, which every replica holds (the token
itself is never in the link).  A link cannot be moved to another list or
have its expiry stretched; past its expiry it is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote

RESULT_PATH = "/v2/email_finder/results"


def link_key(secret: str | None, token: str | None) -> bytes:
    if secret:
        return secret.encode()
    # Domain-separated, so the key reveals nothing of the token it came from.
    return hashlib.sha256(b"clearout-gateway result links\x00" + (token or "").encode()).digest()


@dataclass(frozen=True)
class Links:
    key: bytes
    lifetime: int

    def sign(self, list_id: str, expires: int) -> str:
        return hmac.new(self.key, f"{list_id}|{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, origin: str, list_id: str, filename: str, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.lifetime)
        return (
            f"{origin.rstrip('/')}{RESULT_PATH}/{list_id}/{quote(filename)}"
            f"?expires={expires}&signature={self.sign(list_id, expires)}"
        )

    def valid(self, list_id: str, expires: str, signature: str) -> bool:
        """Whether the link is genuine and not yet expired."""
        try:
            until = int(expires)
        except ValueError:
            return False
        genuine = hmac.compare_digest(signature.encode(), self.sign(list_id, until).encode())
        return genuine and time.time() <= until
