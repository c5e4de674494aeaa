"""Reading inputs: every workbook format, CSV as people and tools break it, headers, snapshots."""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import stat
import struct
import threading
import zipfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from provisioner import table as table_module
from provisioner import workbooks
from provisioner.charsets import encoding_problem
from provisioner.errors import ConfigError, InputError
from provisioner.table import Table, _csv_records, open_table, snapshot_input

DATA = Path(__file__).parent / "data"
SID1, SID2 = "IG" + "1" * 32, "IG" + "2" * 32


def names_address(cells: Sequence[str]) -> bool:
    """The predicate rows.py passes: a row that names an AddressSid column."""
    return any(cell.replace(" ", "").casefold() == "addresssid" for cell in cells)


def read(table: Table) -> list[tuple[int, list[str]]]:
    return list(table.rows())


# --- Workbooks: one sheet, every format ---------------------------------------------------------
# Row 1 a title, row 2 blank, row 3 the header (with a blank header over a filled column C),
# row 4 data, row 5 blank, row 6 data. Row numbers are the sheet's.
SHEET: list[list[Any]] = [
    ["Customer list"],
    [],
    ["AddressSid", "Name", None, "Seats", "Joined", "Active", "Ref"],
    [SID1, "Zoë Ångström", "note", 42, datetime(2024, 1, 2), True, "00123"],
    [],
    [SID2, "  Renée ", None, 1.5, datetime(2024, 3, 4, 5, 6, 7), False, "007"],
]
HEADERS = ("AddressSid", "Name", "Column C", "Seats", "Joined", "Active", "Ref")
ROWS = [
    (4, [SID1, "Zoë Ångström", "note", "42", "2024-01-02", "TRUE", "00123"]),
    (6, [SID2, "Renée", "", "1.5", "2024-03-04T05:06:07", "FALSE", "007"]),
]


def write_xlsx(path: Path, sheets: dict[str, list[list[Any]]] | None = None) -> Path:
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)  # type: ignore[arg-type]
    for name, rows in (sheets or {"Customers": SHEET, "Other": [["x"]]}).items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
    workbook.save(path)
    return path


def rewrite_part(path: Path, part: str, change: Callable[[bytes], bytes]) -> Path:
    """Rewrite one part of a zip (as other tools write it), keeping the rest."""
    with zipfile.ZipFile(path) as original:
        parts = {info: original.read(info.filename) for info in original.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as rewritten:
        for info, content in parts.items():
            rewritten.writestr(info, change(content) if info.filename == part else content)
    return path


def write_xlsm(path: Path) -> Path:
    write_xlsx(path)
    return rewrite_part(
        path,
        "[Content_Types].xml",
        lambda xml: xml.replace(
            b"spreadsheetml.sheet.main+xml", b"ms-excel.sheet.macroEnabled.main+xml"
        ),
    )


def write_ods(path: Path) -> Path:
    with pd.ExcelWriter(path, engine="odf") as writer:
        padded = [row + [None] * (7 - len(row)) for row in SHEET]
        pd.DataFrame(padded).to_excel(writer, sheet_name="Customers", header=False, index=False)
        pd.DataFrame([["x"]]).to_excel(writer, sheet_name="Other", header=False, index=False)
    return path


def write_xls(path: Path) -> Path:
    # Nothing in Python writes .xls today (xlwt is unmaintained): the fixture is this same sheet,
    # written by openpyxl and saved as .xls by LibreOffice (tests/data/README.md).
    path.write_bytes((DATA / "sample.xls").read_bytes())
    return path


def _record(kind: int, payload: bytes = b"") -> bytes:
    """One BIFF12 record: type and size as 7-bit groups (MS-XLSB 2.1.4), then the payload."""

    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
            value >>= 7
            if not value:
                return bytes(out)

    return varint(kind) + varint(len(payload)) + payload


def _wide(text: str) -> bytes:
    return struct.pack("<I", len(text)) + text.encode("utf-16-le")


def write_xlsb(path: Path) -> Path:
    # Nothing here writes .xlsb (LibreOffice reads it only), so the test writes the few records
    # a reader needs (MS-XLSB): workbook, one sheet, string/number/bool cells.
    cells = bytearray()
    for number, row in enumerate(SHEET):
        cells += _record(0x00, struct.pack("<I", number) + bytes(13))  # BrtRowHdr
        for column, value in enumerate(row):
            head = struct.pack("<II", column, 0)
            if isinstance(value, bool):
                cells += _record(0x04, head + bytes([value]))  # BrtCellBool
            elif isinstance(value, datetime):  # a serial number: no styles, so no date format
                serial = (value - datetime(1899, 12, 30)).total_seconds() / 86400
                cells += _record(0x05, head + struct.pack("<d", serial))
            elif isinstance(value, (int, float)):
                cells += _record(0x05, head + struct.pack("<d", value))  # BrtCellReal
            elif isinstance(value, str):
                cells += _record(0x06, head + _wide(value))  # BrtCellSt
    sheet = (
        _record(0x81)  # BrtBeginSheet
        + _record(0x94, struct.pack("<IIII", 0, len(SHEET) - 1, 0, 6))  # BrtWsDim
        + _record(0x91)  # BrtBeginSheetData
        + bytes(cells)
        + _record(0x92)  # BrtEndSheetData
        + _record(0x82)  # BrtEndSheet
    )
    book = (
        _record(0x83)  # BrtBeginBook
        + _record(0x8F)  # BrtBeginBundleShs
        + _record(0x9C, struct.pack("<II", 0, 1) + _wide("rId1") + _wide("Customers"))
        + _record(0x90)  # BrtEndBundleShs
        + _record(0x9D, bytes(26))  # BrtCalcProp
        + _record(0x84)  # BrtEndBook
    )
    relationship = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "[Content_Types].xml",
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="bin" ContentType="application/vnd.ms-excel.sheet.binary'
            '.macroEnabled.main"/></Types>',
        )
        archive.writestr(
            "_rels/.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{relationship}/officeDocument" '
            'Target="xl/workbook.bin"/></Relationships>',
        )
        archive.writestr(
            "xl/_rels/workbook.bin.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{relationship}/worksheet" '
            'Target="worksheets/sheet1.bin"/></Relationships>',
        )
        archive.writestr("xl/workbook.bin", book)
        archive.writestr("xl/worksheets/sheet1.bin", sheet)
    return path


