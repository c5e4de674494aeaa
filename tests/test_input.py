"""Spreadsheets as staff send them: encodings, delimiters, xlsx, column mapping, bad files."""

from __future__ import annotations

import codecs
import json
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from tests.conftest import (
    CUSTOMER_HEADER,
    Cli,
    customers,
    read_csv,
    read_summary,
    said,
    sid,
    without_derived_identity,
    write_csv,
)

VALUES = [
    ["C1", sid(1), "Zoë Ångström", "+15551234567"],
    ["C2", sid(2), "  Renée  ", "00123"],
    ["C3", sid(3), "line one\nline two", "1e5"],
]
HEADER = ["customer_id", "AddressSid", "CustomerFriendlyName", "ChatFriendlyName"]
EXPECTED = [
    {
        "AddressSid": sid(1),
        "CustomerFriendlyName": "Zoë Ångström",
        "ChatFriendlyName": "+15551234567",
    },
    {"AddressSid": sid(2), "CustomerFriendlyName": "Renée", "ChatFriendlyName": "00123"},
    {"AddressSid": sid(3), "CustomerFriendlyName": "line one\nline two", "ChatFriendlyName": "1e5"},
]


def sent(provisioner: Cli) -> list[dict[str, str]]:
    """What the emulator was sent, less the identities the tool derived (checked elsewhere)."""
    return sorted(
        (without_derived_identity(chat.parameters) for chat in provisioner.emulator.created),
        key=lambda p: p["AddressSid"],
    )


def csv_text(delimiter: str, line_end: str) -> str:
    def quote(cell: str) -> str:
        if any(ch in cell for ch in (delimiter, '"', "\n", "\r")):
            return '"' + cell.replace('"', '""') + '"'
        return cell

    lines = [delimiter.join(quote(c) for c in row) for row in [HEADER, *VALUES]]
    return line_end.join(lines) + line_end


