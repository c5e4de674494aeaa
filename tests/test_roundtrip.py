"""Formula-safe outputs, and feeding them back sends exactly the original values."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.cells import FORMULA_TRIGGERS, escape_formula, unescape_cell
from tests.conftest import Cli, read_csv, sid, without_derived_identity, write_csv

DANGEROUS = [
    '=HYPERLINK("http://x","y")',
    "+15551234567",
    "-5",
    "@handle",
    "'=already quoted",
    "''+two",
]


@given(st.text())
def test_unescape_undoes_escape(value: str) -> None:
    assert unescape_cell(escape_formula(value)) == value


@given(st.text())
def test_escaped_cells_never_start_a_formula(value: str) -> None:
    assert not escape_formula(value).startswith(FORMULA_TRIGGERS)


def fed_back_as_xlsx(errors: Path) -> Path:
    """What an operator gets by opening errors.csv in a spreadsheet and saving it as xlsx."""
    with errors.open(encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.reader(stream))
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)  # type: ignore[union-attr]
    path = errors.with_suffix(".xlsx")
    workbook.save(path)
    return path


def fed_back_as_european_csv(errors: Path) -> Path:
    """Saved again as CSV by Excel in a European locale: Windows-1252, semicolons, CRLF, no BOM."""
    with errors.open(encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.reader(stream))
    path = errors.with_name("resaved.csv")
    with path.open("w", encoding="cp1252", newline="") as stream:
        csv.writer(stream, delimiter=";", lineterminator="\r\n").writerows(rows)
    return path


@pytest.mark.parametrize("resave", [None, fed_back_as_xlsx, fed_back_as_european_csv])
def test_values_that_look_like_formulas_round_trip_exactly(
    provisioner: Cli, tmp_path: Path, resave
) -> None:
    header = ["customer_id", "AddressSid", "CustomerFriendlyName", "ChatFriendlyName", "Note"]
    rows = [[f"C{i}", "IG-broken", value, "-", value] for i, value in enumerate(DANGEROUS)]
    source = write_csv(tmp_path / "in.csv", header, rows)
    assert provisioner("create", str(source), "--run-id", "r1", expect=1).exit_code == 1

    errors = provisioner.run_dir("r1") / "errors.csv"
    raw = errors.read_text(encoding="utf-8-sig")
    assert "\n'=HYPERLINK" in raw.replace(",", "\n") or "'=HYPERLINK" in raw
    for written in read_csv(errors):
        assert not written["CustomerFriendlyName"].startswith(FORMULA_TRIGGERS)
        assert not written["ChatFriendlyName"].startswith(FORMULA_TRIGGERS)
    errors.write_text(raw.replace("IG-broken", sid(1)), encoding="utf-8-sig")
    fed = resave(errors) if resave else errors

    result = provisioner("create", str(fed), "--run-id", "r2")

    assert result.exit_code == 0, result.output
    received = sorted(
        (chat.parameters["CustomerFriendlyName"], chat.parameters["ChatFriendlyName"])
        for chat in provisioner.emulator.created
    )
    assert received == sorted((value, "-") for value in DANGEROUS)
    rerun = read_csv(provisioner.run_dir("r2") / "results.csv")
    assert sorted(r["row_key"] for r in rerun) == sorted(f"C{i}" for i in range(len(DANGEROUS)))
    assert [unescape_cell(r["Note"]) for r in rerun] == DANGEROUS


# Text as people type it into cells: anything printable, newlines and quotes included.
cell_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufeff")
    | st.sampled_from("\n\r\t\"';,|"),
    max_size=20,
)
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"])


@st.composite
def spreadsheets(draw: st.DrawFn) -> tuple[list[list[str]], str, str, str]:
    count = draw(st.integers(1, 6))
    rows = []
    for number in range(count):
        address = draw(st.sampled_from([sid(number + 1), "IG123", "", sid(number + 1).lower()]))
        rows.append([f"K{number}", address, draw(cell_text), draw(cell_text)])
    encoding = draw(encodings)
    if encoding == "cp1252":
        rows = [[cell.encode("cp1252", "replace").decode("cp1252") for cell in row] for row in rows]
    return (
        rows,
        draw(st.sampled_from([",", ";", "\t"])),
        encoding,
        draw(st.sampled_from(["\n", "\r\n"])),
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spreadsheets())
def test_every_row_reaches_the_api_exactly_or_is_reported(
    provisioner: Cli, tmp_path: Path, sheet
) -> None:
    rows, delimiter, encoding, line_end = sheet
    source = tmp_path / "in.csv"
    with source.open("w", encoding=encoding, newline="") as stream:
        # Python's writer leaves a lone CR unquoted when lines end in LF alone; spreadsheets
        # quote it, and so must a file that is to mean the same to every reader.
        lone_cr = any("\r" in cell for row in rows for cell in row)
        writer = csv.writer(
            stream,
            delimiter=delimiter,
            lineterminator=line_end,
            quoting=csv.QUOTE_ALL if lone_cr else csv.QUOTE_MINIMAL,
        )
        writer.writerow(["customer_id", "AddressSid", "CustomerFriendlyName", "ChatFriendlyName"])
        writer.writerows(rows)
    provisioner.emulator.created.clear()
    run_id = f"p{len(list(provisioner.out.glob('p*'))) if provisioner.out.exists() else 0}"
    encoding_option = ["--encoding", "cp1252"] if encoding == "cp1252" else []

    result = provisioner(
        "create", str(source), "--run-id", run_id, "--force", *encoding_option, expect=None
    )

    assert result.exit_code in (0, 1), result.output
    results = read_csv(provisioner.run_dir(run_id) / "results.csv")
    assert [r["customer_id"] for r in results] == [row[0] for row in rows]  # none dropped
    assert len(provisioner.emulator.created) == sum(r["status"] == "created" for r in results)
    expected_sent = []
    for row, outcome in zip(rows, results, strict=True):
        names = ["AddressSid", "CustomerFriendlyName", "ChatFriendlyName"]
        expected = {
            name: value.strip() for name, value in zip(names, row[1:], strict=True) if value.strip()
        }
        if outcome["status"] == "invalid":
            assert outcome["error_code"] in (
                "invalid_address_sid",
                "missing_address_sid",
                "not_text",
            )
            assert outcome["error_message"]
        else:
            assert outcome["status"] == "created"
            expected_sent.append(json.dumps(expected, sort_keys=True))
        if expected.get("AddressSid", "").startswith("IG0"):  # well formed: never refused
            assert outcome["status"] == "created", outcome
    received = [
        json.dumps(without_derived_identity(chat.parameters), sort_keys=True)
        for chat in provisioner.emulator.created
    ]
    assert sorted(received) == sorted(expected_sent)
