"""Counting a file's distinct rows exactly, in bounded memory.

The gateway reserves credits per distinct data row of an upload, so the count is exact:
each row becomes a 16-byte digest, held in a set while few and spilled past `memory_rows`
of them to partition files on disk (split further by digest nibble when one partition
still holds too many), so memory does not grow with the file.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from gateway.bulk.tables.common import DEFAULT_LIMITS, FileKind, Limits
from gateway.bulk.tables.rows import iter_rows

_DIGEST_BYTES = 16
_PARTITIONS = 16
_DIGEST_BLOCK = 4096 * _DIGEST_BYTES  # partition files are read 64 KiB at a time


def count_distinct_rows(
    path: Path,
    kind: FileKind,
    *,
    limits: Limits = DEFAULT_LIMITS,
    spill_dir: Path | None = None,
    memory_rows: int = 100_000,
) -> int:
    """Data rows (header excluded, blank rows ignored, exact duplicates once).

    At most `memory_rows` digests are held (about 10 MB at the default); past that they
    spill to partition files in a temporary directory under `spill_dir`, removed after.
    """
    rows = iter_rows(path, kind, limits=limits)
    next(rows, None)
    with _DistinctCounter(spill_dir, memory_rows) as counter:
        seen, held, blake2b = counter.seen, counter.memory_rows, hashlib.blake2b
        for row in rows:
            if any(row):
                joined = "\x1f".join(row).encode("utf-8", "surrogateescape")
                seen.add(blake2b(joined, digest_size=_DIGEST_BYTES).digest())
                if len(seen) >= held:
                    counter.spill()
        return counter.total()


class _DistinctCounter:
    """Exact count of distinct digests, in memory while few, partitioned on disk after."""

    def __init__(self, spill_dir: Path | None, memory_rows: int) -> None:
        self.spill_dir = spill_dir
        self.memory_rows = max(1, memory_rows)
        self.seen: set[bytes] = set()
        self.tmp: tempfile.TemporaryDirectory[str] | None = None
        self.files: list[BinaryIO] = []

    def __enter__(self) -> _DistinctCounter:
        return self

    def __exit__(self, *_: object) -> None:
        for fh in self.files:
            fh.close()
        if self.tmp is not None:
            self.tmp.cleanup()

    def total(self) -> int:
        if self.tmp is None:
            return len(self.seen)
        self.spill()
        for fh in self.files:
            fh.close()
        folder = Path(self.tmp.name)
        return sum(self._count(folder / f"{i}.bin", 1) for i in range(_PARTITIONS))

    def spill(self) -> None:
        """Move the held digests to the partition files (the caller keeps adding to `seen`)."""
        if self.tmp is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="tabular-distinct-", dir=self.spill_dir)
            folder = Path(self.tmp.name)
            self.files = [(folder / f"{i}.bin").open("wb") for i in range(_PARTITIONS)]
        _write_partitions(self.seen, self.files, 0)
        self.seen.clear()

    def _count(self, part: Path, depth: int) -> int:
        """Distinct digests in one partition file, splitting it further if too many differ."""
        distinct = _distinct_digests(part, self.memory_rows)
        if distinct is not None:
            return distinct
        children = [part.with_name(f"{part.name}.{i}") for i in range(_PARTITIONS)]
        files = [child.open("wb") for child in children]
        try:
            with part.open("rb") as fh:
                while block := fh.read(_DIGEST_BLOCK):
                    step = range(0, len(block), _DIGEST_BYTES)
                    digests = [block[i : i + _DIGEST_BYTES] for i in step]
                    _write_partitions(digests, files, depth)
        finally:
            for out in files:
                out.close()
        part.unlink()
        return sum(self._count(child, depth + 1) for child in children)


def _write_partitions(digests: Iterable[bytes], files: Sequence[BinaryIO], depth: int) -> None:
    """Append each digest to the file its `depth`-th nibble picks."""
    buckets: list[list[bytes]] = [[] for _ in range(_PARTITIONS)]
    index, odd = divmod(depth, 2)
    shift = 4 * odd
    for digest in digests:
        buckets[(digest[index] >> shift) & 0xF].append(digest)
    for out, bucket in zip(files, buckets, strict=True):
        out.write(b"".join(bucket))


def _distinct_digests(part: Path, most: int) -> int | None:
    """How many distinct digests the file holds, or None once more than `most` are seen."""
    seen: set[bytes] = set()
    with part.open("rb") as fh:
        while block := fh.read(_DIGEST_BLOCK):
            seen.update(block[i : i + _DIGEST_BYTES] for i in range(0, len(block), _DIGEST_BYTES))
            if len(seen) > most:
                return None
    return len(seen)
