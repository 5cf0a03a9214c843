"""Rows of a bulk file, CSV or XLSX, within `Limits`: the readers the rest of the gateway calls.

`iter_rows` yields every row as stripped strings and turns every failure of the readers
below it (csv, python-calamine, the file system) into `UnreadableFile`; an XLSX reaches
python-calamine only after `check_xlsx` bounded everything calamine would allocate.
`inspect` adds a CSV's dialect to the header, and `check_bounds` refuses a file over the
caps without keeping its rows.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from python_calamine import CalamineWorkbook

from gateway.bulk.tables.common import (
    DEFAULT_LIMITS,
    FileKind,
    Limits,
    TableInfo,
    TableTooLarge,
    UnreadableFile,
    check_file_size,
    too_many_rows,
)
from gateway.bulk.tables.csv_rows import csv_dialect, csv_rows
from gateway.bulk.tables.xlsx_precheck import check_xlsx


def iter_rows(
    path: Path, kind: FileKind, *, limits: Limits = DEFAULT_LIMITS
) -> Iterator[list[str]]:
    """Every row of the file (header included), cells as stripped strings, within `limits`.

    Bytes of a CSV that are not UTF-8 arrive as surrogate escapes: whatever encodes a cell
    (a writer, a digest, a log line) needs errors="surrogateescape".
    """
    try:
        check_file_size(path, limits)
        yield from csv_rows(path, limits) if kind == "csv" else _xlsx_rows(path, limits)
    except UnreadableFile:
        raise
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            limit = csv.field_size_limit()
            raise TableTooLarge("csv.field_size_limit", limit, "a CSV cell") from None
        raise UnreadableFile(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise UnreadableFile(str(exc)) from None


def inspect(path: Path, kind: FileKind, *, limits: Limits = DEFAULT_LIMITS) -> TableInfo:
    """The header row and, for a CSV, its delimiter and whether it starts with a BOM."""
    header = tuple(next(iter_rows(path, kind, limits=limits), []))
    if kind == "xlsx":
        return TableInfo(kind, header)
    try:
        delimiter, bom = csv_dialect(path)
    except OSError as exc:
        raise UnreadableFile(str(exc)) from None
    return TableInfo(kind, header, delimiter, bom)


def check_bounds(path: Path, kind: FileKind, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise TableTooLarge (or UnreadableFile) if reading the file would cross `limits`.

    A CSV is read through without keeping its rows; an XLSX only takes the pre-check,
    which bounds everything calamine would allocate without calling it.
    """
    if kind == "xlsx":
        check_xlsx(path, limits=limits)
        return
    for _ in iter_rows(path, kind, limits=limits):
        pass


def _xlsx_rows(path: Path, limits: Limits) -> Iterator[list[str]]:
    sheet_name = check_xlsx(path, limits=limits)
    try:
        book = CalamineWorkbook.from_path(str(path))
        try:
            if sheet_name is None:
                sheet = book.get_sheet_by_index(0)
            else:
                sheet = book.get_sheet_by_name(sheet_name)
        finally:
            book.close()
        raw_rows = sheet.iter_rows()
    except Exception as exc:  # noqa: BLE001 - calamine raises its own types for bad archives
        raise UnreadableFile(f"cannot read xlsx file: {exc}") from None
    for count, raw in enumerate(raw_rows):
        if count > limits.max_rows:  # the pre-check bounds this already; belt and braces
            raise too_many_rows(limits)
        yield [_cell(c) for c in raw]


def _cell(value: object) -> str:
    # calamine gives floats for numeric cells; 12.0 and "12" mean the same row.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value).strip()
