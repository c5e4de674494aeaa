"""The operator's loop, second pass (issue 24), each point through the real CLI.

A lookup cut short by Ctrl-C; progress that counts rows as they finish; the README's worked
example (errors.xlsx fixed in a spreadsheet and fed back by the printed line); the cron line's
exit code under `timeout --preserve-status`.
"""

from __future__ import annotations

import csv
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner
from openpyxl.worksheet.worksheet import Worksheet

from provisioner.causes import explain
from provisioner.cells import unescape_cell
from provisioner.cli import cli
from provisioner.config import CREDENTIALS_STAY
from provisioner.emulator import Emulator, Fault
from provisioner.endpoints import Credentials
from provisioner.ledger_runs import read_status
from provisioner.run import RunOptions, create
from provisioner.runtime import Progress, Runtime
from provisioner.vocabulary import ErrorCode, Status
from tests.conftest import (
    CUSTOMER_HEADER,
    LAG_WAIT,
    no_machine_settings,
    read_csv,
    read_summary,
    said,
    sid,
    write_csv,
)
from tests.run_checks import wait_until

WAIT_LIMIT = 30.0  # seconds any wait for a real process gives up after
POLL = 0.01  # seconds between looks at a process or a server
VENV_BIN = Path(sys.executable).parent  # where the `provisioner` script a shell runs lives


