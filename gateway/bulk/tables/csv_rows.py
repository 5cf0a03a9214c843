"""CSV files as Excel writes them: the delimiter, an optional BOM, and bounded records.

A CSV's delimiter (comma, semicolon or tab, as Excel writes them per locale) is picked by
parsing a sample with each candidate, its UTF-8 BOM is noted for writers, its undecodable
bytes are kept as surrogate escapes so a writer can reproduce them, and no record (a line,
or several when a quoted cell spans them) is held past `Limits.max_line_chars`.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from gateway.bulk.tables.common import Limits, TableTooLarge, too_many_rows

_DELIMITERS = (",", ";", "\t")
_SAMPLE_BYTES = 64 * 1024
_SAMPLE_RECORDS = 5


def csv_rows(path: Path, limits: Limits) -> Iterator[list[str]]:
    delimiter, _ = csv_dialect(path)
    # surrogateescape, not replace: a writer encoding with it gets the original bytes back.
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        used, max_rows = [0], limits.max_rows
        lines = _bounded_lines(fh, limits.max_line_chars, used)
        for count, row in enumerate(csv.reader(lines, delimiter=delimiter)):
            if count > max_rows:
                raise too_many_rows(limits)
            used[0] = 0
            yield [c.strip() for c in row]


def _bounded_lines(fh: io.TextIOBase, limit: int, used: list[int]) -> Iterator[str]:
    """Lines for csv.reader; `used` counts the current record's characters.

    readline(limit) means one 50 MB line is never held whole: it arrives in pieces and
    the record is refused as soon as it passes the limit.
    """
    readline = fh.readline
    while line := readline(limit + 1):
        used[0] += len(line)
        if used[0] > limit:
            raise TableTooLarge("max_line_chars", limit, "a CSV record")
        yield line


def csv_dialect(path: Path) -> tuple[str, bool]:
    with path.open("rb") as fh:
        raw = fh.read(_SAMPLE_BYTES)
    bom = raw.startswith(codecs.BOM_UTF8)
    text = raw[len(codecs.BOM_UTF8) if bom else 0 :].decode("utf-8", "surrogateescape")
    if len(raw) == _SAMPLE_BYTES:
        # The sample cut its last record short; a partial record would skew the widths.
        text = text[: max(text.rfind("\n"), text.rfind("\r")) + 1] or text
    return _pick_delimiter(text), bom


def _pick_delimiter(sample: str) -> str:
    """The delimiter whose first records agree on a width above one, widest header first.

    csv.Sniffer guesses from character frequencies and trips over free text; here each
    candidate parses the sample properly (quotes included) and the records vote.
    """
    best, best_score = ",", (False, 1)
    for delimiter in _DELIMITERS:
        try:
            reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
            widths = [len(row) for row in islice(reader, _SAMPLE_RECORDS) if row]
        except csv.Error:
            continue
        if widths:
            score = (len(set(widths)) == 1, widths[0])
            if widths[0] > 1 and score > best_score:
                best, best_score = delimiter, score
    return best