# What each format keeps: xlsb written without styles has no date format, so dates are numbers.
WORKBOOKS = {
    "xlsx": (write_xlsx, ROWS),
    "xlsm": (write_xlsm, ROWS),
    "ods": (write_ods, ROWS),
    "xls": (write_xls, ROWS),
    "xlsb": (
        write_xlsb,
        [
            (4, [*ROWS[0][1][:4], "45293", *ROWS[0][1][5:]]),
            (6, [*ROWS[1][1][:4], "45355.21258101852", *ROWS[1][1][5:]]),
        ],
    ),
}


@pytest.mark.parametrize("suffix", sorted(WORKBOOKS))
def test_every_workbook_format_reads_as_the_sheet_shows(tmp_path: Path, suffix: str) -> None:
    write, expected = WORKBOOKS[suffix]
    source = write(tmp_path / f"in.{suffix}")

    table = open_table(source, looks_like_header=names_address)

    assert (table.format, table.sheet, table.header_row) == (suffix, "Customers", 3)
    assert table.is_workbook
    assert table.headers == HEADERS
    assert read(table) == expected
    assert read(table) == expected  # each call reads again, the same


@pytest.mark.parametrize("suffix", sorted(WORKBOOKS))
def test_the_format_is_found_by_content_not_by_name(tmp_path: Path, suffix: str) -> None:
    write, expected = WORKBOOKS[suffix]
    source = write(tmp_path / f"in.{suffix}").rename(tmp_path / "exported.csv")

    table = open_table(source, looks_like_header=names_address)

    assert table.format == suffix
    assert read(table) == expected


@pytest.mark.parametrize("suffix", ["xlsx", "ods", "xls"])
def test_sheet_names_a_sheet_in_every_format(tmp_path: Path, suffix: str) -> None:
    source = WORKBOOKS[suffix][0](tmp_path / f"in.{suffix}")

    assert open_table(source, sheet="Other").headers == ("x",)
    with pytest.raises(
        InputError, match=r"--sheet Nope: no such sheet in .*; found: Customers, Other"
    ):
        open_table(source, sheet="Nope")


def test_number_formats_show_as_the_sheet_shows_them(tmp_path: Path) -> None:
    source = write_xlsx(
        tmp_path / "in.xlsx",
        {"S": [["AddressSid", "Id", "Share", "Amount", "Plain", "Time"]]},
    )
    workbook = openpyxl.load_workbook(source)
    sheet = workbook.active
    assert sheet is not None
    formats = ["@", "00000", "0.0%", "#,##0.00", "General", "hh:mm"]
    for values in (
        [SID1, 123, 0.125, 1234567.5, 7, datetime(2024, 1, 2, 9, 30).time()],
        [SID2, 45, 1, -2.005, 0.25, datetime(2024, 1, 2, 18, 0).time()],
    ):
        sheet.append(values)
        for cell, number_format in zip(sheet[sheet.max_row], formats, strict=True):
            cell.number_format = number_format
    workbook.save(source)

    assert read(open_table(source)) == [
        (2, [SID1, "00123", "12.5%", "1,234,567.50", "7", "09:30:00"]),
        (3, [SID2, "00045", "100.0%", "-2.01", "0.25", "18:00:00"]),
    ]


def test_a_wrong_stored_dimension_still_reads_every_row_and_column(tmp_path: Path) -> None:
    rows = [["AddressSid", "Name", "Note"]] + [[f"IG{n:032x}", f"n{n}", f"x{n}"] for n in range(50)]
    source = rewrite_part(
        write_xlsx(tmp_path / "in.xlsx", {"S": rows}),
        "xl/worksheets/sheet1.xml",
        lambda xml: xml.replace(b'<dimension ref="A1:C51"', b'<dimension ref="A1:A1"'),
    )
    assert b"A1:A1" in zipfile.ZipFile(source).read("xl/worksheets/sheet1.xml")
    read_only = openpyxl.load_workbook(source, read_only=True)
    assert len(list(read_only.active.iter_rows())) == 1  # type: ignore[union-attr]

    table = open_table(source)

    assert table.headers == ("AddressSid", "Name", "Note")
    assert read(table) == [(n + 2, [f"IG{n:032x}", f"n{n}", f"x{n}"]) for n in range(50)]


