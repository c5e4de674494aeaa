"""A hostile pass over keys and fed-back files: cells a person or another program put where the
tool's own columns are. The real CLI against the emulator on loopback, real files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import CUSTOMER_HEADER, Cli, customers, read_csv, write_csv


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
