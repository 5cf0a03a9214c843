"""The caps a bulk file is read under: an upload, and a result file (which is wider)."""

from __future__ import annotations

from dataclasses import replace

from gateway.bulk import tables
from gateway.settings import Settings

# A result file is the uploaded rows plus eleven Clearout columns: more cells
# and more bytes for as many rows.
RESULT_GROWTH = 4


def upload_limits(settings: Settings) -> tables.Limits:
    return replace(tables.DEFAULT_LIMITS, max_rows=settings.max_bulk_rows)


def result_limits(settings: Settings) -> tables.Limits:
    base = upload_limits(settings)
    return replace(
        base,
        max_file_bytes=base.max_file_bytes * RESULT_GROWTH,
        max_inflated_bytes=base.max_inflated_bytes * RESULT_GROWTH,
        max_cells=base.max_cells * RESULT_GROWTH,
        max_line_chars=base.max_line_chars * 2,
    )
