"""Budgets: what a team may spend and how fast, and whose ids are whose.

`credits` (reservations in UTC day and month windows; `credits_redis` is the
shared store, `credits_guard` the store-failure policy), `rates` (each team's
request rate), `governor` (the upstream-wide pace, fair across teams),
`ownership` (queue and list ids per team), and `budgets`, the one object the
request path talks to.  Each store has a Redis implementation and an
in-process twin with the same semantics.
"""

from gateway.budget.budgets import UNLIMITED_HEADERS, Budgets, foreign_id_answer
from gateway.budget.credits import Reservation, limited

__all__ = ["UNLIMITED_HEADERS", "Budgets", "Reservation", "foreign_id_answer", "limited"]