@pytest.fixture(autouse=True)
def _clean_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No provisioner.toml or PROVISIONER_* variable from the machine leaks into a test."""
    monkeypatch.chdir(tmp_path)
    no_machine_settings(monkeypatch)


def start(arguments: Sequence[str], emulator: Emulator, cwd: Path) -> subprocess.Popen[str]:
    """`provisioner create ARGUMENTS` against `emulator`, as a real process (stderr a pipe)."""
    return subprocess.Popen(
        [sys.executable, "-m", "provisioner", "create", *arguments, "--base-url", emulator.url],
        env={**os.environ, **emulator.credentials_env()},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- item 4: a lookup cut short by Ctrl-C is `stopped`, not a failed lookup ---------------------


@pytest.mark.slow
def test_a_lookup_cut_short_by_ctrl_c_is_stopped_and_the_next_run_settles_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    rows = [[f"C{n}", sid(100 + n), f"Customer {n}"] for n in range(1, 4)]
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, rows)
    emulator.script(sid(101), Fault(drop=True, create=True))  # created, the answer lost
    # The lost answer's row waits a minute for Twilio's index: Ctrl-C comes during that wait.
    first = start([str(source), "--run-id", "r1", "--lookup-lag", "60"], emulator, tmp_path)
    wait_until(lambda: len(emulator.created) == len(rows), first, "every row sent")
    time.sleep(0.5)  # the other rows' answers reach the run
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=WAIT_LIMIT)

    assert first.returncode == 3, stderr
    run = tmp_path / "outputs" / "r1"
    by_key = {row["customer_id"]: row for row in read_csv(run / "results.csv")}
    lost = by_key["C1"]
    assert (lost["status"], lost["error_code"], lost["lookup"]) == ("failed", ErrorCode.STOPPED, "")
    assert lost["ambiguous_attempts"] == "1"
    summary = read_summary(run)
    assert summary["lookups"]["failed"] == 0  # no lookup failed: none was made
    assert [cause["code"] for cause in summary["causes"]] == [ErrorCode.STOPPED]
    assert "Conversations" not in stderr  # no permission advice: Twilio refused nothing
    # One lookup a row before its first send (a new ledger), none for the lost answer.
    assert emulator.lookups == len(rows)
    assert sum(read_status(tmp_path / "outputs" / "ledger.sqlite").unsettled.values()) == 1

    again = start([str(source), "--run-id", "r2", "--lookup-lag", "0"], emulator, tmp_path)
    _, stderr = again.communicate(timeout=WAIT_LIMIT)

    assert again.returncode == 0, stderr
    second = {row["customer_id"]: row for row in read_csv(tmp_path / "outputs/r2/results.csv")}
    assert (second["C1"]["status"], second["C1"]["lookup"]) == ("created", "found")
    assert Counter(chat.parameters["AddressSid"] for chat in emulator.created) == Counter(
        {sid(101): 1, sid(102): 1, sid(103): 1}
    )
    assert sum(read_status(tmp_path / "outputs" / "ledger.sqlite").unsettled.values()) == 0


# --- item 5: progress counts rows as they finish, whatever their order ---------------------------


def test_a_row_waiting_out_the_lookup_lag_does_not_hold_the_count_back(
    emulator: Emulator, tmp_path: Path
) -> None:
    rows = [[f"C{n}", sid(200 + n), f"Customer {n}"] for n in range(1, 7)]
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, rows)
    emulator.script(sid(201), Fault(drop=True, create=True))  # the first row waits for the index
    snapshots: list[Progress] = []
    others = len(rows) - 1

    def sleep(seconds: float) -> None:
        """Backoffs take no time; the first row's wait for the index lasts until the rows
        after it have finished (or the test gives up)."""
        if seconds <= LAG_WAIT:
            return
        deadline = time.monotonic() + WAIT_LIMIT
        while not any(s.done == others for s in snapshots) and time.monotonic() < deadline:
            time.sleep(POLL)

    options = RunOptions(
        source, tmp_path / "outputs", run_id="r1", rate=None, base_url=emulator.url,
        conversations_url=emulator.url, lookup_lag=10.0,
    )  # fmt: skip
    runtime = Runtime(sleep=sleep, env=emulator.credentials_env(), progress=snapshots.append)

    summary = create(options, runtime, Credentials.from_env(emulator.credentials_env()))

    assert summary.exit_code == 0
    while_waiting = [s for s in snapshots if s.done == others]
    assert while_waiting, [s.done for s in snapshots]
    assert while_waiting[0].counts == {Status.CREATED: others}
    assert snapshots[-1].done == len(rows)


# --- item 1: the README's worked example, as written ----------------------------------------------

MAPPING = [
    "--column", "AddressSid=Address",
    "--column", "CustomerFriendlyName=Customer Name",
    "--column", "pre_engagement.email=Email",
]  # fmt: skip
UNKNOWN = sid(404)  # an address the account does not have: Twilio answers 20404
# Customer ID -> Address as the sheet first has it, and as the operator fixes it.
FIRST = {"00101": sid(1), "00102": "IG123", "00103": UNKNOWN, "00104": "not-an-sid",
         "00105": sid(5), "00106": sid(6)}  # fmt: skip
FIXED = {"00102": sid(2), "00103": sid(3), "00104": sid(4)}
RUNS = ("plan", "r1")  # the run folders of the README's two commands


def onboarding_sheet(path: Path) -> Path:
    """onboarding.xlsx: a title row, then Customer ID | Address | Customer Name | Email."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert isinstance(sheet, Worksheet)
    sheet.append(["Onboarding, December"])
    sheet.append(["Customer ID", "Address", "Customer Name", "Email"])
    for key, address in FIRST.items():
        sheet.append([key, address, f"Customer {key}", f"c{key}@example.com"])
    sheet.column_dimensions["A"].number_format = "@"
    for row in sheet.iter_rows(min_row=3, max_col=1):
        row[0].number_format = "@"  # the IDs are text, as a careful operator types them
    workbook.save(path)
    return path


def shell(line: str, cwd: Path, emulator: Emulator) -> subprocess.CompletedProcess[str]:
    """Run a printed command line as an operator pastes it into bash."""
    return subprocess.run(
        line,
        shell=True,
        executable="/bin/bash",
        cwd=cwd,
        env={
            **os.environ,
            **emulator.credentials_env(),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        },
        capture_output=True,
        text=True,
        timeout=WAIT_LIMIT,
        check=False,
    )


def rerun_lines(stderr: str) -> dict[str, str]:
    """The printed `rerun the rest` commands, by the file each feeds back."""
    commands = [
        line.partition(": ")[2] for line in said(stderr) if line.startswith("rerun the rest")
    ]
    return {Path(shlex.split(command)[2]).name: command for command in commands}


