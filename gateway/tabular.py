"""Reading bulk-finder input files (CSV and XLSX) row by row from disk.

Shared by the gateway (which counts a file's rows to reserve credits before
forwarding it) and the sandbox (which answers for each row).  Files are read
from the spool on disk, never loaded whole: CSV through the `csv` module line
by line, XLSX through python-calamine (about ten times faster than openpyxl,
and it reads only the first sheet we ask for).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from python_calamine import CalamineWorkbook

FileKind = Literal["csv", "xlsx"]

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


class UnreadableFile(Exception):
    """The file is not a CSV/XLSX we can read."""


def file_kind(filename: str) -> FileKind | None:
    lower = filename.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith(".xlsx"):
        return "xlsx"
    return None


def _cell(value: object) -> str:
    # calamine gives floats for numeric cells; 12.0 and "12" mean the same row.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value).strip()


def iter_rows(path: Path, kind: FileKind) -> Iterator[list[str]]:
    """Every row of the file (header included), cells as stripped strings."""
    try:
        if kind == "csv":
            with path.open(encoding="utf-8-sig", errors="replace", newline="") as fh:
                for row in csv.reader(fh):
                    yield [c.strip() for c in row]
        else:
            sheet = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0)
            for raw in sheet.iter_rows():
                yield [_cell(c) for c in raw]
    except (csv.Error, ValueError, OSError) as exc:
        raise UnreadableFile(str(exc)) from None
    except Exception as exc:  # calamine raises its own error types for bad archives
        raise UnreadableFile(f"cannot read {kind} file: {exc}") from None


def count_distinct_rows(path: Path, kind: FileKind) -> int:
    """Data rows (header excluded, blank rows ignored, exact duplicates once)."""
    rows = iter_rows(path, kind)
    next(rows, None)
    seen: set[bytes] = set()
    for row in rows:
        if not any(row):
            continue
        # A 16-byte digest per row keeps a million-row file at tens of MB.
        seen.add(hashlib.blake2b("\x1f".join(row).encode(), digest_size=16).digest())
    return len(seen)


def find_columns(header: list[str]) -> tuple[dict[str, int], str | None]:
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


def count_found(path: Path, kind: FileKind) -> tuple[int, int]:
    """(found, role) rows of a bulk result file, from its `Clearout Finder …` columns."""
    rows = iter_rows(path, kind)
    header = [h.strip().lower() for h in next(rows, [])]
    finder = [i for i, h in enumerate(header) if h.startswith("clearout finder")]
    email = next((i for i in finder if "email" in header[i] and "score" not in header[i]
                  and "status" not in header[i]), None)  # fmt: skip
    role = next((i for i in finder if "role" in header[i]), None)
    if email is None:
        raise UnreadableFile("result file has no 'Clearout Finder' email column")
    found = roles = 0
    for row in rows:
        if email < len(row) and row[email]:
            found += 1
            if role is not None and role < len(row) and row[role].lower() in ("yes", "true"):
                roles += 1
    return found, roles
