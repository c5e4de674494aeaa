"""The operators' loop in their own tools (issue 12), through the CLI.

Every workbook format in and workbooks out; errors.xlsx edited as a person would and fed back;
results.csv saved again by a spreadsheet that dropped leading zeros; headers as people write
them; row numbers that match the sheet, through fed-back files too.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from openpyxl.worksheet.worksheet import Worksheet

from provisioner.cells import unescape_cell
from provisioner.result_columns import ERROR_COLUMNS, RESULT_COLUMNS
from tests.conftest import Cli, read_csv, read_header, sid, without_derived_identity
from tests.test_table import HEADERS, SID1, SID2, WORKBOOKS
from tests.test_writers import resave

SOFFICE = shutil.which("soffice")


@pytest.fixture(autouse=True)
def _working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No provisioner.toml from the machine's working directory applies to these runs."""
    monkeypatch.chdir(tmp_path)


def sheet_of(path: Path) -> Worksheet:
    sheet = openpyxl.load_workbook(path).active
    assert isinstance(sheet, Worksheet)
    return sheet


def cells_of(sheet: Worksheet) -> list[list[object]]:
    """Every row of a sheet as results.csv holds it (an empty cell is '')."""
    return [["" if cell.value is None else cell.value for cell in row] for row in sheet.iter_rows()]


def csv_cells(path: Path) -> list[list[str]]:
    """Every row of one of our CSVs, with the spreadsheet guards taken off."""
    with path.open(encoding="utf-8-sig", newline="") as stream:
        return [[unescape_cell(cell) for cell in row] for row in csv.reader(stream)]


