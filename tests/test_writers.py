"""Result tables: real CSV and xlsx files, read back as a person's tools read them."""

from __future__ import annotations

import csv
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest
from openpyxl.worksheet.worksheet import Worksheet

from provisioner.cells import unescape_cell
from provisioner.writers import (
    MAX_WIDTH,
    MIN_WIDTH,
    WIDTH_SAMPLE_ROWS,
    CsvWriter,
    TableWriter,
    XlsxWriter,
    column_widths,
    write_atomically,
)

HEADERS = ["customer_id", "Note", "status", "row_key"]
# Values spreadsheets run, convert or mangle, with a key column that a spreadsheet would change.
ROWS = [
    ["00123", "=1+2", "failed", "00123"],
    ["1234567890123456", '=HYPERLINK("http://x","y")', "invalid", "1234567890123456"],
    ["C001", "+15551234567", "failed", "C001"],
    ["2026-11-24", "#N/A", "failed", "2026-11-24"],
    ["1e5", "'quoted already", "failed", "1e5"],
    ["'00124", "''=two quotes", "failed", "'00124"],
    ["TRUE", "", "failed", "TRUE"],
    ["K7", "line one\nline two, with a comma", "failed", "K7"],
    ["K8", "日本語のメモ", "failed", "K8"],
]
KEYS = ("customer_id", "row_key")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Umask 0: a file made with the default mode would be readable by everyone."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def read_csv_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as stream:
        return list(csv.reader(stream))


def sheet_of(path: Path) -> Worksheet:
    worksheet = openpyxl.load_workbook(path).active
    assert isinstance(worksheet, Worksheet)
    return worksheet


def write_xlsx(path: Path, rows: list[list[str]], headers: list[str] = HEADERS) -> Path:
    with XlsxWriter(path, headers) as writer:
        for row in rows:
            writer.write(row)
    return path


# ---- CSV ---------------------------------------------------------------------------------