def test_hidden_rows_are_sent_and_counted_and_hidden_sheets_skipped(tmp_path: Path) -> None:
    source = write_xlsx(
        tmp_path / "in.xlsx",
        {
            "Lookup": [["AddressSid"], [SID2]],
            "Customers": [["AddressSid", "Name"], [SID1, "a"], [SID2, "b"], [], [SID1, "c"]],
        },
    )
    workbook = openpyxl.load_workbook(source)
    workbook["Lookup"].sheet_state = "hidden"
    workbook["Customers"].row_dimensions[3].hidden = True
    workbook["Customers"].row_dimensions[4].hidden = True  # blank: not counted
    workbook.save(source)

    table = open_table(source)

    assert (table.sheet, table.hidden_sheets, table.hidden_rows) == ("Customers", ("Lookup",), (3,))
    assert [number for number, _ in read(table)] == [2, 3, 5]
    assert read(open_table(source, sheet="Lookup")) == [(2, [SID2])]


def test_hidden_rows_are_counted_whatever_attributes_excel_adds(tmp_path: Path) -> None:
    source = write_xlsx(tmp_path / "in.xlsx", {"S": [["AddressSid"], [SID1], [SID2]]})
    workbook = openpyxl.load_workbook(source)
    workbook["S"].row_dimensions[2].hidden = True
    workbook.save(source)
    # Excel writes x14ac:dyDescent (a namespaced attribute) on every row, after `hidden`.
    rewritten = tmp_path / "excel.xlsx"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(rewritten, "w") as copy:
        for item in original.infolist():
            data = original.read(item.filename)
            if item.filename.startswith("xl/worksheets/"):
                data = re.sub(rb"<row ([^>]*)>", rb'<row \1 x14ac:dyDescent="0.25">', data)
            copy.writestr(item, data)

    table = open_table(rewritten)

    assert table.hidden_rows == (2,)
    assert [number for number, _ in read(table)] == [2, 3]


def test_a_table_that_starts_below_and_right_of_a1_keeps_the_sheets_numbers(tmp_path: Path) -> None:
    source = write_xlsx(tmp_path / "in.xlsx", {"S": []})
    workbook = openpyxl.load_workbook(source)
    sheet = workbook.active
    assert sheet is not None
    sheet["C4"], sheet["D4"], sheet["C6"], sheet["D7"] = "AddressSid", "Name", SID1, "late"
    workbook.save(source)

    table = open_table(source, looks_like_header=names_address)

    assert (table.header_row, table.headers, table.columns) == (4, ("AddressSid", "Name"), (2, 3))
    assert read(table) == [(6, [SID1, ""]), (7, ["", "late"])]


def test_an_empty_sheet(tmp_path: Path) -> None:
    source = write_xlsx(tmp_path / "in.xlsx", {"Empty": [], "S": [["AddressSid"]]})

    with pytest.raises(InputError, match=r"sheet 'Empty' of in\.xlsx: is empty; expected a header"):
        open_table(source, name="in.xlsx")


def test_a_workbook_without_sheets(tmp_path: Path) -> None:
    source = rewrite_part(
        write_xlsx(tmp_path / "in.xlsx", {"S": [["AddressSid"]]}),
        "xl/workbook.xml",
        lambda xml: (
            xml[: xml.index(b"<sheets>")] + b"<sheets/>" + xml[xml.index(b"</sheets>") + 9 :]
        ),
    )
    with pytest.raises(InputError, match="no sheets"):
        open_table(source)


# --- Files that are not what they say ---------------------------------------------------------


def ole2_with(stream_name: str) -> bytes:
    """An OLE2 compound file's bytes with a directory entry named `stream_name`."""
    return workbooks.OLE2_MAGIC + bytes(504) + stream_name.encode("utf-16-le") + bytes(400)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (ole2_with("EncryptedPackage"), "the workbook is password-protected; open it, remove"),
        (ole2_with("WordDocument"), "no workbook in it (a password-protected workbook, or not"),
        (b"PK\x03\x04 not really a zip", "not a readable xlsx workbook (damaged zip"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 50, "looks like a binary file"),
        (b"", "the file is empty"),
        (b"\n\n  \n", "the file is empty"),
    ],
    ids=["encrypted-ooxml", "other-ole2", "broken-zip", "png", "empty", "blank-lines"],
)
def test_files_that_are_no_table_get_one_clear_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    source = tmp_path / "in.xlsx"
    source.write_bytes(content)

    with pytest.raises(InputError, match=r"^in\.xlsx: ") as raised:
        open_table(source, name="in.xlsx")

    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_zip_that_is_not_a_workbook(tmp_path: Path) -> None:
    source = tmp_path / "in.xlsx"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("word/document.xml", "<w/>")

    with pytest.raises(InputError, match="a zip archive but not a workbook"):
        open_table(source)


