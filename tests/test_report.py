"""Result files in input order whatever order rows finish in; errors.csv; the tally."""

from __future__ import annotations

import csv
import json
import logging
import random
import threading
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from provisioner import dispatch
from provisioner.dispatch import WINDOW_PER_WORKER, Dispatcher
from provisioner.outcome import Outcome
from provisioner.report import (
    ERRORS_WORKBOOK,
    RedactingFilter,
    ResultFiles,
    Tally,
    WriterFactory,
    end_of_run,
    learnt_options,
    writer_factories,
)
from provisioner.result_columns import ERROR_COLUMNS, RESULT_COLUMNS, ROW_KEY
from provisioner.rows import Row
from provisioner.staging import read_input
from provisioner.stopping import Stopping
from provisioner.summary import ConcurrencyLimits, Rate, Summary
from provisioner.vocabulary import LookupResult, Status
from provisioner.writers import CsvWriter
from tests.conftest import Reading

CARRIED = ["customer_id", "AddressSid"]
KEY_COLUMNS = ["row_key", "source_row", "row", "customer_id"]  # as text (a run's: writer_factories)
SID = "CH" + "a" * 32
OTHER_SID = "CH" + "b" * 32
SEEDS = [1, 2, 3, 4, 5]
THREAD_WAIT = 5.0  # seconds a test waits for another thread: only a bug takes this long


def factories(keys: bool = False) -> dict[str, WriterFactory]:
    """Plain CSV; with `keys`, KEY_COLUMNS kept as text (`'00123`), as a run keeps its keys."""
    return {".csv": partial(CsvWriter, key_columns=KEY_COLUMNS) if keys else CsvWriter}


def row(number: int, key: str | None = None) -> Row:
    address = f"IG{number:032x}"
    key = key or f"c-{number}"
    return Row(number, (key, address), {"AddressSid": address}, key)


def outcome_for(number: int) -> Outcome:
    """A different status per row, so both files get rows and errors.csv must choose."""
    status = list(Status)[number % len(Status)]
    if status in (Status.CREATED, Status.EXISTING):
        return Outcome(status, conversation_sid=f"CH{number:032x}", identity=f"id-{number}")
    return Outcome(status, error_code=f"code-{number}", error_message=f"message {number}")


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as stream:
        return list(csv.reader(stream))


def test_rows_are_written_in_input_order_whatever_order_they_finish_in(tmp_path: Path) -> None:
    count = 40
    files = ResultFiles(tmp_path, CARRIED, factories())
    order = list(range(count))
    random.Random(SEEDS[0]).shuffle(order)

    written_numbers: list[int] = []
    for sequence in order:
        written = files.add(sequence, row(sequence + 1), outcome_for(sequence + 1))
        written_numbers += [written_row.number for written_row, _ in written]
    files.close()

    assert written_numbers == list(range(1, count + 1))
    records = read_csv(tmp_path / "results.csv")
    assert records[0] == [*CARRIED, *RESULT_COLUMNS]
    assert [record[len(CARRIED)] for record in records[1:]] == [str(n) for n in range(1, count + 1)]


@pytest.mark.parametrize("seed", SEEDS)
def test_the_files_are_the_same_whatever_the_finishing_order(tmp_path: Path, seed: int) -> None:
    count = 25
    in_order, shuffled = tmp_path / "in-order", tmp_path / "shuffled"
    in_order.mkdir()
    shuffled.mkdir()
    order = list(range(count))
    random.Random(seed).shuffle(order)
    for folder, sequences in ((in_order, range(count)), (shuffled, order)):
        files = ResultFiles(folder, CARRIED, factories())
        for sequence in sequences:
            files.add(sequence, row(sequence + 1), outcome_for(sequence + 1))
        files.close()

    for name in ("results.csv", "errors.csv"):
        assert (shuffled / name).read_bytes() == (in_order / name).read_bytes()


def test_waiting_counts_the_rows_held_back_for_an_earlier_one(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path, CARRIED, factories())

    waiting = []
    for sequence in (3, 2, 1):
        assert files.add(sequence, row(sequence + 1), outcome_for(sequence + 1)) == []
        waiting.append(files.waiting)
    written = files.add(0, row(1), outcome_for(1))

    assert waiting == [1, 2, 3]
    assert [written_row.number for written_row, _ in written] == [1, 2, 3, 4]
    assert files.waiting == 0
    files.close()


