"""A bulk list as the sandbox holds it: the spooled file, its clock, and an answer per row.

Every distinct, non-blank row of the file gets the same deterministic answer an instant
lookup of its name and domain would (`gateway.sandbox.people`); a cancelled list answers
only the share of its rows its clock had reached.  The result file and the credits a list
costs are both read from `BulkList.answers`, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.bulk import tables
from gateway.sandbox.people import Outcome, lookup


@dataclass
class BulkList:
    list_id: str
    filename: str
    size: int
    path: Path
    kind: tables.FileKind
    rows: int  # distinct data rows
    created: float  # monotonic: the list's clock runs on it
    created_at: datetime  # UTC wall clock: what the answers show
    state: str = "running"  # running | completed | cancelled | failed
    progress_at_cancel: int = 0  # where a cancelled (or failed) list stopped
    downloaded: bool = False
    finished_at: datetime | None = None  # when its rows were processed, for the result file
    # A list with a row at domain `listfail.test` fails half-way (state "failed").
    fails: bool = False

    def summary(self) -> dict[str, Any]:
        """The list as cancel and remove describe it."""
        created = self.created_at
        created_on = created.strftime("%Y-%m-%d %H:%M:%S.") + f"{created.microsecond // 1000:03d}Z"
        return {"name": self.filename, "source": "upload", "created_on": created_on}

    def header(self) -> list[str]:
        return next(tables.iter_rows(self.path, self.kind), [])

    def answers(self) -> Iterator[tuple[list[str], Outcome]]:
        """Each distinct row answered so far (padded to the header's width), and its answer."""
        rows = tables.iter_rows(self.path, self.kind)
        header = next(rows, [])
        columns, _ = tables.find_columns(header)
        limit = None
        if self.state in ("cancelled", "failed"):
            limit = self.rows * self.progress_at_cancel // 100
        seen: set[tuple[str, ...]] = set()
        for row in rows:
            if not any(row) or tuple(row) in seen:
                continue
            if limit is not None and len(seen) >= limit:
                return
            seen.add(tuple(row))
            # Padded, so the columns appended after it line up with the header.
            padded = row + [""] * (len(header) - len(row))
            name, domain = _name(padded, columns), padded[columns["domain"]]
            yield padded, lookup(name, domain) if name and domain else Outcome("unsupported")


FAILING_DOMAIN = "listfail.test"


def fails(path: Path, kind: tables.FileKind) -> bool:
    """Whether a list of this file fails half-way (a row's domain is `listfail.test`)."""
    rows = tables.iter_rows(path, kind)
    columns, missing = tables.find_columns(next(rows, []))
    if missing:
        return False
    index = columns["domain"]
    return any(index < len(row) and row[index].strip().lower() == FAILING_DOMAIN for row in rows)


def _name(row: list[str], columns: dict[str, int]) -> str:
    if "name" in columns:
        return row[columns["name"]]
    return f"{row[columns['first_name']]} {row[columns['last_name']]}".strip()
