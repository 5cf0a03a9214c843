"""Clearout's bulk result columns, and the translation between a row's cells and an answer.

A Clearout email-finder result file is the uploaded rows with these columns
appended (`RESULT_COLUMNS`).  The gateway writes them for rows it answered
from the cache (`cells_for`, from a cached instant answer), reads them back
from upstream's result files and from past result files an operator imports
(`answer_from_cells`, which rebuilds the instant answer a later lookup of that
person replays).  Columns are matched by the part after `Clearout Finder`,
case-insensitively, so either spelling of a header works and optional ones
may be missing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.lookup.entries import CachedAnswer
from gateway.lookup.pricing import Prices, is_role_address, outcome, success_data

FINDER_PREFIX = "clearout finder "
RESULT_FIELDS = (
    "Full Name", "First Name", "Last Name", "Domain", "Company", "Email Address",
    "Confidence Score", "Business Account", "Status", "Reason", "Processed At (UTC)",
)  # fmt: skip
RESULT_COLUMNS = tuple(f"Clearout Finder {field}" for field in RESULT_FIELDS)
FOUND, NOT_FOUND = "Found", "Not Found"
NOT_FOUND_REASON = "No email found"
PROCESSED_FORMAT = "%Y-%m-%d %H:%M:%S"
_PROCESSED_FORMATS = (PROCESSED_FORMAT, "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f")


def processed_now() -> str:
    return datetime.now(UTC).strftime(PROCESSED_FORMAT)


def finder_columns(header: Sequence[str]) -> dict[str, int]:
    """Index of each `Clearout Finder …` column, by its lowercased field name."""
    found: dict[str, int] = {}
    for index, cell in enumerate(header):
        lowered = cell.strip().lower()
        if lowered.startswith(FINDER_PREFIX):
            found.setdefault(lowered[len(FINDER_PREFIX) :].strip(), index)
    return found


def cells_by_field(row: Sequence[str], columns: Mapping[str, int]) -> dict[str, str]:
    return {name: row[i].strip() if i < len(row) else "" for name, i in columns.items()}


def cells_for(data: Mapping[str, Any] | None, processed_at: str) -> list[str]:
    """The result columns for an instant answer's `data` (None: no answer for the row)."""
    if data is None:
        return [""] * len(RESULT_FIELDS)
    emails = data.get("emails") if isinstance(data.get("emails"), list) else []
    first = emails[0] if emails and isinstance(emails[0], dict) else {}
    company = data.get("company")
    found = outcome(dict(data)) == "found"
    return [
        _text(data.get("full_name")), _text(data.get("first_name")),
        _text(data.get("last_name")), _text(data.get("domain")),
        _text(company.get("name") if isinstance(company, dict) else company),
        _text(first.get("email_address")), _text(data.get("confidence_score") if found else ""),
        _text(first.get("business")), FOUND if found else NOT_FOUND,
        "" if found else NOT_FOUND_REASON, processed_at,
    ]  # fmt: skip


def cells_for_answer(answer: CachedAnswer, processed_at: str) -> list[str]:
    return cells_for(success_data(orjson.loads(answer.body)), processed_at)


def answer_from_cells(
    cells: Mapping[str, str], prices: Prices
) -> tuple[CachedAnswer, datetime | None] | None:
    """The instant answer a result row stands for, and when it was processed.

    None when the row is neither found nor not found (failed, unsupported,
    not processed): those are not worth remembering.
    """
    status = cells.get("status", "").strip().lower().replace("_", " ")
    email = cells.get("email address", "")
    if status == "found" or (not status and email):
        if not email:
            return None
        return _found(cells, email, prices), parse_processed(cells.get("processed at (utc)", ""))
    if status == "not found":
        data = {**_person(cells), "emails": [], "total": 0, "confidence_score": 0}
        body = orjson.dumps({"status": "success", "data": data})
        return CachedAnswer(body, prices.not_found, False), parse_processed(
            cells.get("processed at (utc)", "")
        )
    return None


def _found(cells: Mapping[str, str], email: str, prices: Prices) -> CachedAnswer:
    role = is_role_address(email)
    business = cells.get("business account", "").lower() or "yes"
    data: dict[str, Any] = {
        "emails": [{"email_address": email, "role": "yes" if role else "no", "business": business}],
        **_person(cells),
        "total": 1,
        "confidence_score": _score(cells.get("confidence score", "")),
    }
    body = orjson.dumps({"status": "success", "data": data})
    return CachedAnswer(body, prices.role if role else prices.found, True)


def _person(cells: Mapping[str, str]) -> dict[str, Any]:
    return {
        "first_name": cells.get("first name", ""),
        "last_name": cells.get("last name", ""),
        "full_name": cells.get("full name", ""),
        "domain": cells.get("domain", ""),
        "company": {"name": cells.get("company", "")},
    }


def _score(text: str) -> int | str:
    try:
        return int(float(text))
    except ValueError:
        return text


def parse_processed(text: str) -> datetime | None:
    # A result file's rows were processed within a few seconds of each other, and
    # strptime is most of the cost of reading a row back: the short values are memoized.
    return _parse_processed(text) if len(text) <= 40 else _parse_processed.__wrapped__(text)


@functools.lru_cache(maxsize=1024)
def _parse_processed(text: str) -> datetime | None:
    value = text.strip().removesuffix("Z").removesuffix(" UTC")
    for fmt in _PROCESSED_FORMATS:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _text(value: object) -> str:
    return "" if value is None else str(value)