def fix_in_a_spreadsheet(path: Path, fixes: dict[str, str]) -> None:
    """Open errors.xlsx, type the right Address over the wrong ones, save it as .xlsx."""
    workbook = openpyxl.load_workbook(path)
    sheet = workbook.active
    assert isinstance(sheet, Worksheet)
    header = [cell.value for cell in sheet[1]]
    key_at, address_at = header.index("Customer ID") + 1, header.index("Address") + 1
    for number in range(2, sheet.max_row + 1):
        key = str(sheet.cell(number, key_at).value)
        if key in fixes:
            sheet.cell(number, address_at).value = fixes[key]
    workbook.save(path)


def first_run(emulator: Emulator, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The README's two commands: the dry run, then the run with 2 invalid rows and a 20404."""
    emulator.unknown_addresses.add(UNKNOWN)
    source = onboarding_sheet(tmp_path / "onboarding.xlsx")
    create = ["provisioner", "create", source.name, "--base-url", emulator.url, *MAPPING]
    plan = shell(shlex.join([*create, "--dry-run", "--run-id", "plan"]), tmp_path, emulator)
    assert plan.returncode == 1, plan.stderr  # two rows invalid, nothing sent
    assert emulator.requests == 0
    run = shell(shlex.join([*create, "--run-id", "r1"]), tmp_path, emulator)
    assert run.returncode == 1, run.stderr
    summary = read_summary(tmp_path / "outputs" / "r1")
    assert summary["invalid_reasons"] == {"invalid_address_sid": 2}
    assert [(cause["code"], cause["count"]) for cause in summary["causes"]] == [
        ("invalid_address_sid", 2),
        ("20404", 1),
    ]
    (files_line,) = [line for line in said(run.stderr) if line.startswith("errors:")]
    assert str(Path("outputs/r1/errors.xlsx")) in files_line  # the file people are told to edit
    return tmp_path / "outputs" / "r1", rerun_lines(run.stderr)


def sent_to(emulator: Emulator) -> Counter[tuple[str, str]]:
    """Web chats created, by (customer name, address)."""
    return Counter(
        (chat.parameters["CustomerFriendlyName"], chat.parameters["AddressSid"])
        for chat in emulator.created
    )


@pytest.mark.slow
def test_the_readme_worked_example_fixing_errors_xlsx_and_running_the_printed_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    run_dir, lines = first_run(emulator, tmp_path)

    # The line names the file the README says to edit; the CSV's line is there, told apart.
    assert list(lines) == ["errors.xlsx", "errors.csv"]
    assert shlex.split(lines["errors.xlsx"])[2] == str(Path("outputs/r1/errors.xlsx"))
    assert "--xlsx" in shlex.split(lines["errors.csv"])
    assert read_summary(run_dir)["rerun_command"] == lines["errors.xlsx"]

    fix_in_a_spreadsheet(run_dir / "errors.xlsx", FIXED)
    rerun = shell(lines["errors.xlsx"], tmp_path, emulator)

    assert rerun.returncode == 0, rerun.stderr
    (second,) = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir() and p.name not in RUNS]
    summary = read_summary(second)
    assert summary["requests_sent"] == len(FIXED)  # only the fixed rows were sent
    assert summary["counts"]["created"] == len(FIXED)
    # Every customer has exactly one web chat, at the right address; the 404 one too.
    assert sent_to(emulator) == Counter(
        {(f"Customer {key}", {**FIRST, **FIXED}[key]): 1 for key in FIRST}
    )
    results = read_csv(second / "results.csv")
    assert {unescape_cell(r["Customer ID"]): r["source_row"] for r in results} == {
        "00102": "4", "00103": "5", "00104": "6"  # the original sheet's rows
    }  # fmt: skip
    assert (second / "results.xlsx").is_file()  # still a loop in workbooks


@pytest.mark.slow
def test_feeding_errors_csv_back_keeps_writing_workbooks(
    emulator: Emulator, tmp_path: Path
) -> None:
    _, lines = first_run(emulator, tmp_path)

    rerun = shell(lines["errors.csv"], tmp_path, emulator)  # nothing fixed: the same rows fail

    assert rerun.returncode == 1, rerun.stderr
    (second,) = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir() and p.name not in RUNS]
    assert (second / "errors.xlsx").is_file()
    assert list(rerun_lines(rerun.stderr)) == ["errors.xlsx", "errors.csv"]
    assert read_summary(second)["requests_sent"] == 1  # the 404 row; the invalid ones never


