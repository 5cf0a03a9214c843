"""The pre-answer step of a bulk upload: which rows the cache knows, which people go upstream.

Three streaming passes over the spooled file, with a small SQLite database on
the spool disk as the only state (memory stays flat whatever the file's size):

1. every data row's person is keyed with the instant cache's rules
   (`key_of`); the first row of each person is remembered (`people`), later
   ones are duplicates;
2. the distinct people are looked up in the cache a batch at a time; the
   known ones are answered (their result cells go to `known`, a JSON-lines
   file, one line per person);
3. the first row of every unknown person is written to `reduced`, in the
   uploaded format: the file that goes upstream.

A row whose name or domain is empty cannot be keyed like a lookup; it is keyed
by its exact cells, so exact duplicates still go upstream once.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.bulk import tables
from gateway.bulk.results import cells_for_answer
from gateway.bulk.writers import TableWriter
from gateway.lookup.entries import CachedAnswer

KeyOf = Callable[[str, str], str]
GetMany = Callable[[list[str]], Awaitable[list[CachedAnswer | None]]]
BATCH = 1000


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
        return "row:" + hashlib.blake2b("\x1f".join(row).encode(errors="surrogateescape"),
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
        db = sqlite3.connect(self.workdir / "plan.db", check_same_thread=False)
        try:
            db.execute("CREATE TABLE people (key TEXT PRIMARY KEY, first INTEGER, known INTEGER)")
            rows = await asyncio.to_thread(self._index, db)
            known, saved = await self._look_up(db, get_many)
            distinct = db.execute("SELECT COUNT(*) FROM people").fetchone()[0]
            reduced = None
            if distinct > known:
                reduced = self.workdir / f"reduced.{self.info.kind}"
                await asyncio.to_thread(self._write_reduced, db, reduced)
            return Plan(rows, known, distinct - known, saved, reduced, self.workdir / "known.jsonl")
        finally:
            db.close()

    def _rows(self) -> Iterator[tuple[int, list[str]]]:
        rows = tables.iter_rows(self.path, self.info.kind, limits=self.limits)
        next(rows, None)  # the header
        return enumerate(rows)

    def _index(self, db: sqlite3.Connection) -> int:
        """Pass 1: key every row; the first row of each person. How many rows had content."""
        count, batch = 0, []
        for index, row in self._rows():
            if not any(row):
                continue
            count += 1
            batch.append((self.people.key(row, self.key_of), index))
            if len(batch) >= BATCH * 5:
                db.executemany("INSERT OR IGNORE INTO people VALUES (?, ?, 0)", batch)
                batch.clear()
        db.executemany("INSERT OR IGNORE INTO people VALUES (?, ?, 0)", batch)
        db.commit()
        return count

    async def _look_up(self, db: sqlite3.Connection, get_many: GetMany) -> tuple[int, int]:
        """Pass 2: the cache's answers for the distinct people; (known people, their credits)."""
        known = saved = 0
        last = 0
        with (self.workdir / "known.jsonl").open("wb") as out:
            while batch := db.execute(
                "SELECT rowid, key FROM people WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (last, BATCH),
            ).fetchall():
                last = batch[-1][0]
                keys = [key for _, key in batch if not key.startswith("row:")]
                answers = await get_many(keys) if keys else []
                hits = [(k, a) for k, a in zip(keys, answers, strict=True) if a is not None]
                for key, answer in hits:
                    out.write(orjson.dumps([key, *cells_for_answer(answer, self.processed_at)]))
                    out.write(b"\n")
                    saved += answer.credits
                db.executemany("UPDATE people SET known = 1 WHERE key = ?", [(k,) for k, _ in hits])
                known += len(hits)
        db.commit()
        return known, saved

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
