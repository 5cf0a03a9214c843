"""The streaming pre-check an XLSX must pass before python-calamine sees it.

python-calamine is ten times faster than openpyxl, but it inflates a whole sheet into a
dense grid: so every member is first inflated once, streaming, counting the real bytes
against `Limits.max_inflated_bytes` and its CRC, and fed to the grid bounds
(`gateway.bulk.tables.xlsx_grid`); only then is the first sheet looked up
(`gateway.bulk.tables.xlsx_parts`).
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gateway.bulk.tables.common import DEFAULT_LIMITS, Limits, TableTooLarge, UnreadableFile
from gateway.bulk.tables.xlsx_archive import check_directory, checked_members, inflate
from gateway.bulk.tables.xlsx_grid import PartScanner
from gateway.bulk.tables.xlsx_parts import first_sheet


def check_xlsx(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Refuse an XLSX calamine could not read within `limits`; else its first sheet's name.

    Every member is inflated once, streaming, and every worksheet part is bounded (not
    only the first: calamine and Excel could disagree on which one that is).  None means
    the workbook names no worksheet type, and calamine's first sheet is read.
    """
    try:
        with path.open("rb") as fh:
            check_directory(fh, limits)
            with zipfile.ZipFile(fh) as archive:
                members = checked_members(archive, limits)
            budget = _Budget(limits.max_inflated_bytes)
            for info in members:
                _scan_member(fh, info, budget, limits)
            return first_sheet(fh, {info.filename: info for info in members}, limits)
    except UnreadableFile:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile, zlib and expat each raise their own
        raise UnreadableFile(f"cannot read xlsx file: {exc}") from None


@dataclass
class _Budget:
    """Inflated bytes across the whole archive, as really produced."""

    limit: int
    used: int = 0

    def spend(self, count: int) -> None:
        self.used += count
        if self.used > self.limit:
            raise TableTooLarge("max_inflated_bytes", self.limit, "the inflated zip members")


def _scan_member(fh: BinaryIO, info: zipfile.ZipInfo, budget: _Budget, limits: Limits) -> None:
    scanner = PartScanner(limits)
    inflated = crc = 0
    for chunk in inflate(fh, info):
        budget.spend(len(chunk))
        inflated += len(chunk)
        if inflated > info.file_size:
            raise UnreadableFile(f"zip member {info.filename} inflates past its declared size")
        crc = zlib.crc32(chunk, crc)
        scanner.feed(chunk)
    scanner.close()
    if inflated != info.file_size or crc != info.CRC:
        raise UnreadableFile(f"corrupt zip member {info.filename}")
