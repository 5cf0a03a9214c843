"""Bounding the grid python-calamine would build from a worksheet part, before it builds it.

calamine allocates rows x columns up to the furthest cell a sheet names (a 1.5 KB sheet
naming cell CV1000000 made it allocate 3.1 GB) and reserves memory for a declared
shared-strings `uniqueCount` before reading one string.  `PartScanner` takes a member's
inflated bytes in whole-tag windows and refuses such a declaration; `_SheetBounds` keeps
upper bounds on calamine's rows, columns and listed cells and refuses a sheet past the caps.
"""

from __future__ import annotations

import functools
import re
from operator import itemgetter

from gateway.bulk.tables.common import Limits, MiB, TableTooLarge, UnreadableFile

# Longest markup tag a part may hold across a chunk boundary; real ones are tiny.
_MAX_TAG = 1 * MiB
# Fast path: whitespace, both quotes and ">" become spaces, and a namespace prefix's colon
# becomes "<" so `<x:c r="A1">` reads as `<x<c r= A1  `; "/" stays, so `</row>` and the
# empty `<c/>` (which calamine skips) do not look like starts.
_FAST = bytes.maketrans(b"\t\n\r\"'>:", b"      <")
_FAST_CELL = re.compile(rb"<c r= ([A-Za-z]{1,4})0*(\d{1,10}) ")
_FAST_ROW = re.compile(rb"<row r= 0*(\d{1,10}) ")
_PREFIX = rb"(?:[^\s<>/:=\"']+:)*"
_TAG_START = re.compile(rb"<" + _PREFIX + rb"(?:c|row)[\s/>]")
# Slow path, on the raw bytes: row ends, c and row start tags whole (an r written first is
# picked out on the way), and any r attribute outside them.
_TOKEN = re.compile(
    rb"<(?:(/)" + _PREFIX + rb"row(?=[\s/>])|" + _PREFIX + rb"(c|row)(?=[\s/>])"
    rb"(?:\s+r\s*=\s*[\"']([A-Za-z]{0,8})(\d{0,12})[\"'](?=[\s/>]))?"
    rb"((?:[^>\"']|\"[^\"]*\"|'[^']*')*))"
    rb"|(?<=[\s\"'])r\s*=\s*(?:\"([^\"]*)\"|'([^']*)')"
)
_ATTR_R = re.compile(rb"(?:^|(?<=[\s\"']))r\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_REF = re.compile(rb"([A-Za-z]*)(\d*)")
_BEYOND = 10**10
_UNIQUE_COUNT = re.compile(rb"uniqueCount\s*=\s*[\"']\s*\+?(\d+)")


class PartScanner:
    """Feeds one member's inflated bytes to the checks in whole-tag windows."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.carry = b""
        self.sheet: _SheetBounds | None = None

    def feed(self, chunk: bytes) -> None:
        window = self.carry + chunk
        cut = window.rfind(b"<")
        if cut < 0:
            self.carry = b""
        elif len(window) - cut <= _MAX_TAG:
            window, self.carry = window[:cut], window[cut:]
        elif _TAG_START.match(window, cut):
            raise UnreadableFile("xlsx cell tag longer than 1 MiB")
        else:
            self.carry = b""  # not a tag that places cells: no need to keep it whole
        self._scan(window)

    def close(self) -> None:
        self._scan(self.carry)
        self.carry = b""

    def _scan(self, window: bytes) -> None:
        if b"uniqueCount" in window:
            # calamine reserves memory for the declared count before reading one string.
            for digits in _UNIQUE_COUNT.findall(window):
                if len(digits) > 12 or int(digits) > self.limits.max_cells:
                    detail = f"shared strings declaring uniqueCount={int(digits):,}"
                    raise TableTooLarge("max_cells", self.limits.max_cells, detail)
        if self.sheet is None and b"sheetData" in window:
            self.sheet = _SheetBounds(self.limits)
        if self.sheet is not None:
            self.sheet.scan(window)


class _SheetBounds:
    """Upper bounds on the grid calamine will build from one worksheet part.

    calamine places a cell at its `r` reference, or, without one, right of the previous
    cell in the current row (the row advancing at each `</row>` or jumping to a row's `r`),
    then allocates rows x columns up to the furthest cell.  Windows where every cell tag
    starts with an `r` and no other `r` attribute appears take a fast path on C-level
    counts; any other window is walked tag by tag, keeping row and column at or above
    calamine's own.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.rows = self.cells = 0
        self.max_row = self.max_col = -1
        self.row = self.col = 0

    def scan(self, window: bytes) -> None:
        text = window.translate(_FAST)
        cells = _FAST_CELL.findall(text)
        row_refs = _FAST_ROW.findall(text)
        # An r attribute, after any whitespace or a closing quote, reads " r=" or " r ".
        attributes = text.count(b" r=") + text.count(b" r ")
        if text.count(b"<c ") == len(cells) and attributes == len(cells) + len(row_refs):
            self._fast(text, cells, row_refs)
        else:
            self._slow(window)
        self._check()

    def _fast(self, text: bytes, cells: list[tuple[bytes, bytes]], row_refs: list[bytes]) -> None:
        self.rows += text.count(b"<row ")
        self.cells += len(cells)
        if cells:
            letters = set(map(itemgetter(0), cells))
            self.max_col = max(self.max_col, *(_column(value) - 1 for value in letters))
            self.max_row = max(self.max_row, max(map(int, set(map(itemgetter(1), cells)))) - 1)
            self.col = max(self.col, self.max_col + 1)
        top = max(map(int, row_refs), default=0) - 1
        # Every row tag, start or end, may advance calamine's row: count them all.
        self.row = max(self.row, top) + text.count(b"row ")

    def _slow(self, window: bytes) -> None:
        for slash, name, letters, digits, rest, double, single in _TOKEN.findall(window):
            if slash:
                self.row, self.col = self.row + 1, 0
            elif not name:
                self._stray_ref(double or single)
            elif not rest.rstrip().endswith(b"/"):  # an empty element places nothing
                if b"r" in rest and _ATTR_R.search(rest):
                    self._start(name, _last_ref(rest))  # calamine keeps the last r it meets
                else:
                    self._start(name, _ref_value(letters, digits) if digits else None)

    def _start(self, name: bytes, ref: tuple[int, int] | None) -> None:
        if name == b"row":
            self.rows += 1
            if ref is not None:
                self.row = max(self.row, ref[0])
            return
        self.cells += 1
        if ref is None or ref[1] < 0:
            ref = (self.row, self.col)
        self.max_row, self.max_col = max(self.max_row, ref[0]), max(self.max_col, ref[1])
        self.col = ref[1] + 1

    def _stray_ref(self, value: bytes) -> None:
        # An r attribute outside any whole tag: a fragment of a tag cut at a "<" inside a
        # quoted value, or text.  Counting it can only raise the bounds.
        ref = _parse_ref(value)
        if ref is None:
            return
        self.row = max(self.row, ref[0])
        if ref[1] >= 0:
            self.max_row, self.max_col = max(self.max_row, ref[0]), max(self.max_col, ref[1])
            self.col = max(self.col, ref[1] + 1)

    def _check(self) -> None:
        limits = self.limits
        if self.rows > limits.max_rows + 1 or self.max_row > limits.max_rows:
            raise TableTooLarge("max_rows", limits.max_rows, "worksheet rows after the header")
        if (self.max_row + 1) * (self.max_col + 1) > limits.max_cells:
            detail = f"a worksheet of {self.max_row + 1:,} rows x {self.max_col + 1:,} columns"
            raise TableTooLarge("max_cells", limits.max_cells, detail)
        if self.cells > limits.max_cells:
            # Cells naming the same place pile up in calamine's list before the grid is built.
            detail = f"a worksheet of {self.cells:,} cells"
            raise TableTooLarge("max_cells", limits.max_cells, detail)


def _last_ref(attrs: bytes) -> tuple[int, int] | None:
    values = _ATTR_R.findall(attrs)
    if not values:
        return None
    double, single = values[-1]
    return _parse_ref(double or single)


def _parse_ref(value: bytes) -> tuple[int, int] | None:
    """(row, column) 0-based from "B7" (column -1 for a bare row number); None if invalid."""
    match = _REF.fullmatch(value)
    if match is None or not match[2]:
        return None  # calamine refuses the sheet over such a reference
    return _ref_value(match[1], match[2])


def _ref_value(letters: bytes, digits: bytes) -> tuple[int, int]:
    digits = digits.lstrip(b"0") or b"0"
    # Longer references are past every cap: clamp them rather than parse huge numbers.
    row = int(digits) - 1 if len(digits) <= 10 else _BEYOND
    return row, _column(letters) - 1 if letters else -1


@functools.lru_cache(maxsize=4096)
def _column(letters: bytes) -> int:
    """1-based column number of "A", "ab", "XFD"... (calamine ignores the letters' case)."""
    if len(letters) > 4:
        return _BEYOND
    number = 0
    for letter in letters.upper():
        number = number * 26 + letter - 64
    return number
