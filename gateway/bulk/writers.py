"""Writing rows back out in the uploaded format: CSV in its own dialect, or XLSX.

A CSV is written with the delimiter it came with, a BOM when it had one, and
`surrogateescape`, so cells read from a non-UTF-8 file come back as the exact
bytes they were; every cell of a file for people goes through `neutralise`
(formula injection).
An XLSX is written with XlsxWriter in constant-memory mode (rows stream to
disk as they come) and every cell as a string, so a cell that looks like a
formula is text, never evaluated.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

import xlsxwriter

from gateway.bulk.formulas import neutralise
from gateway.bulk.tables import TableInfo

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_TYPE = "text/csv; charset=utf-8"


class RowWriter(Protocol):
    def write(self, row: Sequence[str]) -> None: ...
    def close(self) -> None: ...


class _CsvWriter:
    def __init__(self, path: Path, info: TableInfo, *, for_people: bool) -> None:
        self._file = path.open("w", encoding=info.encoding, errors="surrogateescape", newline="")
        self._writer = csv.writer(self._file, delimiter=info.delimiter)
        self._for_people = for_people

    def write(self, row: Sequence[str]) -> None:
        if self._for_people:
            row = [neutralise(cell) for cell in row]
        self._writer.writerow(row)

    def close(self) -> None:
        self._file.close()


class _XlsxWriter:
    def __init__(self, path: Path) -> None:
        self._book = xlsxwriter.Workbook(
            str(path), {"constant_memory": True, "strings_to_formulas": False,
                        "strings_to_numbers": False, "strings_to_urls": False},
        )  # fmt: skip
        self._sheet = self._book.add_worksheet()
        self._row = 0

    def write(self, row: Sequence[str]) -> None:
        for column, cell in enumerate(row):
            if cell:
                self._sheet.write_string(self._row, column, cell)
        self._row += 1

    def close(self) -> None:
        self._book.close()


class TableWriter:
    """Rows to `path` in the format of `info` (a context manager; closes the file).

    `for_people=False` is for the reduced file sent upstream: its cells must
    reach Clearout as the caller wrote them, so nothing is neutralised.
    """

    def __init__(self, path: Path, info: TableInfo, *, for_people: bool = True) -> None:
        self.path = path
        self._out: RowWriter = (
            _XlsxWriter(path) if info.kind == "xlsx"
            else _CsvWriter(path, info, for_people=for_people)
        )  # fmt: skip

    def write(self, row: Sequence[str]) -> None:
        self._out.write(row)

    def write_all(self, rows: Iterable[Sequence[str]]) -> None:
        for row in rows:
            self._out.write(row)

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._out.close()


def media_type(info: TableInfo) -> str:
    return XLSX_TYPE if info.kind == "xlsx" else CSV_TYPE
