"""Deterministic answers of the sandbox's email finder, by name and domain.

The same input always gives the same answer, so developers of caller services
can script every outcome Clearout documents:

| input                                     | answer                                        |
|-------------------------------------------|-----------------------------------------------|
| name with digits or symbols (`R2 D2`)     | 200 `failed`, code 1088                       |
| name starting with `nobody` / `unknown`,  | 200 `success`, no email (0 credits)           |
| or a domain ending in `.invalid`          |                                               |
| a role word as name (`info`, `sales`, …)  | role address `info@domain` (2 credits)        |
| domain `ratelimited.test`                 | 429, code 1030                                |
| domain `nocredits.test`                   | 402, code 1099                                |
| domain `unavailable.test`                 | 503, empty body                               |
| domain `queued.test`                      | 524 with a `queue_id`; completes later        |
| domain `slow.test`                        | found, after the sandbox's `slow_seconds`     |
| domain `charged.test`                     | found, answer carries `credits_charged: 3`    |
| anything else                             | found: `first.last@domain` (4 credits)        |

A company name (no dot, or containing spaces) becomes `<slug>.com`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from gateway.lookup.pricing import ROLE_LOCAL_PARTS

# The sandbox answers role addresses for the words Clearout prices as roles.
ROLE_WORDS = ROLE_LOCAL_PARTS
TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof", "sir"})
SUPPORTED_NAME = re.compile(r"^[^\W\d_]+(?:[ .'\-,][^\W\d_]*)*\.?$")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the sandbox answers for one lookup."""

    kind: str  # found | role | not_found | unsupported | ratelimited | nocredits | unavailable
    data: dict[str, Any] | None = None
    credits: int = 0
    queued: bool = False
    slow: bool = False


def _clean_domain(domain: str) -> str:
    value = domain.strip().lower()
    if " " in value or "." not in value:
        slug = re.sub(r"[^a-z0-9]+", "", unicodedata.normalize("NFKD", value))
        return (slug or "company") + ".com"
    value = re.sub(r"^[a-z]+://", "", value).split("/")[0].split(":")[0]
    return value.removeprefix("www.")


def _name_parts(name: str) -> list[str]:
    words = [w.strip(".,").lower() for w in name.split()]
    return [w for w in words if w and w not in TITLES]


def _confidence(name: str, domain: str) -> int:
    digest = hashlib.sha256(f"{name}|{domain}".encode()).digest()
    return 50 + digest[0] % 50


# Domains whose answer is scripted whatever the name: the failures a caller must handle.
SCRIPTED_DOMAINS = {
    "ratelimited.test": "ratelimited",
    "nocredits.test": "nocredits",
    "unavailable.test": "unavailable",
}


def lookup(name: str, domain: str) -> Outcome:
    """The sandbox's deterministic answer for a validated name and domain."""
    if not SUPPORTED_NAME.match(name.strip()):
        return Outcome("unsupported")
    host = _clean_domain(domain)
    if host in SCRIPTED_DOMAINS:
        return Outcome(SCRIPTED_DOMAINS[host])
    parts = _name_parts(name)
    first, last = (parts[0], parts[-1]) if parts else ("", "")
    base: dict[str, Any] = {
        "first_name": first,
        "last_name": last if len(parts) > 1 else "",
        "full_name": " ".join(parts),
        "domain": host,
        "company": {"name": host.split(".")[0]},
    }
    if first.startswith(("nobody", "unknown")) or host.endswith(".invalid"):
        return Outcome(
            "not_found",
            {**base, "emails": [], "total": 0, "confidence_score": 0},
            queued=host == "queued.test",
        )
    return _found(parts, host, base)


def _found(parts: list[str], host: str, base: dict[str, Any]) -> Outcome:
    """An address for the name: `first.last@host`, or `info@host` for a role word."""
    first, last = (parts[0], parts[-1]) if parts else ("", "")  # a name of titles: none
    role = len(parts) == 1 and first in ROLE_WORDS
    local = first if role or len(parts) == 1 else f"{first}.{last}"
    local = re.sub(r"[^\w.\-]", "", local) or "contact"
    data = {
        **base,
        "emails": [
            {"email_address": f"{local}@{host}", "role": "yes" if role else "no", "business": "yes"}
        ],
        "total": 1,
        "confidence_score": _confidence(" ".join(parts), host),
        "found_on": "2021-08-21T03:10:02.796Z",
    }
    credits = 2 if role else 4
    if host == "charged.test":
        data["credits_charged"] = 3
        credits = 3
    return Outcome(
        "role" if role else "found",
        data,
        credits=credits,
        queued=host == "queued.test",
        slow=host == "slow.test",
    )
