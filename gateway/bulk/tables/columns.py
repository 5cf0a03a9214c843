"""What a bulk file's columns mean: the input's name and domain, a result's finder columns.

`find_columns` locates the columns Clearout needs in an upload (a full name, or first and
last name, and a domain or company); `count_found` reads the `Clearout Finder …` columns
Clearout appends to a result file, for the gateway to settle a list's credits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.bulk.tables.common import DEFAULT_LIMITS, FileKind, Limits, UnreadableFile
from gateway.bulk.tables.rows import iter_rows
from gateway.lookup.pricing import is_role_address

NAME_COLUMNS = ("name", "full name", "fullname", "full_name", "contact name", "person name")
FIRST_NAME_COLUMNS = ("first name", "firstname", "first_name", "given name")
LAST_NAME_COLUMNS = ("last name", "lastname", "last_name", "surname", "family name")
DOMAIN_COLUMNS = (
    "domain",
    "website",
    "company domain",
    "company_domain",
    "url",
    "company",
    "company name",
    "company_name",
    "organization",
    "organisation",
)


def find_columns(header: Sequence[str]) -> tuple[dict[str, int], str | None]:
    """Locate the name and domain columns; the second item explains what's missing."""
    lowered = [h.strip().lower() for h in header]

    def first(candidates: tuple[str, ...]) -> int | None:
        for name in candidates:
            if name in lowered:
                return lowered.index(name)
        return None

    columns: dict[str, int] = {}
    full, first_name, last_name = (
        first(NAME_COLUMNS),
        first(FIRST_NAME_COLUMNS),
        first(LAST_NAME_COLUMNS),
    )
    if full is not None:
        columns["name"] = full
    elif first_name is not None and last_name is not None:
        columns["first_name"], columns["last_name"] = first_name, last_name
    else:
        return columns, "a name column (full name, or first and last name) is required"
    domain = first(DOMAIN_COLUMNS)
    if domain is None:
        return columns, "a domain or company name column is required"
    columns["domain"] = domain
    return columns, None


def count_found(path: Path, kind: FileKind, *, limits: Limits = DEFAULT_LIMITS) -> tuple[int, int]:
    """(found, role) rows of a bulk result file, from its `Clearout Finder …` columns.

    A row is found when its `… Email Address` cell holds an address and, if the file has a
    `… Status` column, that reads "Found" in any case.  Role rows come from a `… Role …`
    column when there is one; Clearout's finder results carry none, and then a role
    address is told by its local part (`info@`, `sales@`, ...).
    """
    rows = iter_rows(path, kind, limits=limits)
    columns = _FinderColumns.of(next(rows, []))
    found = roles = 0
    for row in rows:
        if columns.found(row):
            found += 1
            roles += columns.is_role(row)
    return found, roles


@dataclass(frozen=True)
class _FinderColumns:
    """Where a result file's `Clearout Finder …` columns are (None: the file has no such one)."""

    email: int
    status: int | None
    role: int | None

    @classmethod
    def of(cls, header: Sequence[str]) -> _FinderColumns:
        lowered = [h.strip().lower() for h in header]
        finder = [(i, h) for i, h in enumerate(lowered) if h.startswith("clearout finder")]
        # Exact suffixes: "… Email Address", not "… Confidence Score" or "… Business Account".
        email = next((i for i, h in finder if h.endswith("email address")), None)
        if email is None:
            raise UnreadableFile("result file has no 'Clearout Finder Email Address' column")
        status = next((i for i, h in finder if h.endswith("status")), None)
        role = next((i for i, h in finder if "role" in h), None)
        return cls(email, status, role)

    def found(self, row: Sequence[str]) -> bool:
        if not _cell_at(row, self.email):
            return False
        return self.status is None or _cell_at(row, self.status).lower() == "found"

    def is_role(self, row: Sequence[str]) -> bool:
        if self.role is None:
            return is_role_address(_cell_at(row, self.email))
        return _cell_at(row, self.role).lower() in ("yes", "true")


def _cell_at(row: Sequence[str], index: int | None) -> str:
    # Short rows are legal CSV: a missing cell reads as an empty one.
    return row[index] if index is not None and index < len(row) else ""
