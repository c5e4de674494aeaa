"""outcome.py: statuses, the Outcome, and the result columns as the README documents them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.outcome import (
    Outcome,
)
from provisioner.result_columns import (
    EARLIER_RESULT_COLUMNS,
    ERROR_COLUMNS,
    RESULT_COLUMNS,
    RESULT_SCHEMA,
    TOOL_COLUMN_SUFFIXES,
)
from provisioner.rows import Row
from provisioner.vocabulary import ERROR_STATUSES, LookupResult, Status

README = Path(__file__).resolve().parent.parent / "README.md"


def documented_columns(file_name: str) -> list[str]:
    """The columns the README's Outputs section lists after a file's own columns, in order."""
    text = README.read_text(encoding="utf-8")
    bullet = text.split(f"- `{file_name}`:", 1)[1].split("\n- `", 1)[0]
    listed = bullet.split("then", 1)[1]
    while re.search(r"\([^()]*\)", listed):  # asides name other things: Twilio's header, codes
        listed = re.sub(r"\([^()]*\)", "", listed)
    listed = listed.split(".", 1)[0]  # the list ends with its sentence
    return re.findall(r"`([a-z_]+)`", listed)


def row(number: int = 7, *, key: str = "K-7", source: int = 0) -> Row:
    """A checked row of the input, with a key."""
    return Row(number=number, cells=("C7", "x"), parameters={}, key=key, source=source)


@pytest.mark.parametrize(
    ("file_name", "columns"),
    [("results.csv", RESULT_COLUMNS), ("errors.csv", ERROR_COLUMNS)],
)
def test_the_columns_are_the_readmes_in_its_order(file_name: str, columns: tuple[str, ...]) -> None:
    assert documented_columns(file_name) == list(columns)


def test_errors_csv_has_a_subset_of_the_result_columns_in_the_same_order() -> None:
    positions = [RESULT_COLUMNS.index(name) for name in ERROR_COLUMNS]
    assert positions == sorted(positions)
    assert {column.name for column in RESULT_SCHEMA if column.in_errors} == set(ERROR_COLUMNS)


def test_files_of_this_version_and_earlier_ones_are_recognised_by_their_last_columns() -> None:
    assert TOOL_COLUMN_SUFFIXES[:2] == (RESULT_COLUMNS, ERROR_COLUMNS)
    assert set(EARLIER_RESULT_COLUMNS) <= set(TOOL_COLUMN_SUFFIXES)
    for earlier in EARLIER_RESULT_COLUMNS:  # columns were only ever added, never renamed
        assert set(earlier) <= set(RESULT_COLUMNS)


def test_the_statuses_and_which_of_them_are_errors() -> None:
    assert [status.value for status in Status] == [
        "created",
        "existing",
        "invalid",
        "failed",
        "not_attempted",
    ]
    assert {status.value for status in ERROR_STATUSES} == {"invalid", "failed", "not_attempted"}
    for status in Status:
        assert Outcome(status).is_error == (status in ERROR_STATUSES)


def test_every_column_is_filled_from_the_row_and_its_outcome() -> None:
    outcome = Outcome(
        Status.CREATED,
        conversation_sid="CH" + "1" * 32,
        identity="prv-abc",
        attempts=3,
        ambiguous_attempts=1,
        http_status=201,
        error_code="",
        error_message="",
        request_id="RQ123",
        lookup=LookupResult.ABSENT,
        duplicate_sids=("CH" + "2" * 32, "CH" + "3" * 32),
    )

    cells = {column.name: column.fill(row(source=4), outcome) for column in RESULT_SCHEMA}

    assert cells == {
        "row": "7",
        "status": "created",
        "conversation_sid": "CH" + "1" * 32,
        "identity": "prv-abc",
        "attempts": "3",
        "ambiguous_attempts": "1",
        "http_status": "201",
        "error_code": "",
        "error_message": "",
        "request_id": "RQ123",
        "row_key": "K-7",
        "lookup": "absent",
        "duplicate_sids": f"CH{'2' * 32} CH{'3' * 32}",
        "source_row": "4",
    }


def test_an_outcome_with_no_answer_leaves_http_status_and_lookup_empty() -> None:
    outcome = Outcome(Status.NOT_ATTEMPTED, error_code="dry_run")

    cells = {column.name: column.fill(row(), outcome) for column in RESULT_SCHEMA}

    assert (cells["http_status"], cells["lookup"], cells["duplicate_sids"]) == ("", "", "")
    assert (cells["attempts"], cells["ambiguous_attempts"]) == ("0", "0")
    assert cells["source_row"] == "7"  # not fed back: the row is its own source


@given(
    status=st.sampled_from(Status),
    lookup=st.sampled_from(LookupResult),
    http_status=st.none() | st.integers(100, 599),
    attempts=st.integers(0, 10**6),
    text=st.text(max_size=40),
    sids=st.lists(st.text(max_size=34), max_size=3),
    number=st.integers(1, 10**7),
)
def test_any_outcome_fills_every_column_with_text(
    status: Status,
    lookup: LookupResult,
    http_status: int | None,
    attempts: int,
    text: str,
    sids: list[str],
    number: int,
) -> None:
    outcome = Outcome(
        status,
        conversation_sid=text,
        identity=text,
        attempts=attempts,
        ambiguous_attempts=attempts,
        http_status=http_status,
        error_code=text,
        error_message=text,
        request_id=text,
        lookup=lookup,
        duplicate_sids=tuple(sids),
    )

    cells = [column.fill(row(number, key=text), outcome) for column in RESULT_SCHEMA]

    assert len(cells) == len(RESULT_COLUMNS)
    assert all(isinstance(cell, str) for cell in cells)
    assert cells[RESULT_COLUMNS.index("status")] == status.value
    assert cells[RESULT_COLUMNS.index("row")] == str(number)
