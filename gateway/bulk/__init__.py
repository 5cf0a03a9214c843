"""Bulk lists: the service (upload, progress, download, cancel, remove), settlement, files.

`service` (per-team lists, bounded uploads), `settlement` (credits settled
from the result file), `pending` (reservations waiting for it), `upload` (a
spooled file), `formulas` (spreadsheet-safe cells).  Nothing here knows HTTP.
"""