@pytest.mark.parametrize(
    ("encoding", "bom", "delimiter", "line_end", "trailer"),
    [
        ("utf-8", b"", ",", "\n", ""),
        ("utf-8", codecs.BOM_UTF8, ",", "\r\n", ""),
        ("cp1252", b"", ";", "\r\n", ""),
        ("utf-8", b"", "\t", "\n", ""),
        ("utf-16-le", codecs.BOM_UTF16_LE, "\t", "\r\n", ""),
        (
            "utf-8",
            codecs.BOM_UTF8,
            ",",
            "\r\n",
            ",,,\r\n,,,\r\n\r\n",
        ),  # Excel's trailing empty rows
    ],
    ids=[
        "utf8",
        "utf8-bom-crlf",
        "cp1252-semicolon",
        "tab",
        "utf16-excel-unicode-text",
        "trailing-rows",
    ],
)
def test_csv_as_excel_and_sheets_write_it(
    provisioner: Cli,
    tmp_path: Path,
    encoding: str,
    bom: bytes,
    delimiter: str,
    line_end: str,
    trailer: str,
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(bom + (csv_text(delimiter, line_end) + trailer).encode(encoding))

    result = provisioner("create", str(source), "--run-id", "r1")

    assert result.exit_code == 0, result.output
    assert sent(provisioner) == EXPECTED
    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [r["customer_id"] for r in rows] == ["C1", "C2", "C3"]
    assert rows[0]["CustomerFriendlyName"] == "Zoë Ångström"


def test_trailing_empty_columns_and_ragged_rows(provisioner: Cli, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(f"AddressSid,Name,,\n{sid(1)},a,,\n{sid(2)}\n{sid(3)},c,,,,\n")

    result = provisioner("create", str(source), "--run-id", "r1")

    assert result.exit_code == 0, result.output
    assert [r["Name"] for r in read_csv(provisioner.run_dir("r1") / "results.csv")] == [
        "a",
        "",
        "c",
    ]


def test_a_row_wider_than_the_header_with_values_is_an_input_error(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(f"AddressSid,Name\n{sid(1)},a\n{sid(2)},b,surprise\n")

    result = provisioner("create", str(source), expect=2)

    assert result.exit_code == 2
    assert "row 3 has 3 cells but the header has 2 columns" in result.stderr  # the sheet's row
    assert provisioner.emulator.requests == 0


def test_explicit_encoding_and_delimiter(provisioner: Cli, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(f"AddressSid|CustomerFriendlyName\n{sid(1)}|Günther\n".encode("latin-1"))

    result = provisioner("create", str(source), "--encoding", "latin-1", "--delimiter", "|")

    assert result.exit_code == 0, result.output
    assert sent(provisioner) == [{"AddressSid": sid(1), "CustomerFriendlyName": "Günther"}]


def make_workbook(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)  # type: ignore[arg-type]
    for name, rows in sheets.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
    workbook.save(path)
    return path


def test_xlsx_first_sheet_cells_as_text(provisioner: Cli, tmp_path: Path) -> None:
    source = make_workbook(
        tmp_path / "in.xlsx",
        {"Customers": [[*HEADER, "Seats", "Ratio"], *[[*v, 42, 1.5] for v in VALUES], [None] * 6]},
    )

    result = provisioner("create", str(source), "--run-id", "r1")

    assert result.exit_code == 0, result.output
    expected = [{**e, "CustomerFriendlyName": e["CustomerFriendlyName"].strip()} for e in EXPECTED]
    assert sent(provisioner) == expected
    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [(r["Seats"], r["Ratio"]) for r in rows] == [("42", "1.5")] * 3


def test_xlsx_named_sheet(provisioner: Cli, tmp_path: Path) -> None:
    source = make_workbook(
        tmp_path / "in.xlsx",
        {"Notes": [["nothing here"]], "Batch 2": [["Address SID"], [sid(5)]]},
    )

    assert provisioner("create", str(source), "--sheet", "Batch 2").exit_code == 0
    assert sent(provisioner) == [{"AddressSid": sid(5)}]

    missing = provisioner("create", str(source), "--sheet", "Batch 3", expect=2)
    assert missing.exit_code == 2
    assert "no such sheet" in missing.stderr
    assert "Notes, Batch 2" in missing.stderr


def test_column_mapping(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        ["Address", "Customer Name", "Customer Name (old)"],
        [[sid(1), "Ana", "x"]],
    )

    result = provisioner(
        "create",
        str(source),
        "--column",
        "AddressSid=Address",
        "--column",
        "CustomerFriendlyName=Customer Name",
    )

    assert result.exit_code == 0, result.output
    assert sent(provisioner) == [{"AddressSid": sid(1), "CustomerFriendlyName": "Ana"}]


def test_column_mapping_to_a_missing_header(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ["AddressSid"], [[sid(1)]])

    result = provisioner("create", str(source), "--column", "CustomerFriendlyName=Nope", expect=2)

    assert result.exit_code == 2
    assert "--column CustomerFriendlyName=Nope: no such header; found: AddressSid" in result.stderr


def test_pre_engagement_columns_are_folded_into_json(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        [
            "AddressSid",
            "pre_engagement.friendlyName",
            "pre_engagement.email",
            "pre_engagement.query",
        ],
        [
            [sid(1), "Ana", "ana@example.com", "Billing"],
            [sid(2), "Bo", "", ""],
            [sid(3), "", "", ""],
        ],
    )

    assert provisioner("create", str(source), "--run-id", "r1").exit_code == 0

    by_address = {
        chat.parameters["AddressSid"]: chat.parameters for chat in provisioner.emulator.created
    }
    assert json.loads(by_address[sid(1)]["PreEngagementData"]) == {
        "friendlyName": "Ana",
        "email": "ana@example.com",
        "query": "Billing",
    }
    assert json.loads(by_address[sid(2)]["PreEngagementData"]) == {"friendlyName": "Bo"}
    assert "PreEngagementData" not in by_address[sid(3)]


def test_pre_engagement_columns_and_a_pre_engagement_data_column_conflict(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        ["AddressSid", "PreEngagementData", "pre_engagement.email"],
        [[sid(1), "{}", "a"]],
    )

    result = provisioner("create", str(source), expect=2)

    assert result.exit_code == 2
    assert "use one or the other" in result.stderr


def test_dry_run_warns_about_pre_engagement_data_that_is_not_json(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        ["AddressSid", "PreEngagementData"],
        [[sid(1), '{"email": "a@b.c"}'], [sid(2), "email=a@b.c"]],
    )

    result = provisioner("create", str(source), "--dry-run", "--run-id", "r1")

    assert result.exit_code == 0
    assert "row 3: PreEngagementData is not valid JSON" in result.stderr  # the sheet's row
    assert "row 2:" not in result.stderr.replace("would send row 2:", "")
    assert len(read_summary(provisioner.run_dir("r1"))["warnings"]) == 1


def test_duplicate_customer_ids_are_invalid_after_the_first(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        CUSTOMER_HEADER,
        [["C1", sid(1), "a"], ["C2", sid(2), "b"], ["C1", sid(3), "c"]],
    )

    result = provisioner("create", str(source), "--run-id", "r1", expect=1)

    assert result.exit_code == 1
    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [(r["status"], r["error_code"]) for r in rows] == [
        ("created", ""),
        ("created", ""),
        ("invalid", "duplicate_customer_id"),
    ]
    assert rows[2]["error_message"] == "duplicate customer_id 'C1' (first at row 2)"


def test_control_characters_make_a_row_invalid(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        ["AddressSid", "PreEngagementData"],
        [[sid(1), "a\x07b"], [sid(2), "ok"]],
    )

    assert provisioner("create", str(source), "--run-id", "r1", expect=1).exit_code == 1

    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [(r["status"], r["error_code"]) for r in rows] == [
        ("invalid", "not_text"),
        ("created", ""),
    ]


def test_dry_run_prints_the_plan_by_reason(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(3))
    assert provisioner("create", str(source), "--run-id", "r1").exit_code == 0
    more = write_csv(
        tmp_path / "more.csv",
        CUSTOMER_HEADER,
        [*customers(5), ["C9", "IGbad", "x"], ["C1", sid(1), "again"]],
    )
    requests = provisioner.emulator.requests

    result = provisioner("create", str(more), "--dry-run", "--run-id", "r2", expect=1)

    assert result.exit_code == 1
    assert provisioner.emulator.requests == requests
    assert (
        "plan: 2 to create, 3 already created (existing), "
        "2 invalid (1 invalid_address_sid, 1 duplicate_customer_id)" in result.stderr
    )
    assert [r["status"] for r in read_csv(provisioner.run_dir("r2") / "results.csv")] == [
        "existing",
        "existing",
        "existing",
        "not_attempted",
        "not_attempted",
        "invalid",
        "invalid",
    ]
    assert len(read_csv(provisioner.run_dir("r2") / "errors.csv")) == 4


def test_strict_refuses_to_send_when_any_row_is_invalid(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, [*customers(3), ["C1", sid(1), "dup"]])

    result = provisioner("create", str(source), "--strict", expect=2)

    assert result.exit_code == 2
    assert "--strict: 1 invalid row; nothing was sent" in result.stderr
    assert provisioner.emulator.requests == 0


def test_strict_counts_each_invalid_row_once(provisioner: Cli, tmp_path: Path) -> None:
    header = ["customer_id", "row_key", "AddressSid", "Identity"]
    rows = [
        ["C1", "R1", sid(1), "id-1"],
        ["C2", "", sid(2), "id-2"],
        ["C1", "R1", sid(1), "id-1"],  # repeats row 2's three values: one invalid row
        ["R1", "", sid(3), "id-4"],  # its key (customer_id) is row 2's row_key
        ["C5", "C2", sid(4), "id-5"],  # its row_key is row 3's key (customer_id)
    ]
    source = write_csv(tmp_path / "in.csv", header, rows)

    result = provisioner("create", str(source), "--strict", expect=2)

    assert "--strict: 3 invalid rows; nothing was sent" in result.stderr
    assert provisioner.emulator.requests == 0

    result = provisioner("create", str(source), "--run-id", "r1", expect=1)

    statuses = [r["status"] for r in read_csv(provisioner.run_dir("r1") / "results.csv")]
    assert statuses == ["created", "created", "invalid", "invalid", "invalid"]
    assert len(provisioner.emulator.created) == 2  # one web chat a key, however it is given


def workbook_without_sheets(path: Path) -> Path:
    make_workbook(path, {"Sheet": [["AddressSid"]]})
    with zipfile.ZipFile(path) as original:
        parts = {name: original.read(name) for name in original.namelist()}
    workbook_xml = parts["xl/workbook.xml"].decode()
    start, end = workbook_xml.index("<sheets>"), workbook_xml.index("</sheets>") + len("</sheets>")
    parts["xl/workbook.xml"] = (workbook_xml[:start] + "<sheets/>" + workbook_xml[end:]).encode()
    with zipfile.ZipFile(path, "w") as rewritten:
        for name, content in parts.items():
            rewritten.writestr(name, content)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.with_name("missing.csv"), "no such file"),
        (lambda p: p.parent, "is a directory"),
        (lambda p: (p.write_bytes(b""), p)[1], "the file is empty"),
        (lambda p: (p.write_text("\n\n  \n"), p)[1], "the file is empty"),
        (lambda p: (p.write_text("AddressSid,Name\n"), p)[1], "has a header row but no data rows"),
        (
            lambda p: (p.write_text("AddressSid,Name\n,\n\n"), p)[1],
            "has a header row but no data rows",
        ),
        (
            lambda p: (p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 50), p)[1],
            "binary file",
        ),
        (lambda p: (p.write_bytes(b"AddressSid\n\xff\xfe\xfa"), p)[1], None),
        (lambda p: workbook_without_sheets(p.with_suffix(".xlsx")), "no sheets"),
        (
            lambda p: (
                p.with_suffix(".xlsx").write_bytes(
                    bytes.fromhex("d0cf11e0a1b11ae1") + b"\x00" * 512
                ),
                p.with_suffix(".xlsx"),
            )[1],
            "password-protected",
        ),
        (
            lambda p: (
                p.with_suffix(".xlsx").write_bytes(b"PK\x03\x04 not really a zip"),
                p.with_suffix(".xlsx"),
            )[1],
            "not a readable xlsx workbook",
        ),
    ],
    ids=[
        "missing",
        "directory",
        "empty",
        "blank-lines",
        "header-only",
        "header-and-blank-rows",
        "binary",
        "cp1252-fallback",
        "xlsx-no-sheets",
        "password-protected",
        "broken-xlsx",
    ],
)
def test_bad_input_gets_one_clear_line_and_exit_2(
    provisioner: Cli, tmp_path: Path, make, message: str | None
) -> None:
    source = make(tmp_path / "in.csv")

    # bytes that are not UTF-8 are read as Windows-1252, not refused: that input sends
    result = provisioner("create", str(source), expect=1 if message is None else 2)

    if message is None:  # bytes that are not UTF-8 are read as Windows-1252, not refused
        assert result.exit_code == 1, result.output
        return
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    error_lines = [line for line in said(result.stderr) if line.startswith("error:")]
    assert len(error_lines) == 1
    assert provisioner.emulator.requests == 0


