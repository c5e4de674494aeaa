"""workbooks.py: what a file is by its content, the zip caps, and cells as the sheet shows them.

Real files throughout: workbooks written by openpyxl, zips by zipfile. The whole path from a
workbook to results is in test_table.py and test_workbook_loop.py; here the module's own parts.
"""

from __future__ import annotations

import zipfile
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openpyxl import Workbook

from provisioner.errors import InputError
from provisioner.workbooks import (
    MAX_ZIP_ENTRIES,
    OLE2_MAGIC,
    RATIO_FLOOR_BYTES,
    cell_text,
    check_zip,
    column_letter,
    detect_format,
    read_sheet,
)

SAMPLE = 8  # bytes of a file's start that tell a zip or an OLE2 file from text
EXCEL_COLUMNS = 16_384  # columns in an Excel sheet: A to XFD


def sniffed(path: Path) -> str | None:
    """The format detect_format gives `path`, from its first bytes as the reader passes them."""
    return detect_format(path, path.read_bytes()[:SAMPLE], path.name)


def workbook(path: Path, rows: list[list[object]]) -> Path:
    """An .xlsx with one sheet holding `rows`."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for values in rows:
        sheet.append(values)
    book.save(path)
    return path


# ---------------------------------------------------------------- what a file is


def test_an_xlsx_is_told_by_its_content_whatever_its_name(tmp_path: Path) -> None:
    source = workbook(tmp_path / "customers.csv", [["AddressSid"], ["IG1"]])
    assert sniffed(source) == "xlsx"


def test_text_is_no_workbook(tmp_path: Path) -> None:
    source = tmp_path / "in.xlsx"
    source.write_text("AddressSid\nIG1\n")
    assert sniffed(source) is None


def test_a_zip_that_is_no_workbook_is_refused_naming_the_file(tmp_path: Path) -> None:
    source = tmp_path / "in.xlsx"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("readme.txt", "hello")

    with pytest.raises(InputError) as raised:
        sniffed(source)

    assert str(raised.value).startswith("in.xlsx:")


def test_an_old_office_file_without_a_workbook_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.xls"
    source.write_bytes(OLE2_MAGIC + bytes(1024))

    with pytest.raises(InputError) as raised:
        sniffed(source)

    assert str(raised.value).startswith("in.xls:")


def test_an_encrypted_workbook_is_refused_as_password_protected(tmp_path: Path) -> None:
    source = tmp_path / "in.xlsx"
    source.write_bytes(OLE2_MAGIC + bytes(504) + "EncryptedPackage".encode("utf-16-le"))

    with pytest.raises(InputError) as raised:
        sniffed(source)

    assert "password" in str(raised.value)


# ---------------------------------------------------------------- zip caps


def test_a_zip_of_too_many_parts_is_refused_before_it_is_read(tmp_path: Path) -> None:
    source = tmp_path / "in.xlsx"
    with zipfile.ZipFile(source, "w") as archive:
        for number in range(MAX_ZIP_ENTRIES + 1):
            archive.writestr(f"p{number}", b"")

    with pytest.raises(InputError) as raised:
        check_zip(source, "in.xlsx")

    assert f"{MAX_ZIP_ENTRIES + 1:,}" in str(raised.value)  # the count found is named


def test_a_part_that_inflates_past_the_ratio_is_refused_naming_it(tmp_path: Path) -> None:
    source = tmp_path / "in.xlsx"
    with zipfile.ZipFile(source, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", bytes(4 * RATIO_FLOOR_BYTES))

    with pytest.raises(InputError) as raised:
        check_zip(source, "in.xlsx")

    assert "xl/worksheets/sheet1.xml" in str(raised.value)


def test_a_real_workbook_passes_the_caps(tmp_path: Path) -> None:
    check_zip(workbook(tmp_path / "in.xlsx", [["a"]] * 100), "in.xlsx")


# ---------------------------------------------------------------- cells as the sheet shows them


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (float("nan"), ""),  # pandas' empty cell
        (True, "TRUE"),
        (False, "FALSE"),
        (5, "5"),
        (5.0, "5"),
        (1.5, "1.5"),
        (-0.25, "-0.25"),
        (10**16, "1e+16"),
        (datetime(2026, 11, 25), "2026-11-25"),
        (datetime(2026, 11, 25, 10, 30), "2026-11-25T10:30:00"),
        (date(2026, 11, 25), "2026-11-25"),
        (time(9, 5), "09:05:00"),
        (timedelta(hours=26, minutes=3, seconds=4), "26:03:04"),
        (timedelta(seconds=-90), "-0:01:30"),
        ("IG0001", "IG0001"),
    ],
)
def test_a_cell_is_the_text_a_person_sees(value: object, text: str) -> None:
    assert cell_text(value) == text


@pytest.mark.parametrize(
    ("index", "letters"),
    [(0, "A"), (25, "Z"), (26, "AA"), (51, "AZ"), (701, "ZZ"), (702, "AAA"), (16_383, "XFD")],
)
def test_column_letters(index: int, letters: str) -> None:
    assert column_letter(index) == letters


@given(st.integers(0, EXCEL_COLUMNS - 2))
def test_column_letters_are_distinct_and_in_spreadsheet_order(index: int) -> None:
    here, after = column_letter(index), column_letter(index + 1)
    assert here != after
    assert (len(here), here) < (len(after), after)
    assert here.isascii()
    assert here.isupper()


def test_number_formats_show_as_the_sheet_shows_them(tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["zip", "amount", "share", "plain"])
    sheet.append([123, 1234.5, 0.25, 7.0])
    for column, number_format in (("A", "00000"), ("B", "#,##0.00"), ("C", "0%")):
        sheet[f"{column}2"].number_format = number_format
    source = tmp_path / "in.xlsx"
    book.save(source)

    read = read_sheet(source, "xlsx", None, "in.xlsx")

    assert list(read.rows()) == [
        (1, ["zip", "amount", "share", "plain"]),
        (2, ["00123", "1,234.50", "25%", "7"]),
    ]


def test_the_first_visible_sheet_is_read_and_hidden_rows_are_counted(tmp_path: Path) -> None:
    book = Workbook()
    hidden = book.active
    assert hidden is not None
    hidden.title = "Old"
    hidden.sheet_state = "hidden"
    hidden.append(["not this one"])
    current = book.create_sheet("Current")
    for values in (["AddressSid"], ["IG1"], ["IG2"], ["IG3"]):
        current.append(values)
    current.row_dimensions[3].hidden = True
    source = tmp_path / "in.xlsx"
    book.save(source)

    read = read_sheet(source, "xlsx", None, "in.xlsx")

    assert (read.name, read.hidden_sheets) == ("Current", ("Old",))
    assert read.height == 4
    assert 3 in read.hidden_rows
    assert read.hidden_data_rows(after_row=1) == (3,)


def test_a_sheet_asked_for_that_is_not_there_names_the_ones_that_are(tmp_path: Path) -> None:
    source = workbook(tmp_path / "in.xlsx", [["a"]])

    with pytest.raises(InputError) as raised:
        read_sheet(source, "xlsx", "Customers", "in.xlsx")

    message = str(raised.value)
    assert "--sheet" in message
    assert "Customers" in message
    assert "Sheet" in message  # openpyxl's one sheet, by its name