def test_what_is_written_is_on_disk_before_the_run_ends(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path, CARRIED, factories())
    files.add(0, row(1), outcome_for(1))
    files.add(2, row(3), outcome_for(3))

    assert len(read_csv(tmp_path / "results.csv")) == 2  # the header and row 1; row 3 waits
    files.add(1, row(2), outcome_for(2))
    assert len(read_csv(tmp_path / "results.csv")) == 4
    files.close()


BACKLOG_LIMIT, CONCURRENCY = 20, 3
MOST_WAITING = BACKLOG_LIMIT + WINDOW_PER_WORKER * CONCURRENCY  # what back-pressure allows


def most_waiting_behind_a_slow_row(
    folder: Path, count: int, *, ready: bool = False, stop: bool = False
) -> int:
    """Row 0 is slow; the others are sent (or `ready`). The most outcomes ever held back.

    Row 0 is let go once the dispatcher holds back (it asks for the backlog again without
    handing out rows), or once the buffer overruns what back-pressure allows, so that a run
    without back-pressure fails fast instead of waiting for row 0.
    """
    files = ResultFiles(folder, CARRIED, factories())
    stopping = Stopping()
    let_go = threading.Event()
    asked_since_start = 0

    def backlog() -> int:
        nonlocal asked_since_start
        asked_since_start += 1
        if asked_since_start >= 2:
            let_go.set()
        return files.waiting

    def on_start(sequences: list[int]) -> bool:
        nonlocal asked_since_start
        asked_since_start = 0
        return True

    def work(sequence: int) -> Outcome:
        if sequence == 0:
            if stop:
                stopping.stop("test")
            let_go.wait(THREAD_WAIT)
        if sequence == count - 1:  # every row ran: nothing held row 0 back
            let_go.set()
        return outcome_for(sequence + 1)

    dispatcher: Dispatcher[int, Outcome] = Dispatcher(
        work,
        concurrency=CONCURRENCY,
        stopping=stopping,
        ready=lambda sequence: outcome_for(sequence + 1) if ready and sequence else None,
        not_sent=lambda sequence: Outcome(Status.NOT_ATTEMPTED),
        cut_off=lambda sequence: Outcome(Status.NOT_ATTEMPTED),
        on_start=on_start,
        backlog=backlog,
        backlog_limit=BACKLOG_LIMIT,
    )
    most_waiting = 0
    for batch in dispatcher.run(range(count)):
        for sequence, outcome in batch:
            files.add(sequence, row(sequence + 1), outcome)
        most_waiting = max(most_waiting, files.waiting)
        if most_waiting > MOST_WAITING:
            let_go.set()
    files.close()
    assert len(read_csv(files.results_path)) == count + 1
    return most_waiting


