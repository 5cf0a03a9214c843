"""Result rows into the instant cache: every bulk result teaches it, and past ones warm it.

When an upstream list completes, each of its result rows is remembered as
the instant answer for that person (found with the found TTL, not found with
the not-found TTL, counted from the row's processed time), so the next
lookup or bulk row of those people is free.  `POST /admin/cache/import` does
the same with result files an operator already bought from Clearout.  A row
past its TTL, without a usable name and domain, or neither found nor not
found is skipped and counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.bulk import tables
from gateway.bulk.merge import result_kind
from gateway.bulk.plan import People
from gateway.bulk.results import answer_from_cells, cells_by_field, finder_columns
from gateway.lookup.cache import LookupCache
from gateway.lookup.entries import CachedAnswer
from gateway.lookup.pricing import Prices

BATCH = 500
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
        rows = await asyncio.to_thread(self._entries, path, team)
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
        parsed = answer_from_cells(cells_by_field(row, finder), self.prices)
        if not (name and domain) or parsed is None:
            return None
        answer, processed = parsed
        ttl = self.cache.ttl_for(answer) - ((now - processed).total_seconds() if processed else 0)
        if ttl <= 0:
            return None
        return self.cache.key(team, name, domain, memoized=False), answer, ttl


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
