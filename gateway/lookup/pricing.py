"""What an instant-finder answer costs upstream, and whether it is worth caching.

Clearout charges 4 credits per found address, 2 per role address, 0 when
nothing is found, unless the answer says otherwise in `credits_charged`.
Prices are settings (GATEWAY_PRICE_*) so a plan change needs no release.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gateway.settings import Settings

Outcome = Literal["found", "not_found", "other"]

# Local parts of role addresses (info@, sales@, ...): what Clearout prices at
# the role price.  A bulk result file carries no role column, so settling a
# list and harvesting its rows tell a role address by its local part.
ROLE_LOCAL_PARTS = frozenset({
    "info", "sales", "support", "admin", "contact", "hello", "marketing", "hr", "billing",
    "office", "team", "jobs", "careers", "press", "help",
})  # fmt: skip


def is_role_address(email: str) -> bool:
    return email.partition("@")[0].strip().lower() in ROLE_LOCAL_PARTS


@dataclass(frozen=True, slots=True)
class Prices:
    found: int = 4
    role: int = 2
    not_found: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Prices:
        return cls(settings.price_found, settings.price_role, settings.price_not_found)

    @property
    def maximum(self) -> int:
        """The most a single lookup can cost: what a reservation must hold."""
        return max(self.found, self.role, self.not_found)


def success_data(payload: Any) -> dict[str, Any] | None:
    """The `data` of a `{"status": "success"}` answer, else None."""
    if isinstance(payload, dict) and payload.get("status") == "success":
        data = payload.get("data")
        if isinstance(data, dict):
            return data
    return None


def outcome(data: dict[str, Any]) -> Outcome:
    emails = data.get("emails")
    if isinstance(emails, list) and emails:
        return "found"
    if emails == [] or data.get("total") == 0:
        return "not_found"
    return "other"


def credits_for(data: dict[str, Any], prices: Prices) -> int:
    """Credits this answer cost: `credits_charged` when present, else by outcome."""
    charged = data.get("credits_charged")
    if isinstance(charged, int) and not isinstance(charged, bool) and charged >= 0:
        return charged
    kind = outcome(data)
    if kind == "not_found":
        return prices.not_found
    emails = data.get("emails") or []
    role = any(isinstance(e, dict) and e.get("role") == "yes" for e in emails)
    return prices.role if role else prices.found