@pytest.mark.slow
def test_errors_xlsx_saved_as_csv_beside_it_keeps_writing_workbooks(
    emulator: Emulator, tmp_path: Path
) -> None:
    run_dir, _ = first_run(emulator, tmp_path)
    fix_in_a_spreadsheet(run_dir / "errors.xlsx", FIXED)
    sheet = openpyxl.load_workbook(run_dir / "errors.xlsx").active
    assert isinstance(sheet, Worksheet)
    saved = run_dir / "errors fixed.csv"  # File > Save As > CSV, in the same folder
    with saved.open("w", newline="", encoding="utf-8") as stream:
        csv.writer(stream).writerows(
            ["" if value is None else value for value in row] for row in sheet.values
        )
    typed = ["provisioner", "create", str(saved.relative_to(tmp_path)), "--base-url",
             emulator.url, *MAPPING]  # fmt: skip

    rerun = shell(shlex.join(typed), tmp_path, emulator)

    assert rerun.returncode == 0, rerun.stderr
    (second,) = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir() and p.name not in RUNS]
    assert (second / "results.xlsx").is_file()
    assert read_summary(second)["counts"]["created"] == len(FIXED)


# --- item 9: the cron line's exit code ------------------------------------------------------------

TIMEOUT = shutil.which("timeout")  # GNU coreutils' timeout, as the README's cron line uses it
# Seconds `timeout` gives the run: never reached. The test ends the time itself once the run is
# sending (SIGALRM is how `timeout` learns its time is up): a fixed 2 s could end, on a busy
# machine, a run still importing its modules, which no handler of ours can answer yet.
CRON_LIMIT = "600"


@pytest.mark.slow
@pytest.mark.skipif(TIMEOUT is None, reason="coreutils' timeout is not installed here")
@pytest.mark.parametrize(("preserve", "exit_code"), [(True, 3), (False, 124)])
def test_the_cron_lines_timeout_keeps_the_jobs_exit_code_with_preserve_status(
    emulator: Emulator, tmp_path: Path, preserve: bool, exit_code: int
) -> None:
    emulator.latency = 0.3  # a slow server: the run cannot finish in time
    rows = [[f"C{n}", sid(n), f"Customer {n}"] for n in range(200)]
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, rows)
    line = [str(TIMEOUT), *(["--preserve-status"] if preserve else []), CRON_LIMIT,
            str(VENV_BIN / "provisioner"), "create", str(source), "--quiet", "--rate", "2",
            "--run-id", "nightly", "--base-url", emulator.url]  # fmt: skip

    process = subprocess.Popen(
        line,
        env={**os.environ, **emulator.credentials_env()},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: emulator.requests > 0, process, "sending")

    process.send_signal(signal.SIGALRM)  # `timeout`'s time is up now
    _, stderr = process.communicate(timeout=WAIT_LIMIT)

    assert process.returncode == exit_code, stderr
    summary = read_summary(tmp_path / "outputs" / "nightly")
    assert summary["exit_code"] == 3  # the job itself always said: stopped early
    assert "SIGTERM" in summary["stop_reason"]
    assert summary["counts"]["not_attempted"] > 0


# --- item 10: every text that names an API key's variables names the account's SID too ----------


def api_key_ways(text: str) -> list[str]:
    """Each place a text says how to authenticate with an API key, with what follows it."""
    flat = " ".join(text.split())
    way = "TWILIO_API_KEY + TWILIO_API_SECRET"
    return [flat[at : at + len(way) + 25] for at in range(len(flat)) if flat.startswith(way, at)]


def test_every_text_naming_an_api_key_names_the_account_sid_too() -> None:
    help_text = CliRunner().invoke(cli, ["create", "--help"]).output
    missing = CliRunner().invoke(cli, ["create", "in.csv"], env={"TWILIO_API_KEY": "SK1"})
    texts = {
        "create --help": help_text,
        "settings file refusal": CREDENTIALS_STAY,
        "missing credentials": missing.output,
        "20003's next step": explain("20003", "failed", "").next_step,
        "401's next step": explain("", "failed", "", http_status=401).next_step,
    }

    for where, text in texts.items():
        ways = api_key_ways(text)
        assert ways, (where, text)
        assert all("TWILIO_ACCOUNT_SID" in way for way in ways), (where, ways)
