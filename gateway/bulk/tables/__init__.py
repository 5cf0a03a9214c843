"""Reading bulk-finder files (CSV and XLSX) from the spool, row by row and within fixed bounds.

Shared by the gateway (which counts a file's distinct rows to reserve credits, and a result
file's found rows to settle them) and the sandbox (which answers for each row), this package
owns every byte-level decision about those files: a CSV's delimiter (comma, semicolon or tab,
as Excel writes them per locale), its optional UTF-8 BOM and its undecodable bytes (kept as
surrogate escapes so a writer can reproduce them); for an XLSX, a streaming pre-check that must
pass before python-calamine (ten times faster than openpyxl, but it inflates a whole sheet into
a dense grid) sees the file: it caps the archive's members, inflates each one chunk by chunk
counting the real bytes (the central directory can lie), refuses a declared `uniqueCount`
calamine would reserve memory for, and bounds the grid of every worksheet part from its cell
references, since a 1.5 KB sheet naming cell CV1000000 made calamine allocate 3.1 GB; and the
`Limits` every read stays within.  Measured here, calamine peaks at 1.5 to 2.2 bytes of RSS per
inflated byte, 70 to 115 bytes per cell (275 MB over the interpreter for 4M numeric or
shared-string cells, 397 MB for 4M inline strings), so the defaults of 256 MiB inflated and 4M
cells keep a legal sheet at the caps near 430 MB (a 1M-row, 4-column sheet of 245 MiB peaked at
429 MB).  Distinct rows are counted exactly from 16-byte digests that spill to partition files
on disk past `memory_rows` of them, so memory does not grow with the file.

The parts, by role: `common` (kinds, caps, errors), `rows` (the readers), `csv_rows` (CSV
dialects and bounded records), `xlsx_precheck` (the pre-check), `xlsx_archive` (the zip
container), `xlsx_parts` (which sheet is first), `xlsx_grid` (bounding calamine's grid),
`distinct` (exact distinct counts) and `columns` (what the columns mean).
"""

from gateway.bulk.tables.columns import count_found, find_columns
from gateway.bulk.tables.common import (
    DEFAULT_LIMITS,
    FileKind,
    Limits,
    MiB,
    TableInfo,
    TableTooLarge,
    UnreadableFile,
    file_kind,
)
from gateway.bulk.tables.distinct import count_distinct_rows
from gateway.bulk.tables.rows import check_bounds, inspect, iter_rows
from gateway.bulk.tables.xlsx_precheck import check_xlsx

__all__ = [
    "DEFAULT_LIMITS",
    "FileKind",
    "Limits",
    "MiB",
    "TableInfo",
    "TableTooLarge",
    "UnreadableFile",
    "check_bounds",
    "check_xlsx",
    "count_distinct_rows",
    "count_found",
    "file_kind",
    "find_columns",
    "inspect",
    "iter_rows",
]
