"""gateway.bulk.tables on real files: CSV dialects, XLSX bombs and bounds, exact distinct counts."""

from __future__ import annotations

import csv
import io
import random
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import openpyxl
import pytest

from gateway.bulk import tables
from gateway.bulk.tables import Limits, TableTooLarge, UnreadableFile

REPO = Path(__file__).resolve().parent.parent

MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/></Types>'
)
ROOT_RELS = (
    f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{PKG_NS}">'
    f'<Relationship Id="rId1" Type="{REL_NS}/officeDocument" Target="xl/workbook.xml"/>'
    "</Relationships>"
)
SHEET_HEAD = f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{MAIN_NS}"><sheetData>'
SHEET_TAIL = "</sheetData></worksheet>"


def write_xlsx(
    path: Path,
    sheets: list[tuple[str, str, str]],
    *,
    shared_strings: str | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """An XLSX by hand: `sheets` is (name, relationship type, sheetData body) in tab order.

    Parts are numbered in reverse tab order, so with several tabs the first is not
    sheet1.xml: a reader guessing by part name instead of following the rels gets it wrong.
    """
    entries, rels = [], []
    for index, (name, typ, _) in enumerate(sheets):
        number = len(sheets) - index
        folder = "worksheets" if typ == "worksheet" else f"{typ}s"
        entries.append(f'<sheet name="{name}" sheetId="{index + 1}" r:id="rId{number}"/>')
        rels.append(
            f'<Relationship Id="rId{number}" Type="{REL_NS}/{typ}" '
            f'Target="{folder}/sheet{number}.xml"/>'
        )
    if shared_strings is not None:
        rels.append(
            f'<Relationship Id="rIdS" Type="{REL_NS}/sharedStrings" Target="sharedStrings.xml"/>'
        )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", ROOT_RELS)
        archive.writestr(
            "xl/workbook.xml",
            f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{MAIN_NS}" '
            f'xmlns:r="{REL_NS}"><sheets>{"".join(entries)}</sheets></workbook>',
        )
        archive.writestr(
            "xl/_rels/workbook.xml.rels",
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{PKG_NS}">'
            f"{''.join(rels)}</Relationships>",
        )
        for index, (_, typ, body) in enumerate(sheets):
            number = len(sheets) - index
            folder = "worksheets" if typ == "worksheet" else f"{typ}s"
            archive.writestr(f"xl/{folder}/sheet{number}.xml", SHEET_HEAD + body + SHEET_TAIL)
        if shared_strings is not None:
            archive.writestr("xl/sharedStrings.xml", shared_strings)
        for name, text in (extra or {}).items():
            archive.writestr(name, text)
    return path


def one_sheet(
    path: Path, body: str, *, shared_strings: str | None = None, extra: dict[str, str] | None = None
) -> Path:
    return write_xlsx(
        path, [("Contacts", "worksheet", body)], shared_strings=shared_strings, extra=extra
    )


def cells_row(number: int, *values: str) -> str:
    cells = "".join(
        f'<c r="{chr(65 + i)}{number}" t="inlineStr"><is><t>{v}</t></is></c>'
        for i, v in enumerate(values)
    )
    return f'<row r="{number}">{cells}</row>'


def rows_of(path: Path, kind: tables.FileKind, **kwargs: object) -> list[list[str]]:
    return list(tables.iter_rows(path, kind, **kwargs))  # type: ignore[arg-type]


# ---- bombs ------------------------------------------------------------------------------

BOMB_ROW = b'<row r="2"><c r="A2" t="inlineStr"><is><t>x</t></is></c></row>'


def build_bomb(path: Path, inflated: int) -> Path:
    """A workbook whose one sheet streams `inflated` bytes of rows into the archive."""
    block = BOMB_ROW * (1024 * 1024 // len(BOMB_ROW))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", ROOT_RELS)
        archive.writestr(
            "xl/workbook.xml",
            f'<workbook xmlns="{MAIN_NS}" xmlns:r="{REL_NS}"><sheets>'
            '<sheet name="Bomb" sheetId="1" r:id="rId1"/></sheets></workbook>',
        )
        archive.writestr(
            "xl/_rels/workbook.xml.rels",
            f'<Relationships xmlns="{PKG_NS}"><Relationship Id="rId1" '
            f'Type="{REL_NS}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>',
        )
        with archive.open("xl/worksheets/sheet1.xml", "w") as sheet:
            sheet.write(f"{SHEET_HEAD}{cells_row(1, 'Full Name', 'Domain')}".encode())
            written = 0
            while written < inflated:
                sheet.write(block)
                written += len(block)
            sheet.write(SHEET_TAIL.encode())
    return path


def declare_size(path: Path, member: str, size: int) -> Path:
    """Rewrite `member`'s inflated size in both its local header and the central directory."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        header = archive.getinfo(member).header_offset
    struct.pack_into("<L", data, header + 22, size)
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_size, extra_size, comment_size = struct.unpack_from("<3H", data, at + 28)
        if data[at + 46 : at + 46 + name_size] == member.encode():
            struct.pack_into("<L", data, at + 24, size)
        at = data.find(b"PK\x01\x02", at + 46 + name_size + extra_size + comment_size)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7 MB archive whose sheet inflates to just over 1 GiB (built once: ~1.5 s)."""
    return build_bomb(tmp_path_factory.mktemp("bomb") / "bomb.xlsx", (1 << 30) + (1 << 20))


@pytest.fixture
def liar(bomb: Path, tmp_path: Path) -> Path:
    """The bomb with a central directory claiming the sheet inflates to 1,000 bytes."""
    path = tmp_path / "liar.xlsx"
    path.write_bytes(bomb.read_bytes())
    return declare_size(path, "xl/worksheets/sheet1.xml", 1000)


# ---- CSV --------------------------------------------------------------------------------


def test_semicolon_csv_with_bom_is_read_in_its_own_dialect(tmp_path: Path) -> None:
    """A semicolon CSV behind a UTF-8 BOM (Excel, European locale): delimiter and BOM are
    detected, the BOM is not part of the first header cell, quotes keep a ';' in a cell."""
    path = tmp_path / "contacts.csv"
    path.write_bytes(
        '\ufeffFull Name;Domain\r\n"Smith; John";acme.com\r\n Zoë ; zoe.fr \r\n'.encode()
    )
    info = tables.inspect(path, "csv")
    assert info == tables.TableInfo("csv", ("Full Name", "Domain"), ";", True)
    assert info.encoding == "utf-8-sig"
    assert rows_of(path, "csv") == [
        ["Full Name", "Domain"],
        ["Smith; John", "acme.com"],
        ["Zoë", "zoe.fr"],
    ]


def test_tab_csv_is_detected_even_with_commas_in_cells(tmp_path: Path) -> None:
    """A tab-separated file whose cells contain commas is read as tab-separated."""
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"Full Name\tCompany, Inc\tDomain\nJohn Smith\tAcme, Ltd\tacme.com\n")
    info = tables.inspect(path, "csv")
    assert (info.delimiter, info.bom) == ("\t", False)
    assert rows_of(path, "csv")[1] == ["John Smith", "Acme, Ltd", "acme.com"]


def test_comma_csv_keeps_quoted_delimiters_and_newlines_in_cells(tmp_path: Path) -> None:
    """Comma stays the delimiter when semicolons only appear inside quotes, and a quoted
    cell may hold commas, semicolons and a line break."""
    path = tmp_path / "contacts.csv"
    path.write_bytes(b'Full Name,Domain\n"Smith, John; Jr.",acme.com\n"two\nlines",b.com\n')
    assert tables.inspect(path, "csv").delimiter == ","
    assert rows_of(path, "csv")[1:] == [["Smith, John; Jr.", "acme.com"], ["two\nlines", "b.com"]]


def test_single_column_csv_defaults_to_comma(tmp_path: Path) -> None:
    """With no delimiter in sight (one column) the dialect is plain comma, no BOM."""
    path = tmp_path / "names.csv"
    path.write_bytes(b"Full Name\nJohn Smith\n")
    assert tables.inspect(path, "csv") == tables.TableInfo("csv", ("Full Name",), ",", False)


def test_cp1252_bytes_round_trip_through_surrogateescape(tmp_path: Path) -> None:
    """Non-UTF-8 bytes (a cp1252 export) survive as surrogate escapes: re-encoding the cells
    with surrogateescape in the detected dialect rewrites the upload byte for byte, and the
    distinct count still works on such cells."""
    original = "Full Name;Domain\r\nJosé Müller;café.fr\r\nJosé Müller;café.fr\r\n".encode("cp1252")
    path = tmp_path / "latin.csv"
    path.write_bytes(original)
    info = tables.inspect(path, "csv")
    rows = rows_of(path, "csv")
    assert rows[1][0].encode("utf-8", "surrogateescape") == "José Müller".encode("cp1252")
    out = io.BytesIO()
    with io.TextIOWrapper(out, info.encoding, "surrogateescape", newline="") as text:
        csv.writer(text, delimiter=info.delimiter, lineterminator="\r\n").writerows(rows)
        text.flush()
        assert out.getvalue() == original
    assert tables.count_distinct_rows(path, "csv") == 1


def test_csv_line_over_the_cap_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    """One 50 MB line is refused as TableTooLarge(max_line_chars) quickly, not parsed into
    one huge cell; so is a quoted cell spanning many short lines."""
    path = tmp_path / "long.csv"
    with path.open("wb") as fh:
        fh.write(b"Full Name,Domain\n")
        fh.write(b"x" * (50 * 1024 * 1024) + b",a.com\n")
    started = time.perf_counter()
    with pytest.raises(TableTooLarge) as caught:
        rows_of(path, "csv")
    assert time.perf_counter() - started < 2
    assert (caught.value.limit, caught.value.value) == ("max_line_chars", 128 * 1024)
    assert "max_line_chars" in str(caught.value)
    path.write_bytes(b'Full Name,Domain\n"' + b"x\n" * 100_000 + b'",a.com\n')
    with pytest.raises(TableTooLarge, match="max_line_chars"):
        rows_of(path, "csv")


def test_csv_cell_over_csv_field_limit_is_too_large(tmp_path: Path) -> None:
    """With a record cap above csv's own field limit, csv's refusal still reads as
    TableTooLarge, naming csv.field_size_limit."""
    path = tmp_path / "wide.csv"
    path.write_bytes(b'Full Name,Domain\n"' + b"x" * (csv.field_size_limit() + 1) + b'",a\n')
    with pytest.raises(TableTooLarge, match=r"csv\.field_size_limit"):
        rows_of(path, "csv", limits=Limits(max_line_chars=10 * 1024 * 1024))


def test_csv_row_cap_counts_rows_after_the_header(tmp_path: Path) -> None:
    """max_rows data rows pass; one more (blank rows count too) raises TableTooLarge while
    iterating, naming max_rows and its value."""
    path = tmp_path / "rows.csv"
    path.write_bytes(b"Full Name,Domain\na,1\nb,2\n\nc,3\n")
    assert len(rows_of(path, "csv", limits=Limits(max_rows=4))) == 5
    rows = tables.iter_rows(path, "csv", limits=Limits(max_rows=3))
    assert [next(rows) for _ in range(4)][-1] == []
    with pytest.raises(TableTooLarge) as caught:
        next(rows)
    assert (caught.value.limit, caught.value.value) == ("max_rows", 3)
    assert "max_rows" in str(caught.value) and "3" in str(caught.value)


def test_file_size_cap_applies_before_reading(tmp_path: Path) -> None:
    """A file over max_file_bytes is refused before any parsing, CSV or XLSX."""
    path = tmp_path / "big.csv"
    path.write_bytes(b"Full Name,Domain\n" + b"a,b\n" * 1000)
    with pytest.raises(TableTooLarge, match="max_file_bytes"):
        rows_of(path, "csv", limits=Limits(max_file_bytes=1000))
    with pytest.raises(TableTooLarge, match="max_file_bytes"):
        tables.check_xlsx(path, limits=Limits(max_file_bytes=1000))


def test_check_bounds_reads_through_without_keeping_rows(tmp_path: Path) -> None:
    """check_bounds passes a file within the limits and raises TableTooLarge for one past
    them, for CSV (read through) and XLSX (pre-check only)."""
    path = tmp_path / "rows.csv"
    path.write_bytes(b"Full Name,Domain\na,1\nb,2\nc,3\n")
    tables.check_bounds(path, "csv", Limits(max_rows=3))
    with pytest.raises(TableTooLarge, match="max_rows"):
        tables.check_bounds(path, "csv", Limits(max_rows=2))
    body = "".join(cells_row(n, f"P{n}") for n in range(1, 5))
    sheet = one_sheet(tmp_path / "rows.xlsx", body)
    tables.check_bounds(sheet, "xlsx", Limits(max_rows=3))
    with pytest.raises(TableTooLarge, match="max_rows"):
        tables.check_bounds(sheet, "xlsx", Limits(max_rows=2))


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    """A vanished spool file reads as UnreadableFile, for both kinds."""
    for kind in ("csv", "xlsx"):
        with pytest.raises(UnreadableFile):
            rows_of(tmp_path / f"gone.{kind}", kind)


# ---- XLSX: reading ----------------------------------------------------------------------


def test_xlsx_cells_come_out_as_stripped_strings(tmp_path: Path) -> None:
    """calamine's numbers keep today's formatting (12.0 -> "12", 1.5 stays), text is
    stripped, empty cells are "", and the dialect reported for an XLSX is plain comma."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Full Name", "Domain", "Employees"])
    sheet.append(["  John Smith ", "acme.com", 12.0])
    sheet.append(["Jane", None, 1.5])
    path = tmp_path / "contacts.xlsx"
    book.save(path)
    assert rows_of(path, "xlsx") == [
        ["Full Name", "Domain", "Employees"],
        ["John Smith", "acme.com", "12"],
        ["Jane", "", "1.5"],
    ]
    assert tables.inspect(path, "xlsx") == tables.TableInfo(
        "xlsx", ("Full Name", "Domain", "Employees")
    )


def test_xlsx_first_sheet_follows_workbook_order_and_rels(tmp_path: Path) -> None:
    """The first tab in workbook.xml is read, found through its relationship (its part is
    not sheet1.xml), and a chart sheet listed first is skipped for the first worksheet."""
    path = write_xlsx(
        tmp_path / "tabs.xlsx",
        [
            ("Chart", "chartsheet", ""),
            (
                "Contacts",
                "worksheet",
                cells_row(1, "Full Name", "Domain") + cells_row(2, "A", "a.com"),
            ),
            ("Other", "worksheet", cells_row(1, "Wrong", "Sheet")),
        ],
    )
    assert tables.check_xlsx(path) == "Contacts"
    assert rows_of(path, "xlsx") == [["Full Name", "Domain"], ["A", "a.com"]]


def test_xlsx_without_cell_references_reads_positionally(tmp_path: Path) -> None:
    """Cells and rows without r attributes (legal, some writers omit them) pass the check and
    are read in place."""
    body = (
        '<row><c t="inlineStr"><is><t>Full Name</t></is></c><c t="inlineStr"><is><t>Domain'
        '</t></is></c></row><row><c t="inlineStr"><is><t>A</t></is></c><c t="inlineStr">'
        "<is><t>a.com</t></is></c></row>"
    )
    path = one_sheet(tmp_path / "positional.xlsx", body)
    assert rows_of(path, "xlsx") == [["Full Name", "Domain"], ["A", "a.com"]]


def test_xlsx_row_cap_is_enforced_by_the_pre_check(tmp_path: Path) -> None:
    """A sheet with more than max_rows data rows is refused before calamine reads it; at
    exactly max_rows it is read whole."""
    body = cells_row(1, "Full Name", "Domain") + "".join(
        cells_row(n, f"P{n}", "a.com") for n in range(2, 7)
    )
    path = one_sheet(tmp_path / "rows.xlsx", body)
    assert len(rows_of(path, "xlsx", limits=Limits(max_rows=5))) == 6
    with pytest.raises(TableTooLarge) as caught:
        tables.check_xlsx(path, limits=Limits(max_rows=4))
    assert (caught.value.limit, caught.value.value) == ("max_rows", 4)
    with pytest.raises(TableTooLarge, match="max_rows"):
        rows_of(path, "xlsx", limits=Limits(max_rows=4))


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        # One far cell: calamine would allocate the grid up to it (3 GB for this one).
        (
            '<row r="1"><c r="A1"><v>1</v></c></row><row r="900000"><c r="CV900000"><v>2</v></c></row>',
            "max_cells",
        ),
        ('<row r="1"><c r="A1"><v>1</v></c><c r="A5000000"><v>1</v></c></row>', "max_rows"),
        ('<row r="1"><c r="ZZZZZZ1"><v>1</v></c><c r="A2"><v>1</v></c></row>', "max_cells"),
        ('<row r="1"><c r="A99999999999999"><v>1</v></c></row>', "max_rows"),
        # The same, spelled the ways calamine's lenient XML reader also accepts.
        (
            "<row r='1'><c r = 'A1'><v>1</v></c></row><row\tr='900000'><c\nr=\"CV900000\"><v>2</v></c></row>",
            "max_cells",
        ),
        (
            f'<x:row xmlns:x="{MAIN_NS}" r="1"><x:c r="A1"><x:v>1</x:v></x:c><x:c r="CV900000"><x:v>1</x:v></x:c></x:row>',
            "max_cells",
        ),
        ('<row r="1"><c r="A1" t="n" r="CV900000"><v>1</v></c><c r="A2"/></row>', "max_cells"),
        ('<row r="1"><c r="A1"t="n"r="cv900000"><v>1</v></c></row>', "max_cells"),
        (
            '<row r="1"><c x="a&lt;b" r="A1"><v>1</v></c></row><row r="900000"><c r="CV900000"><v>1</v></c></row>',
            "max_cells",
        ),
        ('<row r="1"><c x="a<b>" r="CV900000"><v>1</v></c></row>', "max_cells"),
        # Positional cells: 200 without r in one row, then a row far below.
        (
            '<row r="1">' + "<c><v>1</v></c>" * 200 + '</row><row r="50000"><c><v>1</v></c></row>',
            "max_cells",
        ),
        # Positional rows: row ends advance the row even with no r anywhere.
        ("<row><c><v>1</v></c><c><v>1</v></c></row>" + "<row></row>" * 3_000_000, "max_rows"),
        # A prefixed, quote-laden far reference inside an otherwise canonical sheet.
        (
            '<row r="1"><c r="A1"><v>1</v></c></row><row r="2"><c q="&quot;" r="A2"/><c r=\'CV900000\'><v>1</v></c></row>',
            "max_cells",
        ),
    ],
)
def test_xlsx_grid_bombs_are_refused_before_calamine(tmp_path: Path, body: str, limit: str) -> None:
    """A sheet whose cell references (however they are spelled) would make calamine allocate
    a grid past max_cells or max_rows is refused by the pre-check, which never allocates it."""
    path = one_sheet(tmp_path / "grid.xlsx", body)
    with pytest.raises(TableTooLarge) as caught:
        tables.check_xlsx(path)
    assert caught.value.limit == limit


def test_xlsx_cells_piled_on_one_place_are_counted(tmp_path: Path) -> None:
    """Cells repeating one reference keep the grid tiny but fill calamine's cell list: past
    max_cells of them the sheet is refused."""
    body = '<row r="1">' + '<c r="A1"><v>1</v></c>' * 2000 + "</row>"
    path = one_sheet(tmp_path / "pile.xlsx", body)
    tables.check_xlsx(path, limits=Limits(max_cells=2000))
    with pytest.raises(TableTooLarge, match="2,000 cells"):
        tables.check_xlsx(path, limits=Limits(max_cells=1999))


def test_xlsx_declared_shared_strings_are_bounded(tmp_path: Path) -> None:
    """A 1 KB workbook declaring uniqueCount=4e9 (calamine reserves memory for it up front and
    aborts the process) is refused as TableTooLarge(max_cells)."""
    strings = f'<sst xmlns="{MAIN_NS}" count="1" uniqueCount="4000000000"><si><t>a</t></si></sst>'
    path = one_sheet(tmp_path / "sst.xlsx", '<row r="1"><c r="A1" t="s"><v>0</v></c></row>',
                     shared_strings=strings)  # fmt: skip
    with pytest.raises(TableTooLarge) as caught:
        tables.check_xlsx(path)
    assert caught.value.limit == "max_cells"


def test_xlsx_member_count_is_capped(tmp_path: Path) -> None:
    """An archive with more entries than max_members is refused, and so is one whose central
    directory is too big for that many entries, before zipfile parses it."""
    extra = {f"xl/media/pad{i}.xml": "<a/>" for i in range(30)}
    path = one_sheet(tmp_path / "many.xlsx", cells_row(1, "Full Name"), extra=extra)
    with pytest.raises(TableTooLarge) as caught:
        tables.check_xlsx(path, limits=Limits(max_members=20))
    assert (caught.value.limit, caught.value.value) == ("max_members", 20)
    long_names = {f"xl/media/{'p' * 1000}{i}.xml": "<a/>" for i in range(10)}
    path = one_sheet(tmp_path / "long.xlsx", cells_row(1, "Full Name"), extra=long_names)
    with pytest.raises(TableTooLarge, match="zip directory"):
        tables.check_xlsx(path, limits=Limits(max_members=16))


def test_zip64_end_record_is_read_where_zipfile_reads_it(tmp_path: Path) -> None:
    """A zip64 end record (just before its locator, where zipfile looks) claiming a million
    entries is refused by max_members before zipfile parses the directory."""
    data = _zip_bytes(_valid_members())
    cd_size, cd_offset = struct.unpack_from("<2L", data, len(data) - 22 + 12)
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 10**6, 10**6,
                         cd_size, cd_offset)  # fmt: skip
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(data) - 22, 1)
    path = tmp_path / "zip64.xlsx"
    path.write_bytes(data[:-22] + record + locator + data[-22:])
    with pytest.raises(TableTooLarge, match="1,000,000 zip members"):
        tables.check_xlsx(path)


# ---- XLSX: bombs and broken archives ----------------------------------------------------


def test_zip_bomb_is_refused_quickly(bomb: Path) -> None:
    """The 7 MB archive inflating to 1 GiB (which took calamine to 1.98 GB RSS for 57 s) is
    refused as TableTooLarge(max_inflated_bytes) in well under a second, from its sizes."""
    assert bomb.stat().st_size < 16 * 1024 * 1024
    started = time.perf_counter()
    with pytest.raises(TableTooLarge) as caught:
        rows_of(bomb, "xlsx")
    assert time.perf_counter() - started < 1
    assert caught.value.limit == "max_inflated_bytes"


def test_lying_central_directory_is_caught_while_inflating(liar: Path) -> None:
    """A directory claiming the 1 GiB sheet holds 1,000 bytes passes the declared-size check
    but is refused as soon as inflating passes the claim."""
    started = time.perf_counter()
    with pytest.raises(UnreadableFile, match="inflates past its declared size"):
        tables.check_xlsx(liar)
    assert time.perf_counter() - started < 1


def test_inflated_bytes_are_counted_as_really_produced(bomb: Path, tmp_path: Path) -> None:
    """A directory declaring a size just under the cap is caught by the running count of real
    inflated bytes (TableTooLarge(max_inflated_bytes)), long before the 1 GiB is inflated."""
    path = tmp_path / "under.xlsx"
    path.write_bytes(bomb.read_bytes())
    declare_size(path, "xl/worksheets/sheet1.xml", 8 * 1024 * 1024)
    limits = Limits(max_inflated_bytes=8 * 1024 * 1024 + 4096, max_rows=10**9, max_cells=10**12)
    started = time.perf_counter()
    with pytest.raises(TableTooLarge) as caught:
        tables.check_xlsx(path, limits=limits)
    assert time.perf_counter() - started < 2
    assert caught.value.limit == "max_inflated_bytes"


def test_row_count_stops_a_bomb_mid_stream(bomb: Path, tmp_path: Path) -> None:
    """With the declared size within the byte cap, the bomb's rows (counted across chunk
    boundaries) cross max_rows and it is refused after inflating a fraction of it."""
    path = tmp_path / "rows.xlsx"
    path.write_bytes(bomb.read_bytes())
    declare_size(path, "xl/worksheets/sheet1.xml", 200 * 1024 * 1024)
    started = time.perf_counter()
    with pytest.raises(TableTooLarge) as caught:
        tables.check_xlsx(path)
    assert time.perf_counter() - started < 5
    assert caught.value.limit == "max_rows"


def test_rows_are_counted_across_chunk_boundaries(tmp_path: Path) -> None:
    """Row tags split between inflated 1 MiB chunks are counted exactly: 300,001 rows (all
    placed on row 1, so only the count can tell) pass at max_rows=300,000, fail at 299,999."""
    rows = '<row r="1" spans="1:1"><c r="A1"><v>1</v></c></row>' * 300_001
    path = one_sheet(tmp_path / "count.xlsx", rows)
    tables.check_xlsx(path, limits=Limits(max_rows=300_000))
    with pytest.raises(TableTooLarge, match="max_rows"):
        tables.check_xlsx(path, limits=Limits(max_rows=299_999))


def _zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _valid_members() -> dict[str, bytes]:
    return {
        "[Content_Types].xml": CONTENT_TYPES.encode(),
        "_rels/.rels": ROOT_RELS.encode(),
        "xl/workbook.xml": (
            f'<workbook xmlns="{MAIN_NS}" xmlns:r="{REL_NS}"><sheets>'
            '<sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ).encode(),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{PKG_NS}"><Relationship Id="rId1" '
            f'Type="{REL_NS}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
        ).encode(),
        "xl/worksheets/sheet1.xml": (SHEET_HEAD + cells_row(1, "Full Name") + SHEET_TAIL).encode(),
    }


def _broken_archives() -> dict[str, bytes]:
    valid = _zip_bytes(_valid_members())
    encrypted = bytearray(valid)
    at = encrypted.find(b"PK\x01\x02")
    encrypted[at + 8] |= 0x1
    flipped = bytearray(valid)
    sheet_at = flipped.find(b"xl/worksheets/sheet1.xml") + 40
    flipped[sheet_at] ^= 0xFF
    no_workbook = {k: v for k, v in _valid_members().items() if k != "xl/workbook.xml"}
    with_dtd = _valid_members()
    with_dtd["xl/workbook.xml"] = b'<!DOCTYPE w [<!ENTITY a "aaaa">]>' + with_dtd["xl/workbook.xml"]
    bad_xml = _valid_members()
    bad_xml["xl/worksheets/sheet1.xml"] = (SHEET_HEAD + "<row><c><v>1</v></row>").encode()
    return {
        "empty": b"",
        "text": b"Full Name,Domain\na,b\n",
        "ole-encrypted": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 4000,
        "truncated": valid[: len(valid) // 2],
        "zip-encrypted": bytes(encrypted),
        "flipped-byte": bytes(flipped),
        "no-workbook": _zip_bytes(no_workbook),
        "dtd": _zip_bytes(with_dtd),
        "bzip2": _zip_bytes(_valid_members(), zipfile.ZIP_BZIP2),
        "calamine-rejects": _zip_bytes(bad_xml),
        "no-sheets": _zip_bytes({**_valid_members(), "xl/workbook.xml": b"<workbook/>"}),
    }


@pytest.mark.parametrize("case", sorted(_broken_archives()))
def test_broken_xlsx_is_unreadable_never_another_error(tmp_path: Path, case: str) -> None:
    """Not a zip, a truncated or corrupted zip, encryption, a missing workbook, a DTD, an
    unsupported compression, or XML calamine rejects: UnreadableFile (not TableTooLarge),
    and never any other exception type, from iter_rows, inspect and count_distinct_rows."""
    path = tmp_path / f"{case}.xlsx"
    path.write_bytes(_broken_archives()[case])
    for read in (rows_of, tables.inspect, tables.count_distinct_rows):
        with pytest.raises(UnreadableFile) as caught:
            read(path, "xlsx")
        assert not isinstance(caught.value, TableTooLarge), caught.value


def test_valid_minimal_archive_reads(tmp_path: Path) -> None:
    """The archive the broken cases are derived from is itself readable (so each case fails
    for its own defect)."""
    path = tmp_path / "valid.xlsx"
    path.write_bytes(_zip_bytes(_valid_members()))
    assert rows_of(path, "xlsx") == [["Full Name"]]


# ---- distinct counts ----------------------------------------------------------------------


def _random_rows(count: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    rows = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.05:
            rows.append(["", ""])
        else:
            n = rng.randrange(count // 3)
            rows.append([f"Person {n}", f"d{n % 7}.com" if roll < 0.9 else f" d{n % 7}.com "])
    return rows


def test_distinct_count_is_exact_when_spilling(tmp_path: Path) -> None:
    """Spilling to disk (forced by a tiny memory_rows, deep enough to re-split partitions)
    gives exactly the brute-force count: header excluded, blank rows ignored, cells compared
    after stripping; the spill directory is empty afterwards."""
    rows = _random_rows(3000, seed=7)
    path = tmp_path / "contacts.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Full Name", "Domain"])
        writer.writerows(rows)
    expected = len({tuple(c.strip() for c in r) for r in rows if any(c.strip() for c in r)})
    spill = tmp_path / "spill"
    spill.mkdir()
    for memory_rows in (7, 100, 100_000):
        got = tables.count_distinct_rows(path, "csv", spill_dir=spill, memory_rows=memory_rows)
        assert got == expected, memory_rows
        assert list(spill.iterdir()) == []


def test_distinct_count_of_xlsx_matches_csv(tmp_path: Path) -> None:
    """The same rows as XLSX count the same as CSV, spilling or not."""
    rows = _random_rows(600, seed=11)
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Full Name", "Domain"])
    for row in rows:
        sheet.append([c or None for c in row])
    path = tmp_path / "contacts.xlsx"
    book.save(path)
    expected = len({tuple(c.strip() for c in r) for r in rows if any(c.strip() for c in r)})
    assert tables.count_distinct_rows(path, "xlsx") == expected
    assert tables.count_distinct_rows(path, "xlsx", memory_rows=4, spill_dir=tmp_path) == expected


def test_spill_directory_is_removed_when_counting_fails(tmp_path: Path) -> None:
    """A row cap crossed after spilling raises TableTooLarge and leaves no spill files."""
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"Full Name,Domain\n" + b"".join(b"p%d,d.com\n" % n for n in range(100)))
    spill = tmp_path / "spill"
    spill.mkdir()
    with pytest.raises(TableTooLarge):
        tables.count_distinct_rows(
            path, "csv", limits=Limits(max_rows=50), spill_dir=spill, memory_rows=5
        )
    assert list(spill.iterdir()) == []


# ---- peak memory, in child processes ----------------------------------------------------

PEAK = """
import sys, time
from pathlib import Path
from gateway.bulk import tables
started = time.perf_counter()
result = []
{work}
elapsed = time.perf_counter() - started
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(hwm, elapsed, *result)
"""
COUNT_CSV = """
result.append(tables.count_distinct_rows(
    Path(sys.argv[1]), "csv", limits=tables.Limits(max_rows=2_000_000), spill_dir=Path(sys.argv[2])
))
"""
CHECK_BOMBS = """
for name in sys.argv[1:]:
    try:
        list(tables.iter_rows(Path(name), "xlsx"))
    except tables.UnreadableFile as exc:
        result.append(type(exc).__name__)