def test_traceback_flag_shows_the_stack(provisioner: Cli, tmp_path: Path) -> None:
    result = provisioner("create", str(tmp_path / "missing.csv"), "--traceback", expect=2)

    assert result.exit_code == 2
    assert "Traceback" in result.stderr
    assert "InputError" in result.stderr


def test_blank_lines_above_the_header_are_skipped(provisioner: Cli, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("\n\nAddressSid\n" + sid(1) + "\n")

    provisioner("create", str(source), "--run-id", "r1")

    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [(r["row"], r["status"]) for r in rows] == [("4", "created")]  # as the sheet shows it


# --- Encodings: every name, wherever it comes from, is checked once --------------------------

NAME_IT = "name the file's encoding, for example utf-8, cp1252 or utf-16"
NOT_TEXT = "is not a text encoding (it turns bytes into bytes, or text into text)"
BAD_ENCODINGS = {
    "rot13": f"'rot13' {NOT_TEXT}; {NAME_IT}",
    "hex": f"'hex' {NOT_TEXT}; {NAME_IT}",
    "base64": f"'base64' {NOT_TEXT}; {NAME_IT}",
    "zlib": f"'zlib' {NOT_TEXT}; {NAME_IT}",
    "bz2": f"'bz2' {NOT_TEXT}; {NAME_IT}",
    "uu": f"'uu' {NOT_TEXT}; {NAME_IT}",
    "quopri": f"'quopri' {NOT_TEXT}; {NAME_IT}",
    "utf-88": f"'utf-88' is not an encoding Python knows; {NAME_IT}",
    "undefined": f"'undefined' decodes nothing; {NAME_IT}",
    "idna": f"'idna' encodes domain names, not files; {NAME_IT}",
    "Punycode": f"'Punycode' encodes domain names, not files; {NAME_IT}",
    "utf\x01": f"'utf\\x01' is not an encoding name; {NAME_IT}",  # Python would read it as utf-8
    "ütf-8": f"'ütf-8' is not an encoding name; {NAME_IT}",
    "": f"'' is empty; {NAME_IT}",
}
# Where a value comes from, and how the error names it (CliRunner calls the program `cli`).
# Click ignores an empty variable: an empty name comes only from the command line or the file.
SOURCES = {
    "command-line": "'--encoding'",
    "environment": "'--encoding' from the environment (PROVISIONER_ENCODING)",
    "file": "'--encoding' from the file ({config})",
}


@pytest.mark.parametrize(
    ("name", "source"),
    [
        (name, source)
        for name in BAD_ENCODINGS
        for source in SOURCES
        if name or source != "environment"
    ],
)
def test_an_encoding_that_cannot_read_text_is_one_error_line_and_nothing_is_made(
    provisioner: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str
) -> None:
    input_path = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    config = tmp_path / "settings.toml"
    config.write_text("[create]\nrate = 5\n")
    arguments = ["create", str(input_path), "--config", str(config)]
    if source == "command-line":
        arguments += ["--encoding", name]
    elif source == "environment":
        monkeypatch.setenv("PROVISIONER_ENCODING", name)
    else:
        config.write_text(f"[create]\nencoding = {json.dumps(name)}\n")

    result = provisioner(*arguments, expect=2)

    hint = SOURCES[source].format(config=config)
    assert said(result.stderr) == [
        f"error: Invalid value for {hint}: {BAD_ENCODINGS[name]} (see cli create --help)"
    ]
    assert result.stdout == ""
    assert provisioner.emulator.requests == 0
    assert not provisioner.out.exists()  # no run folder, no ledger


@pytest.mark.parametrize("source", ["command-line", "environment"])
@pytest.mark.parametrize("name", ["rot13", "zlib", "utf-88"])
def test_reconcile_checks_the_encoding_the_same_way(
    provisioner: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str
) -> None:
    input_path = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    out = tmp_path / "outputs"
    arguments = ["reconcile", str(input_path), "--out", str(out)]
    if source == "command-line":
        arguments += ["--encoding", name]
    else:
        monkeypatch.setenv("PROVISIONER_ENCODING", name)

    result = provisioner(*arguments, expect=2)

    assert said(result.stderr) == [
        f"error: Invalid value for {SOURCES[source]}: {BAD_ENCODINGS[name]} "
        "(see cli reconcile --help)"
    ]
    assert provisioner.emulator.requests == 0
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"AddressSid,Name\n", "in.csv", "has a header row but no data rows"),
        (b"Customer,Name\nc-1,Ana\n", "in.csv", "no AddressSid column; found: Customer, Name"),
        (b"PK\x03\x04 not really a zip", "in.xlsx", "not a readable xlsx workbook"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 50, "in.csv", "binary file"),
    ],
    ids=["header-only", "no-address-column", "broken-xlsx", "binary"],
)
def test_reconcile_of_a_bad_input_leaves_no_folder_no_ledger_and_no_copy(
    provisioner: Cli, tmp_path: Path, content: bytes, name: str, message: str
) -> None:
    source = tmp_path / name
    source.write_bytes(content)

    out = ("--out", str(provisioner.out), "--base-url", provisioner.emulator.url)
    result = provisioner("reconcile", str(source), *out, expect=2)

    (error,) = [line for line in said(result.stderr) if line.startswith("error:")]
    assert message in error
    assert provisioner.emulator.requests == 0
    assert not provisioner.out.exists()  # read in a staging folder first, as create does


