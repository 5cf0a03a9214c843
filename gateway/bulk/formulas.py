"""Spreadsheet formula injection: cells that a spreadsheet would run are neutralised.

A result file is opened in Excel or Sheets by people, and a cell such as
`=HYPERLINK("http://x","y")` or `@SUM(...)` in it would be evaluated there
(OWASP "CSV injection").  Every cell the gateway or its sandbox writes into a
result goes through `neutralise`, which prefixes a leading formula trigger
with an apostrophe: the spreadsheet shows the text, and runs nothing.
"""

from __future__ import annotations

# What spreadsheets read as the start of a formula (tab and carriage return
# too: some applications strip them and look at the next character).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    return "'" + cell if cell.startswith(FORMULA_TRIGGERS) else cell
