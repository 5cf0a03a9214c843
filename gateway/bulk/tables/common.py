"""What every part of `gateway.bulk.tables` shares: file kinds, the caps, the errors.

`Limits` are the caps every read stays within, `TableTooLarge` says which one a file
crossed (it is an `UnreadableFile`, so a caller refusing unreadable files refuses these
too), `TableInfo` is what `inspect` learns of a file, and `file_kind` tells a CSV from an
XLSX by name.  The two helpers at the end are the checks more than one reader makes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

FileKind = Literal["csv", "xlsx"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Caps on one input file; crossing any of them raises `TableTooLarge`.

    max_rows: rows after the header (blank ones count: they cost as much to read).
    max_file_bytes: the file on disk, CSV or XLSX.
    max_inflated_bytes: all XLSX members together, inflated.
    max_members: entries in the XLSX archive.
    max_cells: the grid calamine allocates for a worksheet (rows x columns), the cells
        it lists on the way, and the shared strings a workbook may declare.
    max_line_chars: one CSV record: a line, or several when a quoted cell spans them.
    """

    max_rows: int = 1_000_000
    max_file_bytes: int = 256 * MiB
    max_inflated_bytes: int = 256 * MiB
    max_members: int = 1_000
    max_cells: int = 4_000_000
    max_line_chars: int = 128 * 1024


DEFAULT_LIMITS = Limits()


class UnreadableFile(Exception):
    """The file is not a CSV/XLSX we can read."""


class TableTooLarge(UnreadableFile):
    """The file crosses one of the `Limits`; `limit` names it and `value` is its setting."""

    def __init__(self, limit: str, value: int, detail: str) -> None:
        super().__init__(f"{detail}: over the {limit} cap of {value:,}")
        self.limit = limit
        self.value = value


@dataclass(frozen=True)
class TableInfo:
    """A file's header and the dialect a CSV written back to its owner should reuse."""

    kind: FileKind
    header: tuple[str, ...]
    delimiter: str = ","
    bom: bool = False

    @property
    def encoding(self) -> str:
        """Codec for writing in kind: pair it with errors="surrogateescape"."""
        return "utf-8-sig" if self.bom else "utf-8"


def file_kind(filename: str) -> FileKind | None:
    lower = filename.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith(".xlsx"):
        return "xlsx"
    return None


def check_file_size(path: Path, limits: Limits) -> None:
    size = os.stat(path).st_size
    if size > limits.max_file_bytes:
        raise TableTooLarge("max_file_bytes", limits.max_file_bytes, f"a {size:,}-byte file")


def too_many_rows(limits: Limits) -> TableTooLarge:
    return TableTooLarge("max_rows", limits.max_rows, "rows after the header")
