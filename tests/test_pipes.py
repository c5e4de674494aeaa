"""Output into a closed pipe (issue 24, item 6): every command ends quietly, exit 141.

Real processes writing into real pipes whose reading end is closed before they start, so the
first write fails every time (no race with a reader such as `head`), and a shell pipeline too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from provisioner.emulator import Emulator
from provisioner.errors import ExitCode
from tests.conftest import CUSTOMER_HEADER, customers, no_machine_settings, read_csv, write_csv

PROVISIONER = Path(sys.executable).parent / "provisioner"  # the installed console script
WAIT_LIMIT = 60.0  # seconds a command may take before the test gives up on it
INPUT = "in.csv"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with an input and a ledger that has a run, and no settings from the machine."""
    no_machine_settings(monkeypatch)
    write_csv(tmp_path / INPUT, CUSTOMER_HEADER, customers(3))
    first = run([INPUT, "--sandbox"], tmp_path, command="create")
    assert first.returncode == 0, first.stderr
    return tmp_path


def run(
    arguments: Sequence[str],
    cwd: Path,
    *,
    command: str = "",
    stdout: int | None = subprocess.DEVNULL,
    stderr: int | None = subprocess.PIPE,
) -> subprocess.CompletedProcess[str]:
    """`provisioner [COMMAND] ARGUMENTS` as a real process."""
    words = [str(PROVISIONER), *([command] if command else []), *arguments]
    return subprocess.run(
        words, cwd=cwd, stdout=stdout, stderr=stderr, text=True, timeout=WAIT_LIMIT, check=False
    )


def into_closed_pipe(
    arguments: Sequence[str], cwd: Path, *, stream: str = "stdout"
) -> subprocess.CompletedProcess[str]:
    """Run with `stream` a pipe nobody reads: its reading end closed before the process starts."""
    reading, writing = os.pipe()
    os.close(reading)
    try:
        if stream == "stdout":
            return run(arguments, cwd, stdout=writing)
        return run(arguments, cwd, stderr=writing)
    finally:
        os.close(writing)


# Every command, with what it prints on stdout: help, version, status, a plan, a run's summary.
STDOUT_COMMANDS = {
    "help": ["--help"],
    "version": ["--version"],
    "create-help": ["create", "--help"],
    "status-help": ["status", "--help"],
    "reconcile-help": ["reconcile", "--help"],
    "emulator-help": ["emulator", "--help"],
    "status": ["status"],
    "status-json": ["status", "--json"],
    "dry-run-json": ["create", INPUT, "--dry-run", "--json"],
    "create-json": ["create", INPUT, "--sandbox", "--json"],
}


@pytest.mark.slow
@pytest.mark.parametrize("arguments", STDOUT_COMMANDS.values(), ids=STDOUT_COMMANDS.keys())
def test_stdout_into_a_closed_pipe_ends_quietly(workdir: Path, arguments: list[str]) -> None:
    ended = into_closed_pipe(arguments, workdir)

    assert ended.returncode == ExitCode.BROKEN_PIPE
    assert int(ExitCode.BROKEN_PIPE) == 141  # 128 + SIGPIPE, as a shell reports it
    assert "Traceback" not in ended.stderr
    assert "internal error" not in ended.stderr
    assert "BrokenPipe" not in ended.stderr


@pytest.mark.slow
def test_a_run_whose_json_meets_a_closed_pipe_has_done_its_work(workdir: Path) -> None:
    write_csv(workdir / "more.csv", CUSTOMER_HEADER, customers(4, start=10))

    ended = into_closed_pipe(
        ["create", "more.csv", "--sandbox", "--json", "--run-id", "r2"], workdir
    )

    assert ended.returncode == 141
    rows = read_csv(workdir / "outputs" / "r2" / "results.csv")
    assert [row["status"] for row in rows] == ["created"] * 4
    assert (workdir / "outputs" / "r2" / "summary.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "arguments",
    [["create", INPUT, "--dry-run"], ["create", INPUT, "--sandbox"], ["emulator", "--port", "0"]],
)
def test_people_lines_into_a_closed_pipe_end_quietly(workdir: Path, arguments: list[str]) -> None:
    ended = into_closed_pipe(arguments, workdir, stream="stderr")

    assert ended.returncode == 141


@pytest.mark.slow
def test_a_run_whose_lines_meet_a_closed_pipe_goes_on_to_its_end(workdir: Path) -> None:
    write_csv(workdir / "more.csv", CUSTOMER_HEADER, customers(50, start=10))

    ended = into_closed_pipe(
        ["create", "more.csv", "--sandbox", "--run-id", "r2"], workdir, stream="stderr"
    )

    assert ended.returncode == 141
    run = workdir / "outputs" / "r2"
    assert [row["status"] for row in read_csv(run / "results.csv")] == ["created"] * 50
    summary = json.loads((run / "summary.json").read_text())
    assert summary["exit_code"] == 0  # the run itself went to its end: every row created
    assert (run / "report.html").is_file()


@pytest.mark.slow
def test_reconcile_into_a_closed_pipe_ends_quietly(workdir: Path, emulator: Emulator) -> None:
    reading, writing = os.pipe()
    os.close(reading)
    try:
        ended = subprocess.run(
            [str(PROVISIONER), "reconcile", INPUT, "--base-url", emulator.url],
            cwd=workdir,
            env={**os.environ, **emulator.credentials_env()},
            stdout=subprocess.DEVNULL,
            stderr=writing,
            timeout=WAIT_LIMIT,
            check=False,
        )
    finally:
        os.close(writing)

    assert ended.returncode == 141


@pytest.mark.slow
@pytest.mark.parametrize(
    "pipeline",
    [
        "provisioner status | head -1",
        "provisioner status | true",
        "provisioner create in.csv --dry-run --json | true",
    ],
)
def test_shell_pipelines_that_stop_reading_report_no_bug(workdir: Path, pipeline: str) -> None:
    # pipefail: the shell reports provisioner's own code, not the reader's.
    ended = subprocess.run(
        ["bash", "-o", "pipefail", "-c", pipeline],
        cwd=workdir,
        env={**os.environ, "PATH": f"{PROVISIONER.parent}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=WAIT_LIMIT,
        check=False,
    )

    # `true` may exit before or after the output is written; either way no bug is reported.
    assert ended.returncode in (0, 141), ended.stderr
    assert "Traceback" not in ended.stderr
    assert "internal error" not in ended.stderr