def bomb(path: Path, inflated: int) -> Path:
    """A real xlsx with one more part of zeros that inflates to `inflated` bytes."""
    write_xlsx(path, {"S": [["AddressSid"], [SID1]]})
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/media/padding.bin", bytes(inflated))
    return path


def test_a_zip_bomb_is_refused_by_its_compression_ratio(tmp_path: Path) -> None:
    source = bomb(tmp_path / "in.xlsx", 4 * workbooks.RATIO_FLOOR_BYTES)
    assert source.stat().st_size < 50_000

    with pytest.raises(InputError, match=r"part xl/media/padding.bin inflates 4,194,304 bytes"):
        open_table(source)


def test_a_workbook_inflating_past_the_cap_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workbooks, "MAX_UNCOMPRESSED_BYTES", 100_000)
    source = bomb(tmp_path / "in.xlsx", 200_000)

    with pytest.raises(
        InputError,
        match=r"inflates to 2\d\d,\d{3} bytes; refused above 0 MiB inflated or 500x compression",
    ):
        open_table(source)


def test_a_zip_part_that_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    source = write_xlsx(tmp_path / "in.xlsx", {"S": [["AddressSid"], [SID1]]})
    content = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo("xl/worksheets/sheet1.xml")
    declared = struct.pack("<I", info.file_size)
    smaller = struct.pack("<I", info.file_size // 2)
    assert content.count(declared) >= 2  # in the local header and the central directory
    source.write_bytes(bytes(content).replace(declared, smaller))

    with pytest.raises(InputError, match=r"not a readable xlsx workbook \(damaged zip: Bad CRC"):
        open_table(source)


# --- Headers -----------------------------------------------------------------------------------

CSV_WITH_TITLE = f"Customers, November\nexported by ops\nAddress SID,Name\n{SID1},a\n\n{SID2},b\n"


@pytest.mark.parametrize(
    ("header_row", "looks_like_header", "headers", "rows"),
    [
        (None, names_address, ("Address SID", "Name"), [(4, [SID1, "a"]), (6, [SID2, "b"])]),
        (3, None, ("Address SID", "Name"), [(4, [SID1, "a"]), (6, [SID2, "b"])]),
        (
            None,
            None,
            ("Customers", " November"),
            [
                (2, ["exported by ops", ""]),
                (3, ["Address SID", "Name"]),
                (4, [SID1, "a"]),
                (6, [SID2, "b"]),
            ],
        ),
        (
            None,
            lambda cells: False,
            ("Customers", " November"),
            [
                (2, ["exported by ops", ""]),
                (3, ["Address SID", "Name"]),
                (4, [SID1, "a"]),
                (6, [SID2, "b"]),
            ],
        ),
    ],
    ids=["found", "named", "row-1-without-a-test", "row-1-when-none-matches"],
)
def test_the_header_row(
    tmp_path: Path,
    header_row: int | None,
    looks_like_header: Callable[[Sequence[str]], bool] | None,
    headers: tuple[str, ...],
    rows: list[tuple[int, list[str]]],
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(CSV_WITH_TITLE)

    table = open_table(source, header_row=header_row, looks_like_header=looks_like_header)

    assert table.headers == headers
    assert read(table) == rows


def test_the_header_is_searched_only_near_the_top(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    notes = "note\n" * table_module.HEADER_SEARCH_ROWS
    source.write_text(f"{notes}AddressSid\n{SID1}\n")

    assert open_table(source, looks_like_header=names_address).header_row == 1
    assert open_table(source, header_row=table_module.HEADER_SEARCH_ROWS + 1).headers == (
        "AddressSid",
    )


@pytest.mark.parametrize(
    ("header_row", "error", "message"),
    [
        (9, InputError, "--header-row 9: in.csv has only 6 rows"),
        (5, InputError, "--header-row 5: row 5 of in.csv is empty; name the row"),
        (0, ConfigError, "--header-row 0: rows are numbered from 1"),
    ],
)
def test_a_header_row_that_cannot_be(
    tmp_path: Path, header_row: int, error: type[Exception], message: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(CSV_WITH_TITLE)

    with pytest.raises(error, match=message):
        open_table(source, header_row=header_row, name="in.csv")


def test_a_blank_first_row_without_a_header_found(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(f"\n\nName\n{SID1}\n")

    with pytest.raises(InputError, match="the first row is empty; expected a header row"):
        open_table(source, looks_like_header=names_address)
    assert open_table(source.with_name("x.csv") if False else source, header_row=3).headers == (
        "Name",
    )


@pytest.mark.parametrize(
    ("text", "headers", "rows"),
    [
        ("AddressSid,,Name\nIG1,x,a\n", ("AddressSid", "Column B", "Name"), [["IG1", "x", "a"]]),
        ("AddressSid,,Name\nIG1,,a\n", ("AddressSid", "Name"), [["IG1", "a"]]),
        ("AddressSid,Name,,\nIG1,a,,\nIG2\n", ("AddressSid", "Name"), [["IG1", "a"], ["IG2", ""]]),
    ],
    ids=["blank-header-over-data", "blank-header-no-data", "trailing-empty-and-ragged"],
)
def test_blank_header_cells(
    tmp_path: Path, text: str, headers: tuple[str, ...], rows: list[list[str]]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(text)

    table = open_table(source)

    assert table.headers == headers
    assert [cells for _, cells in read(table)] == rows


# Trailing blank headers: (header, rows as typed, headers read, cells read). "" is a blank cell.
TRAILING_BLANK_HEADERS: dict[
    str, tuple[list[str], list[list[str]], tuple[str, ...], list[list[str]]]
] = {
    "over-data-in-every-row": (
        ["AddressSid", "", "CustomerFriendlyName", ""],
        [[SID1, "b1", "Ana", "d1"], [SID2, "b2", "Bo", "d2"]],
        ("AddressSid", "Column B", "CustomerFriendlyName", "Column D"),
        [[SID1, "b1", "Ana", "d1"], [SID2, "b2", "Bo", "d2"]],
    ),
    "several-with-data-in-some-rows": (
        ["AddressSid", "Name", "", "", ""],
        [[SID1, "a", "x"], [SID2, "b", "", "", "y"], [SID1, "c"]],
        ("AddressSid", "Name", "Column C", "Column E"),
        [[SID1, "a", "x", ""], [SID2, "b", "", "y"], [SID1, "c", "", ""]],
    ),
    "data-in-one-row-only": (
        ["AddressSid", "Name", ""],
        [[SID1, "a"], [SID2, "b", "z"], [SID1, "c", ""]],
        ("AddressSid", "Name", "Column C"),
        [[SID1, "a", ""], [SID2, "b", "z"], [SID1, "c", ""]],
    ),
    "no-data-anywhere": (
        ["AddressSid", "Name", "", " "],
        [[SID1, "a", "", " "], [SID2, "b"]],
        ("AddressSid", "Name"),
        [[SID1, "a"], [SID2, "b"]],
    ),
}


def write_rows(path: Path, rows: list[list[str]]) -> Path:
    """The rows as a CSV (ragged, as typed) or a workbook of one sheet (a blank cell empty)."""
    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as stream:
            csv.writer(stream).writerows(rows)
        return path
    if path.suffix == ".ods":
        width = max(len(row) for row in rows)
        padded = [[cell or None for cell in row] + [None] * (width - len(row)) for row in rows]
        with pd.ExcelWriter(path, engine="odf") as writer:
            pd.DataFrame(padded).to_excel(writer, sheet_name="S", header=False, index=False)
        return path
    return write_xlsx(path, {"S": [[cell or None for cell in row] for row in rows]})


@pytest.mark.parametrize("suffix", ["csv", "xlsx", "ods"])
@pytest.mark.parametrize(
    ("header", "rows", "headers", "cells"),
    TRAILING_BLANK_HEADERS.values(),
    ids=TRAILING_BLANK_HEADERS.keys(),
)
def test_a_trailing_blank_header_over_data_is_a_column_named_by_its_letter(
    tmp_path: Path,
    suffix: str,
    header: list[str],
    rows: list[list[str]],
    headers: tuple[str, ...],
    cells: list[list[str]],
) -> None:
    table = open_table(write_rows(tmp_path / f"in.{suffix}", [header, *rows]))

    assert table.headers == headers
    assert read(table) == [(number, row) for number, row in enumerate(cells, start=2)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"AddressSid,Name,\n{SID1},a,b,c\n", "row 2 has 4 cells but the header has 3 columns"),
        (
            f"AddressSid,,Name,\n{SID1},b,a,d\n{SID2},b,a,d,e\n",
            "row 3 has 5 cells but the header has 4 columns",
        ),
    ],
    ids=["beyond-one-trailing-blank", "beyond-a-blank-in-between-and-one-trailing"],
)
def test_a_csv_value_beyond_the_header_record_blank_cells_included_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(text)

    with pytest.raises(InputError) as raised:
        open_table(source, name="in.csv")
    assert str(raised.value) == (
        f"in.csv: {message}; quote values that contain the delimiter, or add headers"
    )


def test_a_workbook_column_beyond_the_header_is_a_column_a_csv_one_is_refused(
    tmp_path: Path,
) -> None:
    rows = [["AddressSid", "Name"], [SID1, "a", "surprise"], [SID2, "b"]]
    table = open_table(write_xlsx(tmp_path / "in.xlsx", {"S": rows}))
    assert table.headers == ("AddressSid", "Name", "Column C")
    assert read(table) == [(2, [SID1, "a", "surprise"]), (3, [SID2, "b", ""])]

    source = tmp_path / "in.csv"
    source.write_text(f"AddressSid,Name\n{SID1},a\n{SID2},b,surprise\n")
    with pytest.raises(
        InputError, match=r"in\.csv: row 3 has 3 cells but the header has 2 columns"
    ):
        open_table(source, name="in.csv")


# --- CSV ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "delimiter", "rows"),
    [
        ("sep=;\nAddressSid;Name\nIG1;a,b\n", ";", [(2, ["IG1", "a,b"])]),
        ("\ufeffsep=|\r\nAddressSid|Name\r\nIG1|a\r\n", "|", [(2, ["IG1", "a"])]),
        ('"sep=\t"\nAddressSid\tName\nIG1\ta\n', "\t", [(2, ["IG1", "a"])]),
        ("Title, with a comma\nAddressSid;Name\nIG1;a\n", ";", [(3, ["IG1", "a"])]),
    ],
    ids=["sep-semicolon", "sep-after-bom", "sep-quoted-tab", "sniffed-below-a-title"],
)
def test_the_delimiter_as_excel_reads_it(
    tmp_path: Path, text: str, delimiter: str, rows: list[tuple[int, list[str]]]
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(text.encode("utf-8"))

    table = open_table(source, looks_like_header=names_address)

    assert (table.delimiter, table.headers) == (delimiter, ("AddressSid", "Name"))
    assert read(table) == rows


def test_an_explicit_delimiter_wins_over_a_sep_line(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("sep=;\nAddressSid,Name\nIG1,a;b\n")

    assert read(open_table(source, delimiter=",")) == [(2, ["IG1", "a;b"])]


@pytest.mark.parametrize("delimiter", [";;", "", '"', "\n"])
def test_an_unusable_delimiter_is_a_config_error(tmp_path: Path, delimiter: str) -> None:
    source = tmp_path / "in.csv"
    source.write_text("AddressSid\nIG1\n")

    with pytest.raises(ConfigError, match=r"--delimiter .*: use one character"):
        open_table(source, delimiter=delimiter)


@pytest.mark.parametrize("encoding", ["klingon", "rot13", "base64", "utf-8\n", " ", "undefined"])
def test_an_encoding_that_cannot_read_text_is_a_config_error(tmp_path: Path, encoding: str) -> None:
    source = tmp_path / "in.csv"
    source.write_text("AddressSid\nIG1\n")

    with pytest.raises(ConfigError) as raised:
        open_table(source, encoding=encoding)
    assert str(raised.value) == f"--encoding {encoding_problem(encoding)}"


def test_row_numbers_count_records_not_lines(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text('AddressSid,Note\nIG1,"two\nlines"\n\nIG2,"a ""quote"""\r\nIG3,x')

    assert read(open_table(source)) == [
        (2, ["IG1", "two\nlines"]),
        (4, ["IG2", 'a "quote"']),
        (5, ["IG3", "x"]),
    ]


CSV_DEFAULT_LIMIT = 128 * 1024  # the csv module's own field size limit


def test_a_cell_longer_than_the_csv_default_limit_is_read(tmp_path: Path) -> None:
    long = "x" * (CSV_DEFAULT_LIMIT + 1000)
    source = tmp_path / "in.csv"
    source.write_text(f'AddressSid,Note\nIG1,"{long}"\n')

    assert read(open_table(source)) == [(2, ["IG1", long])]


def test_a_cell_past_the_cap_is_refused_naming_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(table_module, "MAX_CELL_CHARS", 1000)
    source = tmp_path / "in.csv"
    source.write_text('AddressSid,Note\nIG1,ok\nIG2,"' + "x\n" * 600 + '"\n')

    with pytest.raises(InputError, match=r"in\.csv: line 3: a value longer than 1,000 characters"):
        open_table(source, name="in.csv")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('AddressSid,Name\nIG1,a\nIG2,"Smith\nIG3,b\nIG4,c\n', 3),  # never closed
        ('AddressSid,Name\nIG1,"abc\nIG2,"def",x\n', 2),  # closed by a later row's quote
        ('AddressSid,Name\nIG1,"abc\nIG2,",x"\nIG3,d\n', 2),  # closed where a later value starts
        ('AddressSid,Name\nIG1,"a\nb"\nIG2,"c\nIG3,d', 4),  # after a good multi-line value
        ('AddressSid,Name\nIG1,"abc', 2),  # the last line, no line end
    ],
    ids=["never-closed", "closed-by-a-later-quote", "closed-at-a-delimiter", "after-good", "eof"],
)
def test_a_quote_left_open_is_refused_naming_the_line(tmp_path: Path, text: str, line: int) -> None:
    source = tmp_path / "in.csv"
    source.write_text(text)

    with pytest.raises(InputError) as raised:
        open_table(source, name="in.csv")

    assert str(raised.value).startswith(f"in.csv: line {line}: a quote opened here is never closed")


def test_a_quote_closed_by_a_later_rows_stray_quote_is_found_by_what_rows_hold(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(f'AddressSid,Name\n{SID1},"Smith\n{SID2},Jones\n{SID1},5\'11"\n')
    assert len(read(open_table(source))) == 1  # well-formed CSV: only its content can tell

    with pytest.raises(InputError, match=r"^in\.csv: line 2: a quote opened here is never"):
        open_table(source, name="in.csv", looks_like_row=lambda line: SID2 in line)


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        ('AddressSid,Height\nIG1,5\'11"\nIG2,"6\'2"""\n', [["IG1", "5'11\""], ["IG2", "6'2\""]]),
        ('AddressSid,Name\nIG1,Robert "Bob" Smith\n', [["IG1", 'Robert "Bob" Smith']]),
        ('AddressSid,Name\nIG1,"Bob"by\n', [["IG1", "Bobby"]]),
    ],
    ids=["inch-marks", "nickname", "quoted-then-text"],
)
def test_quotes_inside_one_line_are_read_as_spreadsheets_read_them(
    tmp_path: Path, text: str, rows: list[list[str]]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(text)

    assert [cells for _, cells in read(open_table(source))] == rows


FIELD = st.text(alphabet=st.sampled_from('ab ,"\n\r;é'), max_size=6)
# CSV as spreadsheets read it: quoted values as RFC 4180 says, text after a closing quote
# ("Bob"by), and unquoted values that hold a quote after their first character (5'11").
_VALUE = r'(?:"(?:[^"]|"")*"[^,\r\n]*|(?:[^",\r\n][^,\r\n]*)?)'
READABLE = re.compile(rf"(?:{_VALUE}(?:,{_VALUE})*(?:\r\n|\n|\r))*(?:{_VALUE}(?:,{_VALUE})*)?")
ROW_KEY = re.compile(r"K\d")  # what `looks_like_row` finds: each test row starts with its key


@st.composite
def broken_csv(draw: st.DrawFn, keyed: bool) -> tuple[list[list[str]], str]:
    """Records written as a spreadsheet writes them, then one quote inserted or removed."""
    width = draw(st.integers(1, 3))
    records = draw(
        st.lists(st.lists(FIELD, min_size=width, max_size=width), min_size=1, max_size=5)
    )
    if keyed:
        records = [[f"K{number}", *record] for number, record in enumerate(records)]
    stream = io.StringIO()
    line_end = draw(st.sampled_from(["\n", "\r\n"]))
    lone_cr = any("\r" in value for record in records for value in record)
    writer = csv.writer(stream, lineterminator=line_end)
    if lone_cr and line_end == "\n":  # Python leaves a lone CR unquoted there; spreadsheets don't
        writer = csv.writer(stream, lineterminator=line_end, quoting=csv.QUOTE_ALL)
    writer.writerows(records)
    text = stream.getvalue()
    quotes = [i for i, char in enumerate(text) if char == '"']
    if quotes and draw(st.sampled_from([True, False])):
        where = draw(st.sampled_from(quotes))
        return records, text[:where] + text[where + 1 :]
    where = draw(st.integers(0, len(text)))
    return records, text[:where] + '"' + text[where:]


def parse(
    path: Path, text: str, looks_like_row: Callable[[str], bool] | None = None
) -> list[list[str]] | str:
    """The records, or the one line of the InputError that refused them."""
    path.write_bytes(text.encode("utf-8"))
    try:
        records = _csv_records(path, "utf-8", ",", False, "in.csv", looks_like_row)
        return [cells for _, cells in records]
    except InputError as error:
        return str(error)


REFUSED = r"in\.csv: line \d+: a quote opened here is never closed, .*"
PROPERTY = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(case=broken_csv(keyed=True))
@example(case=([["K0", "a"], ["K1", "b"], ["K2", "5'11\""]], 'K0,"a\nK1,b\nK2,5\'11"\n'))
def test_broken_quoting_never_merges_rows_silently(
    tmp_path: Path, case: tuple[list[list[str]], str]
) -> None:
    records, text = case

    parsed = parse(tmp_path / "in.csv", text, lambda line: bool(ROW_KEY.search(line)))

    if isinstance(parsed, str):
        assert re.fullmatch(REFUSED, parsed)
    else:
        assert len(parsed) >= len(records)  # nothing swallowed


@PROPERTY
@given(case=broken_csv(keyed=False))
@example(case=([["abc", "q"], ["r", ",x"]], '"abc,q\nr,",x"\n'))
@example(case=([["\n"], [""], ["\n"], ["\n"]], '"\n""\n""\n"\n"\n"\n"\n'))
def test_without_row_keys_only_well_formed_csv_can_hide_a_merge(
    tmp_path: Path, case: tuple[list[list[str]], str]
) -> None:
    records, text = case

    parsed = parse(tmp_path / "in.csv", text)

    if isinstance(parsed, str):
        assert re.fullmatch(REFUSED, parsed)
    else:
        # Nothing swallowed, unless the broken text is itself CSV as spreadsheets read it (then
        # the file says so, and only knowing what a row holds, looks_like_row, can tell).
        assert len(parsed) >= len(records) or READABLE.fullmatch(text)


@PROPERTY
@given(records=st.lists(st.lists(FIELD, min_size=2, max_size=2), min_size=1, max_size=5))
def test_well_formed_csv_reads_back_exactly(tmp_path: Path, records: list[list[str]]) -> None:
    stream = io.StringIO()
    csv.writer(stream).writerows(records)

    parsed = parse(tmp_path / "in.csv", stream.getvalue(), lambda line: bool(ROW_KEY.search(line)))

    assert parsed == records


def test_utf16_and_cp1252(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes("\ufeffAddressSid\tName\r\nIG1\tZoë\r\n".encode("utf-16-le"))
    assert read(open_table(source)) == [(2, ["IG1", "Zoë"])]

    source.write_bytes("AddressSid;Name\nIG1;Günther\n".encode("cp1252"))
    table = open_table(source)
    assert (table.encoding, read(table)) == ("cp1252", [(2, ["IG1", "Günther"])])


def test_sheet_on_a_csv_file(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("AddressSid\nIG1\n")

    with pytest.raises(InputError, match=r"--sheet S: .* is not a workbook"):
        open_table(source, sheet="S")


# --- Snapshots ---------------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    return folder


class Terminal(io.BytesIO):
    def isatty(self) -> bool:
        return True


def test_a_snapshot_is_a_private_copy_the_run_reads_whatever_happens_to_the_input(
    tmp_path: Path, run_dir: Path
) -> None:
    source = tmp_path / "customers.CSV"
    source.write_text(f"AddressSid\n{SID1}\n{SID2}\n")
    old_umask = os.umask(0)
    try:
        snapshot = snapshot_input(source, run_dir, io.BytesIO())
    finally:
        os.umask(old_umask)
    source.write_text("AddressSid\n")  # truncated while the run goes on

    assert snapshot == run_dir / "input.csv"
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600
    assert read(open_table(snapshot)) == [(2, [SID1]), (3, [SID2])]
    assert sorted(p.name for p in run_dir.iterdir()) == ["input.csv"]


@pytest.mark.parametrize(
    ("content", "name"),
    [
        (f"AddressSid\n{SID1}\n".encode(), "input.csv"),
        (None, "input.xlsx"),
    ],
    ids=["csv", "xlsx"],
)
def test_standard_input(tmp_path: Path, run_dir: Path, content: bytes | None, name: str) -> None:
    if content is None:
        content = write_xlsx(tmp_path / "x.xlsx", {"S": [["AddressSid"], [SID1]]}).read_bytes()

    snapshot = snapshot_input("-", run_dir, io.BytesIO(content))

    assert snapshot.name == name
    assert read(open_table(snapshot)) == [(2, [SID1])]


def test_standard_input_from_a_terminal_is_refused(run_dir: Path) -> None:
    with pytest.raises(InputError, match="standard input is a terminal; pipe the file in"):
        snapshot_input("-", run_dir, Terminal())


def test_a_fifo_with_a_writer(tmp_path: Path, run_dir: Path) -> None:
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("w") as stream:
            stream.write(f"AddressSid\n{SID1}\n")

    writer = threading.Thread(target=write)
    writer.start()
    snapshot = snapshot_input(fifo, run_dir, io.BytesIO())
    writer.join()

    assert snapshot.name == "input.csv"
    assert read(open_table(snapshot)) == [(2, [SID1])]


def test_a_fifo_nobody_writes_to_is_refused_without_hanging(
    tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(table_module, "FIFO_WRITER_WAIT_SECONDS", 0.05)
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)

    with pytest.raises(InputError, match=r"a FIFO that nothing wrote to within 0\.05 s"):
        snapshot_input(fifo, run_dir, io.BytesIO())


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_devices_are_refused_before_reading(run_dir: Path, device: str) -> None:
    with pytest.raises(InputError, match=f"^{device}: is a device, not a file"):
        snapshot_input(device, run_dir, io.BytesIO())
    assert list(run_dir.iterdir()) == []


def test_a_socket_is_refused(tmp_path: Path, run_dir: Path) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(InputError, match="is a socket, not a file"):
            snapshot_input(path, run_dir, io.BytesIO())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.csv", "no such file"),
        (lambda p: p, "is a directory, not a CSV file or workbook"),
    ],
    ids=["missing", "directory"],
)
def test_no_input_to_copy(
    tmp_path: Path, run_dir: Path, make: Callable[[Path], Path], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        snapshot_input(make(tmp_path), run_dir, io.BytesIO())


def test_inputs_past_the_cap_are_refused(
    tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(table_module, "MAX_INPUT_BYTES", 100)
    source = tmp_path / "in.csv"
    source.write_text("AddressSid\n" + f"{SID1}\n" * 10)

    with pytest.raises(InputError, match=r"in.csv: 361 bytes; inputs are read up to"):
        snapshot_input(source, run_dir, io.BytesIO())
    with pytest.raises(InputError, match="standard input: more than 100 bytes"):
        snapshot_input("-", run_dir, io.BytesIO(source.read_bytes()))
    assert list(run_dir.iterdir()) == []


NUL_LINE = f"{SID1},a\x00b\n"


@pytest.mark.parametrize(
    ("lines_before", "encoding"),
    [(0, "utf-8"), (40_000, "utf-8"), (0, "utf-16"), (40_000, "utf-16")],
    ids=["first-line-utf8", "past-2mb-utf8", "first-line-utf16", "past-2mb-utf16"],
)
def test_a_nul_refuses_the_file_wherever_it_falls(
    tmp_path: Path, lines_before: int, encoding: str
) -> None:
    # One rule: a NUL in the first bytes (the sample) or megabytes later is the same verdict.
    filler = f"{SID2},{'x' * 60}\n" * lines_before
    source = tmp_path / "in.csv"
    source.write_bytes(f"AddressSid,Name\n{filler}{NUL_LINE}{SID2},after\n".encode(encoding))
    assert source.stat().st_size > 2_000_000 or not lines_before

    with pytest.raises(InputError, match=r"^in\.csv: looks like a binary file") as raised:
        read(open_table(source, name="in.csv", looks_like_header=names_address))

    assert f"line {lines_before + 2}" in str(raised.value)
