"""A hostile pass over keys and fed-back files: cells a person or another program put where the
tool's own columns are. The real CLI against the emulator on loopback, real files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import CUSTOMER_HEADER, Cli, customers, read_csv, sid, write_csv
from tests.test_table import rewrite_part, write_xlsx


@pytest.mark.parametrize(
    "cell",
    ["²", "٣", "𝟗", "9" * 5000, " 7", "-3", "1e3", "0x10"],
    ids=["superscript", "arabic-indic", "math-digit", "5000-digits", "space", "negative",
         "exponent", "hex"],
)  # fmt: skip
def test_a_fed_back_source_row_that_is_not_a_row_number_is_not_an_internal_error(
    provisioner: Cli, tmp_path: Path, cell: str
) -> None:
    """errors.csv edited by hand (or by a spreadsheet) so that source_row holds digits
    Python's int() refuses, though str.isdigit() takes them: the row is read, never exit 4."""
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    provisioner("create", str(source), "--run-id", "plan", "--dry-run")
    planned = provisioner.run_dir("plan") / "errors.csv"
    rows = read_csv(planned)
    assert rows
    assert "source_row" in rows[0]
    edited = tmp_path / "edited.csv"
    with edited.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{**row, "source_row": cell} for row in rows])

    provisioner("create", str(edited), "--run-id", "r1")

    found = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [row["status"] for row in found] == ["created", "created"]
    assert all(row["source_row"].isascii() and row["source_row"].isdigit() for row in found)
    assert len(provisioner.emulator.created) == 2


def test_errors_csv_of_a_workbook_with_a_nul_in_a_cell_can_be_rerun(
    provisioner: Cli, tmp_path: Path
) -> None:
    """A workbook cell holds a NUL (`_x0000_`, as Excel stores control characters): its row is
    not_text, as the README says. The errors.csv the run writes, and tells the operator to
    rerun, must be readable by the tool: a raw NUL makes it refuse the whole file as binary."""
    placeholder = "NULHERE"
    workbook = write_xlsx(
        tmp_path / "in.xlsx",
        {
            "Customers": [
                ["customer_id", "AddressSid", "Note"],
                [f"C1{placeholder}x", sid(1), "fine"],  # a key with a NUL: not_text
                ["C2", sid(2), f"note{placeholder}"],  # carried only; its row fails (404)
                ["C3", sid(3), "fine"],
            ]
        },
    )
    rewrite_part(
        workbook,
        "xl/worksheets/sheet1.xml",
        lambda xml: xml.replace(placeholder.encode(), b"_x0000_"),
    )
    provisioner.emulator.unknown_addresses.add(sid(2))

    provisioner("create", str(workbook), "--run-id", "r1", expect=1)
    errors = provisioner.run_dir("r1") / "errors.csv"
    first = read_csv(errors)
    assert [(row["row_key"][:2], row["status"]) for row in first] == [
        ("C1", "invalid"),
        ("C2", "failed"),
    ]

    rerun = provisioner("create", str(errors), "--run-id", "r2", expect=1)

    assert "binary" not in rerun.stderr
    again = read_csv(provisioner.run_dir("r2") / "results.csv")
    assert [(row["status"], row["error_code"]) for row in again] == [
        ("invalid", "not_text"),  # still refused: its key was never sent, changed or not
        ("failed", first[1]["error_code"]),
    ]
    assert len(provisioner.emulator.created) == 1  # C3 only


@pytest.mark.parametrize("escape", ["_x0000_", "_x0001_", "_x001B_"])
def test_errors_xlsx_of_a_row_refused_for_control_characters_refuses_it_again(
    provisioner: Cli, tmp_path: Path, escape: str
) -> None:
    """A workbook key holds a control character: the row is not_text. errors.xlsx, which the
    run says to fix and feed back, must not turn it into other text (U+FFFD) that is then
    created, unfixed, as a customer nobody wrote."""
    placeholder = "CTRLHERE"
    workbook = write_xlsx(
        tmp_path / "in.xlsx",
        {
            "Customers": [
                ["customer_id", "AddressSid", "CustomerFriendlyName"],
                [f"C1{placeholder}x", sid(1), f"Ana{placeholder}"],
                ["C2", sid(2), "Bo"],
            ]
        },
    )
    rewrite_part(
        workbook,
        "xl/worksheets/sheet1.xml",
        lambda xml: xml.replace(placeholder.encode(), escape.encode()),
    )
    provisioner("create", str(workbook), "--run-id", "r1", expect=1)
    assert provisioner.emulator.creations("CustomerFriendlyName", "Bo") == 1

    provisioner(
        "create", str(provisioner.run_dir("r1") / "errors.xlsx"), "--run-id", "r2", expect=1
    )

    again = read_csv(provisioner.run_dir("r2") / "results.csv")
    assert [(row["status"], row["error_code"]) for row in again] == [("invalid", "not_text")]
    assert len(provisioner.emulator.created) == 1  # C2 only, once
