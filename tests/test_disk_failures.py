"""An output folder or ledger that cannot be made, a disk that fills mid-run: refused before
any request, or stopped with exit 3, every answer kept and a rerun creating nothing twice.
"""

from __future__ import annotations

import resource
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from openpyxl import Workbook

from provisioner.ledger_runs import read_status
from tests.conftest import (
    CUSTOMER_HEADER,
    Cli,
    customers,
    read_summary,
    write_csv,
)
from tests.run_checks import (
    assert_no_secret,
    check_run,
    creations_per_customer,
    error_lines,
    finish,
    invoke,
    no_secret_in,
    no_secret_in_any_file,  # noqa: F401  (autouse: no secret in any file a test leaves)
    run_args,
    start,
)


@pytest.mark.parametrize("ledger_elsewhere", [False, True], ids=["default-ledger", "own-ledger"])
def test_an_output_folder_that_cannot_be_made_is_refused_before_any_request(
    provisioner: Cli, tmp_path: Path, ledger_elsewhere: bool
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    blocker = tmp_path / "somefile"
    blocker.write_text("a regular file, so nothing can be made under it\n")
    ledger = ["--ledger", str(tmp_path / "ledgers" / "ledger.sqlite")] if ledger_elsewhere else []

    result = invoke(
        provisioner,
        "create",
        str(source),
        "--out",
        str(blocker / "sub"),
        "--base-url",
        provisioner.emulator.url,
        *ledger,
    )

    assert result.exit_code == 2, result.output
    (message,) = error_lines(result)
    assert str(blocker / "sub") in message
    assert "Traceback" not in result.output
    no_secret_in(provisioner, result.output)
    assert provisioner.emulator.requests == 0
    if ledger_elsewhere:
        status = read_status(tmp_path / "ledgers" / "ledger.sqlite")
        assert (status.runs, status.unsettled) == ([], {})


def test_a_ledger_that_cannot_be_made_is_refused_before_any_request(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    blocker = tmp_path / "somefile"
    blocker.write_text("a regular file\n")

    result = provisioner(
        "create", str(source), "--ledger", str(blocker / "ledger.sqlite"), expect=2
    )

    (message,) = error_lines(result)
    assert "ledger" in message
    assert str(blocker) in message
    no_secret_in(provisioner, result.output)
    assert provisioner.emulator.requests == 0


FILE_SIZE_LIMIT = 96 * 1024  # bytes any one file may grow to: the ledger's WAL passes it soon


def _limit_file_size() -> None:
    """In the child: files stop growing past FILE_SIZE_LIMIT, and writes then fail (EFBIG)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def _fill_the_disk(provisioner: Cli, source: Path) -> tuple[subprocess.Popen[str], str, str]:
    """A run whose files cannot grow past FILE_SIZE_LIMIT: the ledger's WAL fills part-way."""
    assert source.stat().st_size < FILE_SIZE_LIMIT  # the input's copy fits
    arguments = run_args(provisioner.emulator, source, provisioner.out, "r1", "--concurrency", "4")
    process = start(arguments, provisioner.env(), preexec=_limit_file_size)
    stdout, stderr = finish(process)
    return process, stdout, stderr


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_keeps_every_answer_and_the_rerun_creates_nothing_twice(
    provisioner: Cli, tmp_path: Path
) -> None:
    rows = 400
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))

    process, stdout, stderr = _fill_the_disk(provisioner, source)

    assert process.returncode == 3, stderr
    assert str(provisioner.out / "ledger.sqlite") in stderr  # the file that failed is named
    assert "Traceback" not in stderr
    assert "internal error" not in stderr
    created_first = len(provisioner.emulator.created)
    assert 0 < created_first < rows  # it did stop part-way
    status = read_status(provisioner.out / "ledger.sqlite")
    # every web chat the server made is recorded, or in flight: looked up before any resend
    assert sum(status.created.values()) + sum(status.unsettled.values()) >= created_first

    provisioner("create", str(source), "--run-id", "r2", "--rate", "0", expect=0)

    check_run(provisioner.run_dir("r2"), rows=rows, exit_code=0)
    assert creations_per_customer(provisioner.emulator) == Counter(
        {f"Customer {n}": 1 for n in range(1, rows + 1)}
    )
    assert_no_secret(provisioner.emulator.username, [stdout, stderr], provisioner.out)


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_stops_it_with_exit_3_and_every_file(
    provisioner: Cli, tmp_path: Path
) -> None:
    rows = 200  # results.csv stays under the file limit; the ledger's WAL does not
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))

    process, _, stderr = _fill_the_disk(provisioner, source)

    assert process.returncode == 3, stderr
    results = check_run(provisioner.run_dir("r1"), rows=rows, exit_code=3)
    assert "not_attempted" in {r["status"] for r in results}
    stop_reason = read_summary(provisioner.run_dir("r1"))["stop_reason"]
    assert str(provisioner.out / "ledger.sqlite") in stop_reason


RESULTS_SIZE_LIMIT = 160 * 1024  # bytes: two rows of results, while the ledger stays far below
WIDE_NOTE = 30_000  # characters per note: under Excel's 32,767 per cell, so a real workbook


def _limit_results(provisioner: Cli, tmp_path: Path) -> tuple[subprocess.Popen[str], str, Path]:
    """A workbook (small, compressed) whose results.csv (its text) outgrows the file limit."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append([*CUSTOMER_HEADER, "Note A", "Note B", "Note C"])
    for row in customers(12):
        sheet.append([*row, *(letter * WIDE_NOTE for letter in "abc")])
    source = tmp_path / "in.xlsx"
    book.save(source)
    assert source.stat().st_size < RESULTS_SIZE_LIMIT

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (RESULTS_SIZE_LIMIT, RESULTS_SIZE_LIMIT))

    arguments = run_args(provisioner.emulator, source, provisioner.out, "r1", "--concurrency", "1")
    process = start(arguments, provisioner.env(), preexec=limit)
    _, stderr = finish(process)
    return process, stderr, source


@pytest.mark.slow
def test_results_that_cannot_be_written_mid_run_lose_no_answer(
    provisioner: Cli, tmp_path: Path
) -> None:
    process, stderr, source = _limit_results(provisioner, tmp_path)

    assert process.returncode != 0, stderr
    assert "Traceback" not in stderr
    no_secret_in(provisioner, stderr)
    created_first = len(provisioner.emulator.created)
    assert 0 < created_first < 12
    status = read_status(provisioner.out / "ledger.sqlite")
    assert sum(status.created.values()) + sum(status.unsettled.values()) >= created_first

    provisioner("create", str(source), "--run-id", "r2", "--rate", "0", expect=0)

    check_run(provisioner.run_dir("r2"), rows=12, exit_code=0)
    assert creations_per_customer(provisioner.emulator) == Counter(
        {f"Customer {n}": 1 for n in range(1, 13)}
    )


@pytest.mark.slow
def test_results_that_cannot_be_written_mid_run_stop_it_with_exit_3(
    provisioner: Cli, tmp_path: Path
) -> None:
    process, stderr, _ = _limit_results(provisioner, tmp_path)

    assert "internal error" not in stderr
    assert process.returncode == 3, stderr
