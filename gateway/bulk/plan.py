"""The pre-answer step of a bulk upload: which rows the cache knows, which people go upstream.

Three streaming passes over the spooled file, with a small SQLite database on
the spool disk as the only state (memory stays flat whatever the file's size):

1. every data row's person is keyed with the instant cache's rules
   (`key_of`); the first row of each person is remembered (`people`), later
   ones are duplicates; each row's person id (`person_id` of its key) goes to
   `row_people`, so the merge finds every row's answer without keying it again;
2. the distinct people are looked up in the cache a batch at a time; the
   known ones are answered (their result cells go to `known`, a JSON-lines
   file, one line per person);
3. the first row of every unknown person is written to `reduced`, in the
   uploaded format: the file that goes upstream.

Only the cache's reads run on the event loop; reading, keying, SQLite and
the files run in worker threads, so a large list does not hold up other
requests.  A row whose name or domain is empty cannot be keyed like a
lookup; it is keyed by its exact cells, so exact duplicates still go
upstream once.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

from gateway.bulk import tables
from gateway.bulk.results import cells_for_answer
from gateway.bulk.writers import TableWriter
from gateway.lookup.entries import CachedAnswer

KeyOf = Callable[[str, str], str]
GetMany = Callable[[list[str]], Awaitable[list[CachedAnswer | None]]]
# People asked of the cache at once: the answers are decoded on the event
# loop (~7 us each), so a batch holds it for a few milliseconds at most.
BATCH = 500
# Rows inserted at once.  executemany over a list runs in C without letting
# the event loop's thread have the GIL, so a batch must stay small (5,000
# held the loop for 30-50 ms).
INSERT_BATCH = 500
PERSON_ID_BYTES = 16


def person_id(key: str) -> bytes:
    """A fixed-width id of a person key (the merge's join column); 128 bits, so two
    people of a list never share one."""
    return hashlib.blake2b(key.encode(errors="surrogateescape"),
                           digest_size=PERSON_ID_BYTES).digest()  # fmt: skip


def open_spool_db(path: Path) -> sqlite3.Connection:
    """A throwaway SQLite database: nothing survives a crash, so nothing is journaled or
    synced (a commit would otherwise wait for the disk)."""
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    return db


@dataclass(frozen=True)
class People:
    """Where a file's person columns are: a full name, or first and last; and the domain."""

    name: int | None
    first: int | None
    last: int | None
    domain: int | None

    @classmethod
    def of(cls, columns: dict[str, int]) -> People:
        return cls(columns.get("name"), columns.get("first_name"), columns.get("last_name"),
                   columns["domain"])  # fmt: skip

    def name_and_domain(self, row: Sequence[str]) -> tuple[str, str]:
        if self.name is not None:
            name = _at(row, self.name)
        else:
            name = f"{_at(row, self.first)} {_at(row, self.last)}".strip()
        return name, _at(row, self.domain)

    def key(self, row: Sequence[str], key_of: KeyOf) -> str:
        name, domain = self.name_and_domain(row)
        if name and domain:
            return key_of(name, domain)
        return row_key(row)


def row_key(row: Sequence[str]) -> str:
    """The key of a row that names no person: its exact cells.  Trailing empty cells do not
    count: upstream's result pads a short row to the header's width, and its answer must
    find the row that was sent."""
    end = len(row)
    while end and not row[end - 1]:
        end -= 1
    return "row:" + hashlib.blake2b("\x1f".join(row[:end]).encode(errors="surrogateescape"),
                                    digest_size=16).hexdigest()  # fmt: skip


def _at(row: Sequence[str], index: int | None) -> str:
    return row[index].strip() if index is not None and index < len(row) else ""


@dataclass(frozen=True)
class Plan:
    rows: int  # data rows with any content
    cache_people: int
    upstream_people: int
    saved_credits: int
    reduced: Path | None  # None when every person was known
    known: Path
    row_people: Path  # `person_id` of each data row with content, in file order

    @property
    def duplicates(self) -> int:
        return self.rows - self.cache_people - self.upstream_people


@dataclass
class Planner:
    path: Path
    info: tables.TableInfo
    people: People
    key_of: KeyOf
    limits: tables.Limits
    workdir: Path
    processed_at: str

    async def plan(self, get_many: GetMany) -> Plan:
        db = await asyncio.to_thread(self._open)
        try:
            rows, distinct = await asyncio.to_thread(self._index, db)
            known, saved = await self._look_up(db, get_many)
            reduced = None
            if distinct > known:
                reduced = self.workdir / f"reduced.{self.info.kind}"
                await asyncio.to_thread(self._write_reduced, db, reduced)
            return Plan(rows, known, distinct - known, saved, reduced,
                        self.workdir / "known.jsonl", self.workdir / "people.bin")  # fmt: skip
        finally:
            await asyncio.to_thread(db.close)

    def _open(self) -> sqlite3.Connection:
        db = open_spool_db(self.workdir / "plan.db")
        db.execute("CREATE TABLE people (key TEXT PRIMARY KEY, first INTEGER, known INTEGER)")
        return db

    def _rows(self) -> Iterator[tuple[int, list[str]]]:
        rows = tables.iter_rows(self.path, self.info.kind, limits=self.limits)
        next(rows, None)  # the header
        return enumerate(rows)

    def _index(self, db: sqlite3.Connection) -> tuple[int, int]:
        """Pass 1: key every row; the first row of each person. (Rows with content, people.)"""
        insert = "INSERT OR IGNORE INTO people VALUES (?, ?, 0)"
        count = distinct = 0
        batch: list[tuple[str, int]] = []
        with (self.workdir / "people.bin").open("wb") as ids:
            for index, row in self._rows():
                if not any(row):
                    continue
                count += 1
                key = self.people.key(row, self.key_of)
                ids.write(person_id(key))
                batch.append((key, index))
                if len(batch) >= INSERT_BATCH:
                    distinct += db.executemany(insert, batch).rowcount  # the new people
                    batch.clear()
            distinct += db.executemany(insert, batch).rowcount
        db.commit()
        return count, distinct

    async def _look_up(self, db: sqlite3.Connection, get_many: GetMany) -> tuple[int, int]:
        """Pass 2: the cache's answers for the distinct people; (known people, their credits)."""
        known = saved = 0
        with (self.workdir / "known.jsonl").open("wb") as out:
            batch = await asyncio.to_thread(self._people_after, db, 0)
            while batch:
                keyed = [(rowid, key) for rowid, key in batch if not key.startswith("row:")]
                answers = await get_many([key for _, key in keyed]) if keyed else []
                hits, credits = await asyncio.to_thread(self._record, db, out, keyed, answers)
                known, saved = known + hits, saved + credits
                batch = await asyncio.to_thread(self._people_after, db, batch[-1][0])
        await asyncio.to_thread(db.commit)
        return known, saved

    @staticmethod
    def _people_after(db: sqlite3.Connection, last: int) -> list[tuple[int, str]]:
        return db.execute(
            "SELECT rowid, key FROM people WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, BATCH)
        ).fetchall()

    def _record(
        self, db: sqlite3.Connection, out: BinaryIO, keyed: list[tuple[int, str]],
        answers: list[CachedAnswer | None],
    ) -> tuple[int, int]:  # fmt: skip
        """A batch's known people: their cells to `known`, marked known. (How many, credits.)"""
        hits: list[tuple[int]] = []
        credits = 0
        for (rowid, key), answer in zip(keyed, answers, strict=True):
            if answer is None:
                continue
            out.write(orjson.dumps([key, *cells_for_answer(answer, self.processed_at)]))
            out.write(b"\n")
            credits += answer.credits
            hits.append((rowid,))
        db.executemany("UPDATE people SET known = 1 WHERE rowid = ?", hits)
        return len(hits), credits

    def _write_reduced(self, db: sqlite3.Connection, out: Path) -> None:
        """Pass 3: the first row of every unknown person, in the uploaded format."""
        firsts = (row[0] for row in db.execute(
            "SELECT first FROM people WHERE known = 0 ORDER BY first"
        ))  # fmt: skip
        wanted = next(firsts, None)
        with TableWriter(out, self.info, for_people=False) as writer:
            writer.write(self.info.header)
            for index, row in self._rows():
                if index == wanted:
                    writer.write(row)
                    wanted = next(firsts, None)