@pytest.fixture
def quick_collect(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatcher checks for a stop every 10 ms instead of every 0.2 s."""
    monkeypatch.setattr(dispatch, "COLLECT_EVERY", 0.01)


@pytest.mark.usefixtures("quick_collect")
def test_a_slow_row_holds_back_at_most_the_backlog_limit_and_a_window(tmp_path: Path) -> None:
    most_waiting = most_waiting_behind_a_slow_row(tmp_path, 200)

    assert BACKLOG_LIMIT <= most_waiting <= MOST_WAITING


@pytest.mark.usefixtures("quick_collect")
def test_ready_rows_behind_a_slow_row_are_held_to_the_limit_too(tmp_path: Path) -> None:
    most_waiting = most_waiting_behind_a_slow_row(tmp_path, 300, ready=True)

    assert most_waiting <= MOST_WAITING


@pytest.mark.usefixtures("quick_collect")
def test_rows_not_sent_after_a_stop_are_held_to_the_limit_too(tmp_path: Path) -> None:
    most_waiting = most_waiting_behind_a_slow_row(tmp_path, 300, stop=True)

    assert most_waiting <= MOST_WAITING


def test_close_refuses_while_rows_still_wait(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path, CARRIED, factories())
    files.add(1, row(2), outcome_for(2))

    with pytest.raises(AssertionError, match="still waiting"):
        files.close()


def test_errors_csv_gets_only_error_rows_with_the_error_columns(tmp_path: Path) -> None:
    outcomes = [
        Outcome(Status.CREATED, conversation_sid=SID, identity="id-1", attempts=1, http_status=201),
        Outcome(Status.EXISTING, conversation_sid=OTHER_SID, identity="id-2"),
        Outcome(Status.INVALID, error_code="invalid_address_sid", error_message="bad address"),
        Outcome(
            Status.FAILED,
            identity="id-4",
            attempts=5,
            ambiguous_attempts=1,
            http_status=503,
            error_code="20503",
            error_message="Service unavailable",
            request_id="RQ4",
            lookup=LookupResult.ABSENT,
        ),
        Outcome(Status.NOT_ATTEMPTED, identity="id-5", error_message="not sent"),
    ]
    files = ResultFiles(tmp_path, CARRIED, factories())
    for sequence, outcome in enumerate(outcomes):
        files.add(sequence, row(sequence + 1), outcome)
    files.close()

    assert files.paths == {
        "results.csv": tmp_path / "results.csv",
        "errors.csv": tmp_path / "errors.csv",
    }
    assert read_csv(files.errors_path) == [
        [*CARRIED, *ERROR_COLUMNS],
        ["c-3", f"IG{3:032x}", "3", "invalid", "invalid_address_sid", "bad address", "c-3", "3"],
        ["c-4", f"IG{4:032x}", "4", "failed", "20503", "Service unavailable", "c-4", "4"],
        ["c-5", f"IG{5:032x}", "5", "not_attempted", "", "not sent", "c-5", "5"],
    ]
    results = read_csv(files.results_path)
    assert results[4] == [
        "c-4",
        f"IG{4:032x}",
        "4",
        "failed",
        "",
        "id-4",
        "5",
        "1",
        "503",
        "20503",
        "Service unavailable",
        "RQ4",
        "c-4",
        "absent",
        "",
        "4",
    ]
    assert [record[len(CARRIED) + 1] for record in results[1:]] == [
        "created",
        "existing",
        "invalid",
        "failed",
        "not_attempted",
    ]


def test_keys_are_written_so_a_spreadsheet_keeps_them(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path, CARRIED, factories(keys=True))
    files.add(0, row(1, key="00123"), Outcome(Status.FAILED, error_message="x"))
    files.close()

    (errors,) = read_csv(files.errors_path)[1:]
    assert errors[0] == "'00123"  # customer_id
    assert errors[ERROR_COLUMNS.index("row_key") + len(CARRIED)] == "'00123"


def test_amend_rewrites_the_final_check_into_results_only(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path, CARRIED, factories(keys=True))
    created = Outcome(Status.CREATED, conversation_sid=SID, ambiguous_attempts=1)
    files.add(0, row(1, key="00123"), created)
    files.add(1, row(2), Outcome(Status.FAILED, error_message="x"))
    files.close()
    errors_before = files.errors_path.read_bytes()
    amended = Outcome(
        Status.CREATED,
        conversation_sid=SID,
        lookup=LookupResult.DUPLICATES,
        duplicate_sids=(OTHER_SID,),
        error_message="2 web chats exist for this identity",
    )

    files.amend({"00123": amended})

    results = read_csv(files.results_path)
    first = dict(zip(results[0], results[1], strict=True))
    assert (first["lookup"], first["duplicate_sids"], first["error_message"]) == (
        "duplicates",
        OTHER_SID,
        "2 web chats exist for this identity",
    )
    assert first["row_key"] == "'00123"  # still written so a spreadsheet keeps it
    assert results[2][len(CARRIED) + 1] == "failed"
    assert files.errors_path.read_bytes() == errors_before


def row_and(number: int, outcome: Outcome) -> tuple[Row, Outcome]:
    return row(number), outcome


def test_tally_counts_statuses_reasons_lookups_and_causes() -> None:
    tally = Tally()
    added = [
        row_and(1, Outcome(Status.CREATED, conversation_sid=SID)),
        row_and(2, Outcome(Status.CREATED, ambiguous_attempts=1, lookup=LookupResult.FOUND)),
        row_and(3, Outcome(Status.EXISTING)),
        row_and(4, Outcome(Status.INVALID, error_code="invalid_address_sid")),
        row_and(5, Outcome(Status.INVALID, error_code="invalid_address_sid")),
        row_and(6, Outcome(Status.INVALID, error_code="duplicate_customer_id")),
        row_and(
            7,
            Outcome(
                Status.FAILED,
                error_code="lookup_failed",
                ambiguous_attempts=2,
                lookup=LookupResult.FAILED,
            ),
        ),
        row_and(8, Outcome(Status.FAILED, http_status=503, error_code="20503")),
        row_and(9, Outcome(Status.NOT_ATTEMPTED, error_message="not sent")),
    ]
    for counted_row, outcome in added:
        tally.add(counted_row, outcome)

    assert tally.done == 9
    assert tally.errors == 6
    assert tally.status_counts() == {
        "created": 2,
        "existing": 1,
        "invalid": 3,
        "failed": 2,
        "not_attempted": 1,
    }
    assert list(tally.status_counts()) == [status.value for status in Status]
    assert tally.invalid_reasons == {"invalid_address_sid": 2, "duplicate_customer_id": 1}
    assert tally.ambiguous_rows == 2
    assert tally.lookup_counts() == {"found": 1, "absent": 0, "duplicates": 0, "failed": 1}
    causes = {cause.code: cause.count for cause in tally.causes.causes()}
    assert causes == {
        "invalid_address_sid": 2,
        "duplicate_customer_id": 1,
        "lookup_failed": 1,
        "20503": 1,
        "not_attempted": 1,
    }
    assert tally.causes.total == tally.errors


def test_amend_moves_a_row_from_one_lookup_count_to_another() -> None:
    tally = Tally()
    before = Outcome(Status.CREATED, conversation_sid=SID, ambiguous_attempts=1)
    tally.add(row(1), before)
    after = Outcome(
        Status.CREATED,
        conversation_sid=SID,
        lookup=LookupResult.DUPLICATES,
        duplicate_sids=(OTHER_SID,),
    )

    tally.amend(before, after)
    tally.amend(after, Outcome(Status.CREATED, lookup=LookupResult.FOUND))

    assert tally.lookup_counts() == {"found": 1, "absent": 0, "duplicates": 0, "failed": 0}
    assert tally.status_counts()["created"] == 1  # amending changes no status


def a_summary(**changes: Any) -> Summary:
    """A finished run's summary of three created rows; `changes` replace fields."""
    summary = Summary(
        run_id="run-1",
        input="customers.csv",
        started_at="2026-11-25T10:00:00Z",
        ended_at="2026-11-25T10:01:00Z",
        duration_seconds=60.0,
        rows=3,
        counts={"created": 3},
        invalid_reasons={},
        requests_sent=3,
        exit_code=0,
        stop_reason="",
        dry_run=False,
        warnings=[],
        forced_rows=0,
        ambiguous_rows=0,
        in_flight_from_earlier_runs=0,
        rate=Rate(requested=5.0),
        base_url="https://flex-api.twilio.com",
        ledger="ledger.db",
        files={"results.csv": "results.csv"},
        rerun_command="provisioner create customers.csv",
        lookups={LookupResult.FOUND: 0},
    )
    return replace(summary, **changes)


def test_summary_json_holds_every_field(tmp_path: Path) -> None:
    summary = a_summary()

    summary.write(tmp_path / "summary.json")

    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["run_id"] == "run-1"
    assert written["counts"] == {"created": 3}
    assert written["lookups"] == {"found": 0}
    assert written["timeline"] == []
    assert list(tmp_path.iterdir()) == [tmp_path / "summary.json"]  # no temporary file left


def test_the_redacting_filter_removes_secrets_from_any_record() -> None:
    record = logging.LogRecord(
        "provisioner", logging.INFO, __file__, 1, "auth %s failed for %s", ("s3cr3t", "AC1"), None
    )

    assert RedactingFilter(["s3cr3t", ""]).filter(record)
    assert record.getMessage() == "auth [redacted] failed for AC1"


@pytest.mark.parametrize(
    ("rate", "limits", "learnt"),
    [
        # Asked 50/s and 4 in flight; the rate was only guessed down (never settled): nothing.
        (
            {"requested": 50.0, "settled": 50.0, "final": 12.5},
            {"concurrency_requested": 4, "concurrency_settled": 4},
            [],
        ),
        # A rate measured under the server's, and the concurrency a 429 showed too high.
        (
            {"requested": 200.0, "settled": 39.64, "final": 40.1},
            {"concurrency_requested": 8, "concurrency_settled": 1},
            ["--rate", "39.6", "--concurrency", "1"],
        ),
        # No rate asked (--rate 0), one measured.
        (
            {"requested": None, "settled": 12.0},
            {"concurrency_requested": 4, "concurrency_settled": 4},
            ["--rate", "12.0"],
        ),
        # A rate dropped again because the concurrency limit held the run back anyway.
        (
            {"requested": 5.0, "settled": None},
            {"concurrency_requested": 8, "concurrency_settled": 8},
            ["--rate", "0"],
        ),
        ({}, {}, []),  # an old or hand-made summary: nothing to go by
    ],
)
def test_only_limits_the_run_learnt_are_advised(
    rate: dict[str, Any], limits: dict[str, Any], learnt: list[str]
) -> None:
    assert learnt_options(Rate(**rate), ConcurrencyLimits(**limits)) == learnt


def summary_throttled(rate: dict[str, Any], limits: dict[str, Any]) -> Summary:
    return a_summary(
        rows=5,
        counts={status.value: 5 * (status is Status.CREATED) for status in Status},
        requests_sent=10,
        rate=Rate(throttled_429=5, **rate),
        limits=ConcurrencyLimits(**limits),
        files={name: name for name in ("results.csv", "errors.csv", "report", "summary")},
        rerun_command="",
        lookups={},
    )


def test_the_end_of_a_throttled_run_advises_what_it_learnt_or_nothing() -> None:
    nothing = summary_throttled(
        {"requested": 50.0, "settled": 50.0, "final": 12.5},
        {"concurrency_requested": 4, "concurrency_settled": 4},
    )
    learnt = summary_throttled(
        {"requested": 5.0, "settled": 5.0, "final": 5.0},
        {"concurrency_requested": 8, "concurrency_settled": 1},
    )

    assert "Twilio throttled 5 requests (429)" in [line for _, line in end_of_run(nothing)]
    assert (
        False,
        "Twilio throttled 5 requests (429); the run learnt --concurrency 1: pass this next time",
    ) in end_of_run(learnt)


# ---------------------------------------------------------------- which files a run writes


def factories_for(path: Path, *, xlsx: bool = False) -> dict[str, WriterFactory]:
    checked = read_input(Reading(path), path)
    return writer_factories(xlsx, path, checked.table, checked.columns)


def test_a_csv_input_gets_csv_results_and_workbooks_only_when_asked(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("customer_id,AddressSid\nC1,IG" + "1" * 32 + "\n", encoding="utf-8")

    assert set(factories_for(source)) == {".csv"}
    assert set(factories_for(source, xlsx=True)) == {".csv", ".xlsx"}
    csv_factory = factories_for(source)[".csv"]
    assert isinstance(csv_factory, partial)
    assert set(csv_factory.keywords["key_columns"]) == {ROW_KEY, "customer_id"}  # kept text


def test_a_workbook_input_gets_workbooks_too(tmp_path: Path) -> None:
    source = tmp_path / "in.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["customer_id", "AddressSid"])
    sheet.append(["C1", "IG" + "1" * 32])
    workbook.save(source)

    assert set(factories_for(source)) == {".csv", ".xlsx"}


def test_a_file_fed_back_from_a_folder_with_workbooks_keeps_writing_them(tmp_path: Path) -> None:
    errors = tmp_path / "errors.csv"
    header = ["customer_id", "AddressSid", *ERROR_COLUMNS]
    with errors.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerow(["C1", "IG" + "1" * 32, *("" for _ in ERROR_COLUMNS)])
    assert read_input(Reading(errors), errors).columns.fed_back

    assert set(factories_for(errors)) == {".csv"}
    (tmp_path / ERRORS_WORKBOOK).write_bytes(b"")  # the run that wrote it wrote workbooks
    assert set(factories_for(errors)) == {".csv", ".xlsx"}