def write_sheet(path: Path, rows: Sequence[Sequence[Any]]) -> Path:
    """An xlsx of one sheet, as a person types it (row 1 first; [] is a blank row)."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert isinstance(sheet, Worksheet)
    for row in rows:
        sheet.append(list(row))
    workbook.save(path)
    return path


def column(header: Sequence[Any], name: str) -> int:
    return list(header).index(name) + 1  # openpyxl counts columns from 1


def sent(provisioner: Cli, since: int = 0) -> list[dict[str, str]]:
    """What the web chats created after the first `since` were created with, by AddressSid."""
    created = provisioner.emulator.created[since:]
    return sorted((dict(chat.parameters) for chat in created), key=lambda p: p["AddressSid"])


# --- every format in, workbooks out -------------------------------------------------------------


@pytest.mark.parametrize("suffix", sorted(WORKBOOKS))
def test_every_format_creates_every_row_and_writes_text_workbooks(
    provisioner: Cli, tmp_path: Path, suffix: str
) -> None:
    write, expected = WORKBOOKS[suffix]
    source = write(tmp_path / f"customers.{suffix}")

    provisioner("create", str(source), "--run-id", "r1")

    assert [chat["AddressSid"] for chat in sent(provisioner)] == [SID1, SID2]
    run = provisioner.run_dir("r1")
    rows = csv_cells(run / "results.csv")
    assert rows[0] == [*HEADERS, *RESULT_COLUMNS]
    assert [row[: len(HEADERS)] for row in rows[1:]] == [cells for _, cells in expected]
    results = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    # `row` is the row the sheet shows (a title and blank rows above, a blank row between).
    assert [(r["row"], r["source_row"], r["status"]) for r in results] == [
        ("4", "4", "created"),
        ("6", "6", "created"),
    ]
    for name, csv_name in (("results.xlsx", "results.csv"), ("errors.xlsx", "errors.csv")):
        sheet = sheet_of(run / name)
        assert sheet.freeze_panes == "A2"
        assert cells_of(sheet) == csv_cells(run / csv_name)
        typed = {c.data_type for row in sheet.iter_rows() for c in row if c.value is not None}
        assert typed == {"s"}  # every value a string: nothing a number, a date or a formula
    assert cells_of(sheet_of(run / "errors.xlsx")) == [[*HEADERS, *ERROR_COLUMNS]]


# --- errors.xlsx, edited as a person would, fed back --------------------------------------------

SHEET_HEADER = ["customer_id", "AddressSid", "Customer Name", "Email"]
SHEET_ROWS: list[list[Any]] = [
    ["Onboarding, November"],  # row 1: a title
    [],  # row 2
    SHEET_HEADER,  # row 3
    ["00123", sid(1), "Zoë", "zoe@example.com"],  # row 4: created
    ["00124", "IG-typo", "Ana", "ana@example.com"],  # row 5: invalid, fixed in errors.xlsx
    ["1234567890123456789", sid(3), "Bo", ""],  # row 6: created
    ["00126", "ig" + "7" * 32, "Cy", "cy@example.com"],  # row 7: invalid, left as it is
    ["00127", None, "Di", "di@example.com"],  # row 8: no AddressSid, filled in errors.xlsx
]
MAPPING = (
    "--column",
    "CustomerFriendlyName=Customer Name",
    "--column",
    "pre_engagement.email=Email",
)


def fix_address_sids(path: Path, fixes: dict[str, str]) -> None:
    """Open errors.xlsx, type the right AddressSid into the rows named by customer_id, save."""
    workbook = openpyxl.load_workbook(path)
    sheet = workbook.active
    assert isinstance(sheet, Worksheet)
    header = [cell.value for cell in sheet[1]]
    for row in range(2, sheet.max_row + 1):
        customer = str(sheet.cell(row, column(header, "customer_id")).value)
        if customer in fixes:
            sheet.cell(row, column(header, "AddressSid")).value = fixes.pop(customer)
    assert fixes == {}, "rows not found in errors.xlsx"
    workbook.save(path)


def first_run_with_errors(provisioner: Cli, tmp_path: Path) -> Path:
    """SHEET_ROWS run once: two rows created, three invalid; its errors.xlsx."""
    source = write_sheet(tmp_path / "onboarding.xlsx", SHEET_ROWS)
    provisioner("create", str(source), "--run-id", "r1", *MAPPING, expect=1)
    errors = provisioner.run_dir("r1") / "errors.xlsx"
    written = cells_of(sheet_of(errors))
    assert [row[:2] for row in written[1:]] == [
        ["00124", "IG-typo"],
        ["00126", "ig" + "7" * 32],
        ["00127", ""],
    ]
    return errors


FIXES = {"00124": sid(4), "00127": sid(8)}


def check_fed_back(provisioner: Cli, fed: Path) -> None:
    """Feeding the fixed errors file back sends the fixed rows only, and keeps pointing at the
    rows of the original sheet; the still broken row, fed back again, still does."""
    created_before = len(provisioner.emulator.created)

    provisioner("create", str(fed), "--run-id", "r2", *MAPPING, expect=1)

    assert sent(provisioner, created_before) == [
        {
            "AddressSid": sid(4),
            "CustomerFriendlyName": "Ana",
            "PreEngagementData": json.dumps({"email": "ana@example.com"}),
            "Identity": sent(provisioner, created_before)[0]["Identity"],
        },
        {
            "AddressSid": sid(8),
            "CustomerFriendlyName": "Di",
            "PreEngagementData": json.dumps({"email": "di@example.com"}),
            "Identity": sent(provisioner, created_before)[1]["Identity"],
        },
    ]
    rows = read_csv(provisioner.run_dir("r2") / "results.csv")
    assert [(r["row"], r["source_row"], r["row_key"], r["status"]) for r in rows] == [
        ("2", "5", "'00124", "created"),
        ("3", "7", "'00126", "invalid"),
        ("4", "8", "'00127", "created"),
    ]
    again = provisioner.run_dir("r2") / "errors.xlsx"
    provisioner("create", str(again), "--run-id", "r3", *MAPPING, expect=1)
    (last,) = read_csv(provisioner.run_dir("r3") / "results.csv")
    assert (last["row"], last["source_row"], last["status"]) == ("2", "7", "invalid")
    assert len(provisioner.emulator.created) == created_before + 2


def test_errors_xlsx_edited_and_fed_back_sends_only_the_fixed_rows(
    provisioner: Cli, tmp_path: Path
) -> None:
    errors = first_run_with_errors(provisioner, tmp_path)
    fed = tmp_path / "errors fixed.xlsx"
    shutil.copy(errors, fed)
    fix_address_sids(fed, dict(FIXES))

    check_fed_back(provisioner, fed)

    # The original sheet again: nothing new (the row fixed only in errors.xlsx stays invalid).
    created = len(provisioner.emulator.created)
    provisioner("create", str(tmp_path / "onboarding.xlsx"), "--run-id", "r4", *MAPPING, expect=1)
    assert len(provisioner.emulator.created) == created


@pytest.mark.slow
@pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (soffice) is not installed here")
def test_errors_xlsx_saved_again_by_libreoffice_feeds_back_as_well(
    provisioner: Cli, tmp_path: Path
) -> None:
    errors = first_run_with_errors(provisioner, tmp_path)
    edited = tmp_path / "edited" / "errors.xlsx"
    edited.parent.mkdir()
    shutil.copy(errors, edited)
    fix_address_sids(edited, dict(FIXES))

    fed = resave(edited, "xlsx", tmp_path)  # opened in LibreOffice and saved as xlsx

    assert fed != edited
    assert cells_of(sheet_of(fed))[1][0] == "00124"  # the key is still text
    check_fed_back(provisioner, fed)


# --- results.csv saved again by a spreadsheet ----------------------------------------------------

KEYED_HEADER = ["customer_id", "AddressSid", "CustomerFriendlyName"]
KEYED_ROWS = [
    ["00123", sid(1), "Zoë"],
    ["007", sid(2), "Renée"],
    ["1234567890123456789", sid(3), "Ana"],
    ["42", sid(4), "Bo"],
    ["C-9", sid(5), "Cy"],
]
SPREADSHEET_DIGITS = 15  # digits Excel keeps of a number; longer IDs are shown in scientific form


def as_excel_number(key: str) -> str:
    """What a spreadsheet that read `key` as a number writes back: `00123` -> `123`."""
    if not key.isdigit():
        return key
    if len(key) > SPREADSHEET_DIGITS:
        return f"{int(key):.5E}"  # Excel's General format: 1.23457E+18
    return str(int(key))


def keep_text(key: str) -> str:
    """LibreOffice keeps a CSV cell `'00123` as the text `'00123`, quote included."""
    return key


def resaved_by_a_spreadsheet(results: Path, key: Callable[[str], str]) -> Path:
    """results.csv opened and saved by a European Excel: Windows-1252, semicolons, CRLF, no
    BOM, and each key column passed through `key` (after its guard quote, which it may drop)."""
    with results.open(encoding="utf-8-sig", newline="") as stream:
        header, *rows = list(csv.reader(stream))
    keys = {header.index("customer_id"), header.index("row_key")}
    if key is not keep_text:
        rows = [
            [key(unescape_cell(cell)) if i in keys else cell for i, cell in enumerate(row)]
            for row in rows
        ]
    path = results.with_name("results resaved.csv")
    with path.open("w", encoding="cp1252", newline="") as stream:
        csv.writer(stream, delimiter=";", lineterminator="\r\n").writerows([header, *rows])
    return path


@pytest.mark.parametrize("key", [keep_text, as_excel_number], ids=["quote-kept", "zeros-dropped"])
def test_results_csv_saved_again_by_a_spreadsheet_creates_no_new_web_chat(
    provisioner: Cli, tmp_path: Path, key: Callable[[str], str]
) -> None:
    source = tmp_path / "in.csv"
    with source.open("w", encoding="utf-8", newline="") as stream:
        csv.writer(stream).writerows([KEYED_HEADER, *KEYED_ROWS])
    provisioner("create", str(source), "--run-id", "r1")
    fed = resaved_by_a_spreadsheet(provisioner.run_dir("r1") / "results.csv", key)
    assert "Zoë".encode("cp1252") in fed.read_bytes()

    changed = key is as_excel_number
    provisioner("create", str(fed), "--run-id", "r2", expect=1 if changed else 0)

    assert len(provisioner.emulator.created) == len(KEYED_ROWS)  # no new web chat
    rows = {
        r["CustomerFriendlyName"]: r for r in read_csv(provisioner.run_dir("r2") / "results.csv")
    }
    if not changed:
        assert {r["status"] for r in rows.values()} == {"existing"}
        return
    for original, _, name in KEYED_ROWS[:3]:
        row = rows[name]
        assert (row["status"], row["error_code"]) == ("invalid", "key_changed"), row
        assert unescape_cell(row["row_key"]) == as_excel_number(original)
        assert row["error_message"].startswith(
            f"row key {as_excel_number(original)!r} looks like {original!r} changed by a "
            "spreadsheet, which run r1 created; restore the original ID"
        ), row["error_message"]
    assert [rows[name]["status"] for _, _, name in KEYED_ROWS[3:]] == ["existing", "existing"]

    provisioner("create", str(fed), "--run-id", "r3", "--force")

    forced = {
        r["CustomerFriendlyName"]: r for r in read_csv(provisioner.run_dir("r3") / "results.csv")
    }
    assert {r["status"] for r in forced.values()} == {"created"}
    assert len(provisioner.emulator.created) == 2 * len(KEYED_ROWS)


# --- headers as people write them ---------------------------------------------------------------


def test_an_excel_sep_line_in_a_semicolon_csv(provisioner: Cli, tmp_path: Path) -> None:
    source = tmp_path / "excel.csv"
    lines = ["sep=;", "customer_id;AddressSid;Customer Name", f"00123;{sid(1)};Zoë Ångström"]
    source.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))

    provisioner("create", str(source), "--run-id", "r1")

    (row,) = read_csv(provisioner.run_dir("r1") / "results.csv")
    # Excel hides the sep line: the header is the sheet's row 1, the customer its row 2.
    assert (row["row"], row["status"], row["Customer Name"]) == ("2", "created", "Zoë Ångström")
    assert unescape_cell(row["customer_id"]) == "00123"
    assert read_header(provisioner.run_dir("r1") / "results.csv")[:3] == [
        "customer_id",
        "AddressSid",
        "Customer Name",
    ]


def test_title_and_notes_rows_above_the_header_are_skipped(
    provisioner: Cli, tmp_path: Path
) -> None:
    rows: list[list[Any]] = [
        ["Onboarding"],
        ["Prepared by ops; do not edit the IDs"],
        [],
        ["customer_id", "AddressSid"],
        ["C1", sid(1)],
        ["C2", sid(2)],
    ]
    source = write_sheet(tmp_path / "titled.xlsx", rows)

    provisioner("create", str(source), "--run-id", "r1")

    results = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [(r["customer_id"], r["row"], r["status"]) for r in results] == [
        ("C1", "5", "created"),
        ("C2", "6", "created"),
    ]


def test_header_row_says_which_row_is_the_header(provisioner: Cli, tmp_path: Path) -> None:
    rows: list[list[Any]] = [
        ["AddressSid", "IG and 32 hex digits, from the Flex Console"],  # notes naming the column
        [],
        ["customer_id", "AddressSid"],
        ["C1", sid(1)],
        ["C2", sid(2)],
    ]
    source = write_sheet(tmp_path / "noted.xlsx", rows)

    provisioner("create", str(source), "--run-id", "r1", "--header-row", "3")

    results = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [(r["customer_id"], r["row"], r["status"]) for r in results] == [
        ("C1", "4", "created"),
        ("C2", "5", "created"),
    ]
    assert [chat["AddressSid"] for chat in sent(provisioner)] == [sid(1), sid(2)]


def test_a_blank_header_over_a_filled_column_is_a_column(provisioner: Cli, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(f"customer_id,AddressSid,,Notes\nC1,{sid(1)},call first,VIP\n")

    result = provisioner("create", str(source), "--run-id", "r1")

    (row,) = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert (row["Column C"], row["Notes"], row["status"]) == ("call first", "VIP", "created")
    assert "column carried to the outputs only, not sent: Column C, Notes" in result.stderr


TRAILING_HEADER = ["AddressSid", "", "CustomerFriendlyName", ""]  # blank in B and at the end
TRAILING_ROWS = [
    [sid(1), "b1", "Ana", "d1"],
    ["IG-typo", "b2", "Bo", "d2"],  # invalid: fixed in the errors file, fed back
    [sid(3), "b3", "Cy", "d3"],
]
CARRIED = ["AddressSid", "Column B", "CustomerFriendlyName", "Column D"]


def retype_address(path: Path, wrong: str, right: str) -> None:
    """Fix one AddressSid in an errors file, as a person would in a text editor or a sheet."""
    if path.suffix == ".csv":
        path.write_text(path.read_text(encoding="utf-8-sig").replace(wrong, right), "utf-8-sig")
        return
    workbook = openpyxl.load_workbook(path)
    sheet = workbook.active
    assert isinstance(sheet, Worksheet)
    (cell,) = [cell for row in sheet.iter_rows() for cell in row if cell.value == wrong]
    cell.value = right
    workbook.save(path)


@pytest.mark.parametrize("fed_back", ["errors.csv", "errors.xlsx"])
@pytest.mark.parametrize("suffix", ["csv", "xlsx"])
def test_a_trailing_blank_header_over_data_is_carried_through_and_fed_back(
    provisioner: Cli, tmp_path: Path, suffix: str, fed_back: str
) -> None:
    source = tmp_path / f"in.{suffix}"
    if suffix == "csv":
        source.write_text("\n".join(",".join(row) for row in [TRAILING_HEADER, *TRAILING_ROWS]))
    else:
        write_sheet(
            source, [[cell or None for cell in row] for row in [TRAILING_HEADER, *TRAILING_ROWS]]
        )

    provisioner("create", str(source), "--run-id", "r1", "--xlsx", expect=1)

    run = provisioner.run_dir("r1")
    results = csv_cells(run / "results.csv")
    assert results[0] == [*CARRIED, *RESULT_COLUMNS]
    assert [row[:6] for row in results[1:]] == [
        [*TRAILING_ROWS[0], "2", "created"],
        [*TRAILING_ROWS[1], "3", "invalid"],
        [*TRAILING_ROWS[2], "4", "created"],
    ]
    key = results[2][RESULT_COLUMNS.index("row_key") + len(CARRIED)]
    assert csv_cells(run / "errors.csv") == [
        [*CARRIED, *ERROR_COLUMNS],
        [
            *TRAILING_ROWS[1],
            "3",
            "invalid",
            "invalid_address_sid",
            "AddressSid 'IG-typo' is not IG followed by 32 hex digits",
            key,
            "3",
        ],
    ]
    for name in ("results", "errors"):
        assert cells_of(sheet_of(run / f"{name}.xlsx")) == csv_cells(run / f"{name}.csv")

    fed = tmp_path / f"fixed {fed_back}"
    shutil.copy(run / fed_back, fed)
    retype_address(fed, "IG-typo", sid(2))
    created_before = len(provisioner.emulator.created)

    provisioner("create", str(fed), "--run-id", "r2")

    assert [without_derived_identity(p) for p in sent(provisioner, created_before)] == [
        {"AddressSid": sid(2), "CustomerFriendlyName": "Bo"}
    ]
    again = csv_cells(provisioner.run_dir("r2") / "results.csv")
    assert again[0] == [*CARRIED, *RESULT_COLUMNS]  # the tool's columns dropped, D kept
    (row,) = [dict(zip(again[0], cells, strict=True)) for cells in again[1:]]
    assert [row[name] for name in CARRIED] == [sid(2), "b2", "Bo", "d2"]
    assert (row["row"], row["source_row"], row["row_key"], row["status"]) == (
        "2",
        "3",
        key,
        "created",
    )


def test_column_maps_pre_engagement_keys_into_pre_engagement_data(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "Address,E-mail address,Topic\n"
        f"{sid(1)},ana@example.com,billing\n"
        f"{sid(2)},bo@example.com,\n"
    )

    provisioner(
        "create",
        str(source),
        "--run-id",
        "r1",
        "--column",
        "AddressSid=Address",
        "--column",
        "pre_engagement.email=E-mail address",
        "--column",
        "pre_engagement.topic=Topic",
    )

    assert [chat["PreEngagementData"] for chat in sent(provisioner)] == [
        json.dumps({"email": "ana@example.com", "topic": "billing"}),
        json.dumps({"email": "bo@example.com"}),  # an empty cell is left out
    ]


def test_a_column_that_matches_no_header_names_the_closest(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_sheet(tmp_path / "in.xlsx", [SHEET_HEADER, SHEET_ROWS[3]])

    result = provisioner(
        "create", str(source), "--column", "CustomerFriendlyName=Custmer Nme", expect=2
    )

    (error,) = [line for line in result.stderr.splitlines() if "error: " in line]
    error = error[error.index("error: ") :]  # a timestamp may come first, when not on a terminal
    assert error == (
        "error: --column CustomerFriendlyName=Custmer Nme: no such header "
        "(closest: Customer Name, customer_id); "
        "found: customer_id, AddressSid, Customer Name, Email"
    )
    assert provisioner.emulator.requests == 0


def test_the_dry_run_shows_the_column_plan_and_the_rows_as_they_will_be_sent(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_sheet(tmp_path / "in.xlsx", SHEET_ROWS)

    result = provisioner(
        "create",
        str(source),
        "--run-id",
        "dry",
        "--dry-run",
        "--column",
        "pre_engagement.email=Email",
        expect=1,
    )

    lines = [line.split(" ", 3)[3] for line in result.stderr.splitlines()]
    assert lines[1:5] == [
        "column 'AddressSid' -> AddressSid",
        "column 'Email' -> PreEngagementData.email",
        "column 'customer_id' -> the row key (not sent)",
        "column carried to the outputs only, not sent: Customer Name",  # visible before sending
    ]
    previews = [line for line in lines if line.startswith("would send")]
    assert [line.rsplit(" Identity=", 1)[0] for line in previews] == [
        f"would send row 4: AddressSid='{sid(1)}' "
        'PreEngagementData=\'{"email": "zoe@example.com"}\'',
        f"would send row 6: AddressSid='{sid(3)}'",
    ]
    assert provisioner.emulator.requests == 0


def test_xlsx_asks_for_workbooks_with_a_csv_input(provisioner: Cli, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    with source.open("w", encoding="utf-8", newline="") as stream:
        csv.writer(stream).writerows([KEYED_HEADER, KEYED_ROWS[0], ["00200", "IGbad", "Bo"]])

    provisioner("create", str(source), "--run-id", "r1", "--xlsx", expect=1)

    run = provisioner.run_dir("r1")
    for name in ("results", "errors"):
        assert cells_of(sheet_of(run / f"{name}.xlsx")) == csv_cells(run / f"{name}.csv")
    assert cells_of(sheet_of(run / "errors.xlsx"))[1][0] == "00200"  # text, zeros and all
