"""Result rows into the instant cache: every bulk result teaches it, and past ones warm it.

When an upstream list completes, each of its result rows is remembered as
the instant answer for that person (found with the found TTL, not found with
the not-found TTL, counted from the row's processed time), so the next
lookup or bulk row of those people is free.  `POST /admin/cache/import` does
the same with result files an operator already bought from Clearout.  A row
past its TTL, without a usable name and domain, or neither found nor not
found is skipped and counted.  A list's merge has keyed upstream's rows
already; it hands them over as `[key, *cells]` lines (`harvest_keyed`), so
they are not keyed twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from gateway.bulk import tables
from gateway.bulk.merge import FIELDS, result_kind
from gateway.bulk.plan import People
from gateway.bulk.results import answer_from_cells, cells_by_field, finder_columns
from gateway.lookup.cache import LookupCache
from gateway.lookup.entries import CachedAnswer
from gateway.lookup.pricing import Prices

# Entries stored at once: encoding and pipelining one costs the event loop
# ~50 us, so a batch holds it for about 10 ms.
BATCH = 200
Entry = tuple[str, CachedAnswer, float]


@dataclass(frozen=True)
class Harvested:
    imported: int = 0
    skipped: int = 0


@dataclass
class Harvester:
    cache: LookupCache
    prices: Prices
    limits: tables.Limits

    async def harvest(self, path: Path, team: str = "") -> Harvested:
        """Fill the cache from the result file at `path` (keys of `team` in team scope)."""
        return await self._store(await asyncio.to_thread(self._entries, path, team))

    async def harvest_keyed(self, path: Path) -> Harvested:
        """Fill the cache from the `[key, *cells]` lines of a merge (cells in RESULT_FIELDS
        order, keys already the cache's)."""
        with path.open("rb") as lines:
            return await self._store(self._keyed_entries(lines))

    async def _store(self, rows: Iterator[Entry | None]) -> Harvested:
        imported = skipped = 0
        while True:
            batch, skips = await asyncio.to_thread(_take, rows, BATCH)
            skipped += skips
            if not batch:
                break
            stored = await self.cache.set_many(batch)
            imported += stored
            skipped += len(batch) - stored
        return Harvested(imported, skipped)

    def _entries(self, path: Path, team: str) -> Iterator[Entry | None]:
        """An entry per data row (None for a row that is skipped)."""
        rows = tables.iter_rows(path, result_kind(path), limits=self.limits)
        header = next(rows, [])
        finder = finder_columns(header)
        if "status" not in finder and "email address" not in finder:
            raise tables.UnreadableFile("no 'Clearout Finder' result columns")
        people = _people(header, finder)
        now = datetime.now(UTC)
        for row in rows:
            if any(row):
                yield self._entry(row, people, finder, now, team)

    def _entry(
        self, row: list[str], people: People, finder: dict[str, int], now: datetime, team: str
    ) -> Entry | None:
        name, domain = people.name_and_domain(row)
        if not (name and domain):
            return None
        kept = self._answer(cells_by_field(row, finder), now)
        if kept is None:
            return None
        return self.cache.key(team, name, domain, memoized=False), *kept

    def _keyed_entries(self, lines: Iterator[bytes]) -> Iterator[Entry | None]:
        now = datetime.now(UTC)
        for line in lines:
            key, *cells = orjson.loads(line)
            kept = self._answer(dict(zip(FIELDS, cells, strict=True)), now)
            yield None if kept is None else (key, *kept)

    def _answer(self, cells: dict[str, str], now: datetime) -> tuple[CachedAnswer, float] | None:
        """The answer a row's result cells stand for and its TTL left; None when not kept."""
        parsed = answer_from_cells(cells, self.prices)
        if parsed is None:
            return None
        answer, processed = parsed
        ttl = self.cache.ttl_for(answer) - ((now - processed).total_seconds() if processed else 0)
        return None if ttl <= 0 else (answer, ttl)


def _people(header: list[str], finder: dict[str, int]) -> People:
    """The input columns; a file without them is keyed by the finder's own name and domain."""
    columns, missing = tables.find_columns(header)
    if not missing:
        return People.of(columns)
    domain = finder.get("domain", finder.get("company"))
    return People(finder.get("full name"), None, None, domain)


def _take(rows: Iterator[Entry | None], most: int) -> tuple[list[Entry], int]:
    batch: list[Entry] = []
    skipped = 0
    for entry in rows:
        if entry is None:
            skipped += 1
        else:
            batch.append(entry)
        if len(batch) + skipped >= most:
            break
    return batch, skipped
