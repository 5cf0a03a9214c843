"""The merged result of a list: every uploaded row, in order, with Clearout's result columns.

Answers come from two places: the people the cache knew at upload time (the
plan's `known` lines) and upstream's result file for the others.  Both go
into a small SQLite map on the spool disk (person id → result cells), then
the original file is streamed once and each row gets its person's cells —
or empty ones, for a person upstream did not answer (a cancelled list) —
in the uploaded format.  Each row's person id comes from the plan
(`row_people`), read in step with the rows, so no row is keyed again; the
answers of a thousand rows are fetched in one query.  While reading
upstream's file the merge also counts what upstream charged for (found rows,
and role addresses among them) and writes its rows, keyed, for the cache
(`harvest`), so the harvest does not key them a second time.  Nothing is
collected in memory across the file: rows go to SQLite as they are read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import orjson

from gateway.bulk import tables
from gateway.bulk.plan import PERSON_ID_BYTES, KeyOf, People, open_spool_db, person_id
from gateway.bulk.results import RESULT_COLUMNS, RESULT_FIELDS, cells_by_field, finder_columns
from gateway.bulk.writers import TableWriter
from gateway.lookup.pricing import is_role_address

FIELDS = [field.lower() for field in RESULT_FIELDS]
_STATUS, _EMAIL = FIELDS.index("status"), FIELDS.index("email address")
_EMPTY = [""] * len(RESULT_FIELDS)
# Rows whose answers are fetched in one query (each a bound parameter: below
# 999, the limit of SQLite builds before 3.32).
WRITE_BATCH = 500
_INSERT = "INSERT OR REPLACE INTO answers VALUES (?, ?)"


def result_kind(path: Path) -> tables.FileKind:
    """A result file's format by its first bytes (an XLSX is a zip archive)."""
    with path.open("rb") as fh:
        return "xlsx" if fh.read(4) == b"PK\x03\x04" else "csv"


@dataclass
class Charged:
    """What upstream's part of a list was charged for (counted as its file is read)."""

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

    def merge(
        self, known: Path, upstream: Path | None, out: Path, row_people: Path | None = None
    ) -> Charged:
        """Write the merged result to `out`; what upstream charged for its part.

        `row_people` is the plan's person id per row; without it (a list planned
        by an older gateway) every row is keyed again.  Upstream's rows that name
        a person are written to `harvest_path` for `Harvester.harvest_keyed`.
        """
        db = open_spool_db(self.workdir / "answers.db")
        try:
            db.execute("CREATE TABLE answers (id BLOB PRIMARY KEY, cells BLOB) WITHOUT ROWID")
            self._load_known(db, known)
            charged = Charged()
            if upstream is not None:
                charged = self._load_upstream(db, upstream)
            db.commit()
            ids_file = row_people.open("rb") if row_people is not None else nullcontext()
            with ids_file as ids:
                self._write(db, out, self._id_reader(ids))
            return charged
        finally:
            db.close()

    @property
    def harvest_path(self) -> Path:
        return self.workdir / "harvest.jsonl"

    def _load_known(self, db: sqlite3.Connection, known: Path) -> None:
        # A generator, not a list: executemany binds each row as it comes, so
        # no more than one line is held at a time.
        def answers(lines: Iterable[bytes]) -> Iterator[tuple[bytes, bytes]]:
            for line in lines:
                key, *cells = orjson.loads(line)
                yield person_id(key), orjson.dumps(cells)

        with known.open("rb") as lines:
            db.executemany(_INSERT, answers(lines))

    def _load_upstream(self, db: sqlite3.Connection, path: Path) -> Charged:
        counted = Charged()

        def answers(harvest: BinaryIO) -> Iterator[tuple[bytes, bytes]]:
            width = len(self.info.header)
            for key, cells in upstream_answers(path, self.key_of, self.limits, width):
                if cells[_STATUS].lower() == "found":
                    counted.found += 1
                    counted.roles += is_role_address(cells[_EMAIL])
                if not key.startswith("row:"):  # a row without a name or domain is not cached
                    harvest.write(orjson.dumps([key, *cells]))
                    harvest.write(b"\n")
                yield person_id(key), orjson.dumps(cells)

        with self.harvest_path.open("wb") as harvest:
            db.executemany(_INSERT, answers(harvest))
        return counted

    def _id_reader(self, ids: BinaryIO | None) -> Callable[[list[str]], bytes]:
        def id_of(row: list[str]) -> bytes:
            data = ids.read(PERSON_ID_BYTES) if ids is not None else b""
            if len(data) == PERSON_ID_BYTES:
                return data
            return person_id(self.people.key(row, self.key_of))

        return id_of

    def _write(
        self, db: sqlite3.Connection, out: Path, id_of: Callable[[list[str]], bytes]
    ) -> None:
        rows = tables.iter_rows(self.source, self.info.kind, limits=self.limits)
        header = next(rows, [])
        width = len(header)
        with TableWriter(out, self.info) as writer:
            writer.write([*header, *RESULT_COLUMNS])
            while batch := list(islice(rows, WRITE_BATCH)):
                ids = [id_of(row) if any(row) else None for row in batch]
                cells = _answers(db, {i for i in ids if i is not None})
                for row, pid in zip(batch, ids, strict=True):
                    # Short rows are padded, so the result columns stay under their headings.
                    padding = [""] * (width - len(row))
                    writer.write([*row, *padding, *cells.get(pid, _EMPTY)])


def _answers(db: sqlite3.Connection, ids: set[bytes]) -> dict[bytes | None, list[str]]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    found = db.execute(f"SELECT id, cells FROM answers WHERE id IN ({marks})", list(ids))  # noqa: S608 - only placeholders are formatted in
    return {pid: orjson.loads(cells) for pid, cells in found}


def upstream_answers(
    path: Path, key_of: KeyOf, limits: tables.Limits, input_width: int = 0
) -> Iterator[tuple[str, list[str]]]:
    """(person key, result cells in RESULT_FIELDS order) of each row of a result file.

    A row is keyed by its first `input_width` cells, the uploaded ones (default: those
    before the first result column), so a row naming no person is keyed as it was sent.
    """
    rows = tables.iter_rows(path, result_kind(path), limits=limits)
    header = next(rows, [])
    columns, missing = tables.find_columns(header)
    finder = finder_columns(header)
    if missing or "email address" not in finder:
        raise tables.UnreadableFile(f"not a finder result file: {missing or 'no result columns'}")
    people = People.of(columns)
    width = input_width or min(finder.values())
    for row in rows:
        if any(row):
            by_field = cells_by_field(row, finder)
            yield people.key(row[:width], key_of), [by_field.get(field, "") for field in FIELDS]