"""


def peak_of(work: str, *args: str) -> tuple[int, float, list[str]]:
    """(VmHWM in kB, seconds, printed results) of a child running `work` after the imports."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK.format(work=work), *args],
        cwd=REPO, capture_output=True, text=True, timeout=110, check=True,
    )  # fmt: skip
    hwm, elapsed, *result = done.stdout.split()
    return int(hwm), float(elapsed), result


def test_peak_memory_of_distinct_counting_and_bomb_checks(bomb: Path, tmp_path: Path) -> None:
    """Counting a 2,000,000-row CSV (1,500,000 distinct) adds under 20 MiB to the peak RSS of
    a child that only imports the module, and refusing the zip bombs (declared, lying, and
    lying within the byte cap so the rows are scanned) adds under 24 MiB."""
    path = tmp_path / "two-million.csv"
    with path.open("w", newline="") as fh:
        fh.write("Full Name,Domain\r\n")
        for start in range(0, 2_000_000, 100_000):
            fh.write("".join(f"Person {i % 1_500_000},c{i % 50_000}.example.com\r\n"
                             for i in range(start, start + 100_000)))  # fmt: skip
    liar = tmp_path / "liar.xlsx"
    liar.write_bytes(bomb.read_bytes())
    declare_size(liar, "xl/worksheets/sheet1.xml", 1000)
    within = tmp_path / "within.xlsx"
    within.write_bytes(bomb.read_bytes())
    declare_size(within, "xl/worksheets/sheet1.xml", 200 * 1024 * 1024)
    spill = tmp_path / "spill"
    spill.mkdir()

    baseline, _, _ = peak_of("")
    counted, seconds, result = peak_of(COUNT_CSV, str(path), str(spill))
    checked, _, refusals = peak_of(CHECK_BOMBS, str(bomb), str(liar), str(within))

    assert result == ["1500000"]
    assert list(spill.iterdir()) == []
    assert counted - baseline < 20 * 1024, (baseline, counted, seconds)
    # A generous floor: ~450k rows/s measured; a tenth of it means something regressed.
    assert seconds < 45, seconds
    assert refusals == ["TableTooLarge", "UnreadableFile", "TableTooLarge"]
    assert checked - baseline < 24 * 1024, (baseline, checked)


# ---- columns and results ----------------------------------------------------------------


def test_find_columns_accepts_an_inspected_header() -> None:
    """find_columns takes the tuple header TableInfo carries, as it took lists."""
    assert tables.find_columns(("First Name", "Last Name", "Website")) == (
        {"first_name": 0, "last_name": 1, "domain": 2},
        None,
    )


def test_count_found_reads_finder_columns_of_a_semicolon_result(tmp_path: Path) -> None:
    """count_found reads a result file in any detected dialect: found emails and role rows."""
    path = tmp_path / "result.csv"
    path.write_bytes(
        b"Full Name;Domain;Clearout Finder Email Address;Clearout Finder Status;"
        b"Clearout Finder Role Account\r\n"
        b"a;a.com;a@a.com;Found;yes\r\nb;b.com;;Not Found;\r\nc;c.com;info@c.com;found;no\r\n"
    )
    assert tables.count_found(path, "csv") == (2, 1)