ACCENTED = f"AddressSid,Name\n{sid(1)},Ana\n{sid(2)},Zoë\n"
READ_AGAIN = f"{NAME_IT}, with --encoding; or leave --encoding out to detect it"


@pytest.mark.parametrize(
    ("content", "encoding", "message"),
    [
        (
            ACCENTED.encode("utf-8"),
            "ascii",
            "line 3: not valid ascii text (byte c3: ordinal not in range(128))",
        ),
        (
            ACCENTED.encode("utf-8"),
            "utf-32",
            "line 1: not valid utf-32 text (bytes 41 64 64 72: code point not in range(0x110000))",
        ),
        (
            ACCENTED.encode("utf-16"),
            "utf-32",
            "line 1: not valid utf-32 text (bytes ff fe 41 00: code point not in range(0x110000))",
        ),
    ],
    ids=["ascii-on-accents", "utf-32-on-utf-8", "utf-32-on-utf-16"],
)
def test_a_text_encoding_that_cannot_decode_the_file_is_one_error_line(
    provisioner: Cli, tmp_path: Path, content: bytes, encoding: str, message: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(content)

    result = provisioner("create", str(source), "--encoding", encoding, expect=2)

    assert [line for line in said(result.stderr) if line.startswith("error:")] == [
        f"error: {source}: {message}; {READ_AGAIN}"
    ]
    assert "internal error" not in result.stderr
    assert provisioner.emulator.requests == 0
    assert not provisioner.out.exists()  # checked in a staging folder: nothing left behind


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        (codecs.BOM_UTF8 + ACCENTED.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + ACCENTED.encode("utf-8"), "UTF8"),
        (ACCENTED.encode("utf-16"), "UTF16"),
        (codecs.BOM_UTF16_LE + ACCENTED.encode("utf-16-le"), "utf-16-le"),
        (codecs.BOM_UTF16_BE + ACCENTED.encode("utf-16-be"), "utf_16_be"),
        (ACCENTED.encode("utf-32"), "utf-32"),
        (codecs.BOM_UTF32_LE + ACCENTED.encode("utf-32-le"), "utf-32-le"),
        (ACCENTED.encode("utf-32"), None),
    ],
    ids=[
        "utf-8-bom",
        "utf-8-bom-other-spelling",
        "utf-16-other-spelling",
        "utf-16-le-bom",
        "utf-16-be-bom",
        "utf-32",
        "utf-32-le-bom",
        "utf-32-detected",
    ],
)
def test_a_named_unicode_encoding_reads_its_file_bom_or_not(
    provisioner: Cli, tmp_path: Path, content: bytes, encoding: str | None
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(content)
    named = ["--encoding", encoding] if encoding else []

    provisioner("create", str(source), *named, "--run-id", "r1")

    assert sent(provisioner) == [{"AddressSid": sid(1)}, {"AddressSid": sid(2)}]
    assert [r["Name"] for r in read_csv(provisioner.run_dir("r1") / "results.csv")] == [
        "Ana",
        "Zoë",
    ]


@pytest.mark.parametrize("rows_before", [1, 30_000], ids=["in-the-sample", "past-1mb"])
def test_a_nul_anywhere_in_a_csv_refuses_it_before_anything_is_made(
    provisioner: Cli, tmp_path: Path, rows_before: int
) -> None:
    rows = [[f"C{n}", sid(n % 7 + 1), "x" * 30] for n in range(rows_before)]
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, [*rows, ["C-nul", sid(1), "a\x00b"]])

    result = provisioner("create", str(source), expect=2)

    (error,) = [line for line in said(result.stderr) if line.startswith("error:")]
    assert "binary file" in error
    assert f"line {rows_before + 2}" in error
    assert provisioner.emulator.requests == 0
    assert not provisioner.out.exists()
