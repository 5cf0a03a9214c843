"""The merged result of a list: every uploaded row, in order, with Clearout's result columns.

Answers come from two places: the people the cache knew at upload time (the
plan's `known` lines) and upstream's result file for the others.  Both go
into a small SQLite map on the spool disk (person key → result cells), then
the original file is streamed once and each row gets its person's cells —
or empty ones, for a person upstream did not answer (a cancelled list) —
in the uploaded format.  While reading upstream's file the merge also counts
what upstream charged for (found rows, and role addresses among them) and
keeps its rows for the cache (`harvest_rows`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.bulk import tables
from gateway.bulk.plan import KeyOf, People
from gateway.bulk.results import RESULT_COLUMNS, RESULT_FIELDS, cells_by_field, finder_columns
from gateway.bulk.writers import TableWriter
from gateway.lookup.pricing import is_role_address

_FIELDS = [field.lower() for field in RESULT_FIELDS]
_EMPTY = [""] * len(RESULT_FIELDS)


def result_kind(path: Path) -> tables.FileKind:
    """A result file's format by its first bytes (an XLSX is a zip archive)."""
    with path.open("rb") as fh:
        return "xlsx" if fh.read(4) == b"PK\x03\x04" else "csv"


@dataclass(frozen=True)
class Charged:
    """What upstream's part of a list was charged for."""

    found: int = 0
    roles: int = 0


@dataclass
class Merger:
    source: Path
    info: tables.TableInfo
    people: People
    key_of: KeyOf
    limits: tables.Limits
    workdir: Path

    def merge(self, known: Path, upstream: Path | None, out: Path) -> Charged:
        """Write the merged result to `out`; what upstream charged for its part."""
        db = sqlite3.connect(self.workdir / "answers.db")
        try:
            db.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, cells BLOB, upstream INT)")
            self._load_known(db, known)
            charged = self._load_upstream(db, upstream) if upstream is not None else Charged()
            db.commit()
            self._write(db, out)
            return charged
        finally:
            db.close()

    def _load_known(self, db: sqlite3.Connection, known: Path) -> None:
        with known.open("rb") as lines:
            batch = []
            for line in lines:
                key, *cells = orjson.loads(line)
                batch.append((key, orjson.dumps(cells)))
            db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, 0)", batch)

    def _load_upstream(self, db: sqlite3.Connection, path: Path) -> Charged:
        found = roles = 0
        batch: list[tuple[str, bytes]] = []
        for key, cells in upstream_answers(path, self.key_of, self.limits):
            batch.append((key, orjson.dumps(cells)))
            if cells[_FIELDS.index("status")].lower() == "found":
                found += 1
                roles += is_role_address(cells[_FIELDS.index("email address")])
            if len(batch) >= 5000:
                db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, 1)", batch)
                batch.clear()
        db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, 1)", batch)
        return Charged(found, roles)

    def _write(self, db: sqlite3.Connection, out: Path) -> None:
        rows = tables.iter_rows(self.source, self.info.kind, limits=self.limits)
        header = next(rows, [])
        width = len(header)
        with TableWriter(out, self.info) as writer:
            writer.write([*header, *RESULT_COLUMNS])
            for row in rows:
                cells = _EMPTY
                if any(row):
                    key = self.people.key(row, self.key_of)
                    found = db.execute("SELECT cells FROM answers WHERE key = ?", (key,)).fetchone()
                    cells = orjson.loads(found[0]) if found else _EMPTY
                # Short rows are padded, so the result columns stay under their headings.
                writer.write([*row, *[""] * (width - len(row)), *cells])


def upstream_answers(
    path: Path, key_of: KeyOf, limits: tables.Limits
) -> Iterator[tuple[str, list[str]]]:
    """(person key, result cells in RESULT_FIELDS order) of each row of a result file."""
    rows = tables.iter_rows(path, result_kind(path), limits=limits)
    header = next(rows, [])
    columns, missing = tables.find_columns(header)
    finder = finder_columns(header)
    if missing or "email address" not in finder:
        raise tables.UnreadableFile(f"not a finder result file: {missing or 'no result columns'}")
    people = People.of(columns)
    for row in rows:
        if any(row):
            by_field = cells_by_field(row, finder)
            yield people.key(row, key_of), [by_field.get(field, "") for field in _FIELDS]
