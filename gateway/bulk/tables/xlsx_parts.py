"""Which sheet of an XLSX is the first: the package and workbook parts, as Excel reads them.

The first worksheet is found through the relationships (`_rels/.rels` to the workbook,
the workbook's rels to its sheets), not guessed from part names, and the parts are parsed
by expat as they inflate, refusing a DTD (never needed in OOXML, and how entity expansion
bombs start) and more entries than `Limits.max_members`.
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO
from xml.parsers import expat

from gateway.bulk.tables.common import Limits, TableTooLarge, UnreadableFile
from gateway.bulk.tables.xlsx_archive import inflate


def _read_part(
    fh: BinaryIO, info: zipfile.ZipInfo | None, parse: Callable[[bytes], object]
) -> None:
    if info is not None:
        for chunk in inflate(fh, info):
            parse(chunk)


@dataclass
class _PackageParts:
    """What the package's relationship and workbook parts say, as expat streams them."""

    max_entries: int
    relationships: dict[str, tuple[str, str]] = field(default_factory=dict)
    sheets: list[tuple[str, str]] = field(default_factory=list)

    def parser(self) -> expat.XMLParserType:
        parser = expat.ParserCreate(namespace_separator=" ")
        parser.StartElementHandler = self._start
        parser.StartDoctypeDeclHandler = _refuse_doctype
        return parser

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        local = name.rpartition(" ")[2]
        if local == "Relationship":
            rel = (attrs.get("Type", ""), attrs.get("Target", ""))
            self.relationships.setdefault(attrs.get("Id", ""), rel)
        elif local == "sheet":
            rel_id = next((v for k, v in attrs.items() if k.endswith(" id")), "")
            self.sheets.append((attrs.get("name", ""), rel_id))
        if len(self.relationships) + len(self.sheets) > self.max_entries:
            raise TableTooLarge("max_members", self.max_entries, "workbook parts naming parts")


def _refuse_doctype(*_: object) -> None:
    # A DTD is never needed in OOXML, and is how entity expansion bombs start.
    raise UnreadableFile("xlsx part declares a DTD")


def _parse_part(
    fh: BinaryIO, members: dict[str, zipfile.ZipInfo], name: str, limits: Limits
) -> _PackageParts:
    parts = _PackageParts(limits.max_members)
    parser = parts.parser()
    _read_part(fh, members.get(name), lambda chunk: parser.Parse(chunk, False))
    if name in members:
        parser.Parse(b"", True)
    return parts


def first_sheet(fh: BinaryIO, members: dict[str, zipfile.ZipInfo], limits: Limits) -> str | None:
    """The first worksheet in workbook order, found the way Excel does: through the rels."""
    package = _parse_part(fh, members, "_rels/.rels", limits)
    workbook = next(
        (posixpath.normpath(target.lstrip("/")) for typ, target in package.relationships.values()
         if typ.endswith("/officeDocument")),
        "xl/workbook.xml",
    )  # fmt: skip
    if workbook not in members:
        raise UnreadableFile("not an xlsx file: no workbook part")
    folder, base = posixpath.split(workbook)
    book = _parse_part(fh, members, workbook, limits)
    rels = _parse_part(fh, members, posixpath.join(folder, "_rels", base + ".rels"), limits)
    if not book.sheets:
        raise UnreadableFile("xlsx workbook has no sheets")
    for name, rel_id in book.sheets:
        if rels.relationships.get(rel_id, ("", ""))[0].endswith("/worksheet"):
            return name
    return None