def test_csv_guards_formulas_everywhere_and_keys_in_key_columns(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    with CsvWriter(path, HEADERS, key_columns=KEYS) as writer:
        for row in ROWS:
            writer.write(row)

    assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # a BOM: Excel reads UTF-8
    written = read_csv_rows(path)
    assert written[0] == HEADERS
    assert [row[0] for row in written[1:]] == [
        "'00123",
        "'1234567890123456",
        "C001",
        "'2026-11-24",
        "'1e5",
        "''00124",
        "'TRUE",
        "K7",
        "K8",
    ]
    assert [row[1] for row in written[1:4]] == [
        "'=1+2",
        '\'=HYPERLINK("http://x","y")',
        "'+15551234567",
    ]
    assert [row[3] for row in written[1:]] == [row[0] for row in written[1:]]
    assert [[unescape_cell(cell) for cell in row] for row in written[1:]] == ROWS


def test_csv_rows_are_readable_before_close(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    writer = CsvWriter(path, HEADERS)
    writer.write(ROWS[2])
    writer.flush()
    assert read_csv_rows(path) == [HEADERS, ["C001", "'+15551234567", "failed", "C001"]]
    writer.close()


@pytest.mark.usefixtures("open_umask")
def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = tmp_path / "old.csv"
    old.write_text("x")
    old.chmod(0o644)

    with CsvWriter(tmp_path / "results.csv", HEADERS):
        pass
    with CsvWriter(old, HEADERS):
        pass
    write_atomically(tmp_path / "summary.json", "{}\n")
    write_xlsx(tmp_path / "errors.xlsx", ROWS)

    for name in ("results.csv", "old.csv", "summary.json", "errors.xlsx"):
        assert mode(tmp_path / name) == 0o600, name


def test_write_atomically_replaces_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text("old")

    write_atomically(path, '{"rows": 3}\n')

    assert path.read_text() == '{"rows": 3}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


# ---- xlsx --------------------------------------------------------------------------------


def test_xlsx_cells_are_all_text_and_read_back_exactly(tmp_path: Path) -> None:
    sheet = sheet_of(write_xlsx(tmp_path / "errors.xlsx", ROWS))

    values = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert values[0] == HEADERS
    read = [["" if value is None else value for value in row] for row in values[1:]]
    # Only a value that starts with a quote gets a second one; `=1+2` and `00123` are as written.
    assert read[0] == ROWS[0]
    assert [[unescape_cell(str(cell)) for cell in row] for row in read] == ROWS
    for row in sheet.iter_rows():
        for cell in row:
            assert cell.value is None or cell.data_type == "s", cell.coordinate


def test_xlsx_header_is_bold_and_frozen_and_value_like_cells_have_text_format(
    tmp_path: Path,
) -> None:
    sheet = sheet_of(write_xlsx(tmp_path / "results.xlsx", ROWS))

    assert sheet.freeze_panes == "A2"
    assert all(cell.font.b for cell in sheet[1])
    assert sheet["A2"].number_format == "@"  # 00123: retyped by a person, it stays text
    assert sheet["B2"].number_format == "@"  # =1+2
    assert sheet["A4"].number_format == "General"  # C001: nothing to lose
    assert sheet.column_dimensions["C"].number_format == "@"  # cells a person fills in later


def test_xlsx_widths_come_from_header_and_first_rows_and_are_capped(tmp_path: Path) -> None:
    rows = [["x", "y" * 200, "", "日本語"]]
    sheet = sheet_of(
        write_xlsx(tmp_path / "results.xlsx", rows, ["a", "Note", "a long header", "k"])
    )

    widths = [sheet.column_dimensions[letter].width for letter in "ABCD"]
    assert widths == [MIN_WIDTH, MAX_WIDTH, len("a long header") + 3, 8]


def test_column_widths_use_the_longest_line() -> None:
    assert column_widths(["h"], [["short\n" + "x" * 20]]) == [22]


def test_xlsx_streams_past_the_sampled_rows_in_order(tmp_path: Path) -> None:
    count = WIDTH_SAMPLE_ROWS * 2 + 7
    rows = [[f"{n:05d}", f"note {n}", "failed", f"{n:05d}"] for n in range(count)]
    sheet = sheet_of(write_xlsx(tmp_path / "results.xlsx", rows))

    assert [[cell.value for cell in row] for row in sheet.iter_rows(min_row=2)] == rows


def test_xlsx_with_no_rows_has_its_header(tmp_path: Path) -> None:
    sheet = sheet_of(write_xlsx(tmp_path / "errors.xlsx", []))

    assert [[cell.value for cell in row] for row in sheet.iter_rows()] == [HEADERS]


def test_xlsx_appears_only_when_closed_under_its_name(tmp_path: Path) -> None:
    path = tmp_path / "results.xlsx"
    writer = XlsxWriter(path, HEADERS)
    writer.write(ROWS[0])
    writer.flush()
    assert not path.exists()

    writer.close()
    writer.close()  # twice is harmless

    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.xlsx"]


def test_xlsx_keeps_characters_xml_cannot_hold_as_excel_escapes(tmp_path: Path) -> None:
    """As Excel writes them (`_x0000_`), so that the reader (calamine) gets them back: a row
    refused for them is refused again when errors.xlsx is fed back."""
    from python_calamine import CalamineWorkbook

    cells = ["a\x00b", "c\x0bd", "_x0041_", "k"]
    path = write_xlsx(tmp_path / "errors.xlsx", [cells])

    assert sheet_of(path)[2][0].value == "a_x0000_b"
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
    assert rows[1] == cells


def test_xlsx_replaces_the_noncharacters_xml_cannot_hold(tmp_path: Path) -> None:
    sheet = sheet_of(write_xlsx(tmp_path / "errors.xlsx", [["a\ufffeb", "c\uffffd", "x", "k"]]))

    assert [cell.value for cell in sheet[2]] == ["a\ufffdb", "c\ufffdd", "x", "k"]


def test_errors_xlsx_edited_by_a_person_reads_back_the_same(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "errors.xlsx", ROWS)
    workbook = openpyxl.load_workbook(path)
    sheet = workbook.active
    assert isinstance(sheet, Worksheet)
    sheet["C3"] = "fixed"  # a person types over one cell and saves
    workbook.save(path)

    reread = openpyxl.load_workbook(path, read_only=True)
    values = [list(row) for row in reread.active.iter_rows(values_only=True)]  # type: ignore[union-attr]
    reread.close()
    expected = [list(row) for row in ROWS]
    expected[1][2] = "fixed"
    assert [[unescape_cell(v or "") for v in row] for row in values[1:]] == expected
    assert all(isinstance(v, str) for row in values for v in row if v is not None)


def test_both_writers_are_table_writers(tmp_path: Path) -> None:
    writers: list[TableWriter] = [
        CsvWriter(tmp_path / "results.csv", HEADERS, key_columns=KEYS),
        XlsxWriter(tmp_path / "results.xlsx", HEADERS),
    ]
    for writer in writers:
        writer.write(ROWS[0])
        writer.flush()
        writer.close()

    assert [unescape_cell(cell) for cell in read_csv_rows(writers[0].path)[1]] == ROWS[0]
    assert [cell.value for cell in sheet_of(writers[1].path)[2]] == ROWS[0]


# ---- through LibreOffice ---------------------------------------------------------------------

SOFFICE = shutil.which("soffice")


def resave(path: Path, target: str, tmp_path: Path) -> Path:
    """Open `path` in LibreOffice and save it again as `target` (csv or xlsx), as a person would."""
    assert SOFFICE is not None
    out = tmp_path / "resaved"
    subprocess.run(
        [
            SOFFICE,
            f"-env:UserInstallation=file://{tmp_path / 'profile'}",
            "--headless",
            "--convert-to",
            target,
            "--outdir",
            str(out),
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out / f"{path.stem}.{target}"


@pytest.mark.slow
@pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (soffice) is not installed here")
def test_keys_survive_libreoffice_opening_and_saving_our_files(tmp_path: Path) -> None:
    csv_path = tmp_path / "errors.csv"
    with CsvWriter(csv_path, HEADERS, key_columns=KEYS) as writer:
        for row in ROWS:
            writer.write(row)
    xlsx_path = write_xlsx(tmp_path / "errors.xlsx", ROWS)

    resaved_csv = resave(csv_path, "csv", tmp_path)
    resaved_xlsx = resave(xlsx_path, "xlsx", tmp_path)

    with resaved_csv.open(encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.reader(stream))[1:]
    keys = [(unescape_cell(row[0]), unescape_cell(row[3])) for row in rows]
    assert keys == [(row[0], row[3]) for row in ROWS]
    sheet = openpyxl.load_workbook(resaved_xlsx).active
    assert isinstance(sheet, Worksheet)
    values = [
        ["" if c.value is None else c.value for c in row] for row in sheet.iter_rows(min_row=2)
    ]
    assert [[unescape_cell(str(v)) for v in row] for row in values] == ROWS
