"""The operator's loop, second pass (issue 24), each point through the real CLI.

A lookup cut short by Ctrl-C; progress that counts rows as they finish; the README's worked
example (errors.xlsx fixed in a spreadsheet and fed back by the printed line); the cron line's
exit code under `timeout --preserve-status`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from provisioner.client import Credentials
from provisioner.emulator import Emulator, Fault
from provisioner.ledger import read_status
from provisioner.outcome import STOPPED, Status
from provisioner.run import Progress, RunOptions, Runtime, create
from tests.conftest import CUSTOMER_HEADER, LAG_WAIT, read_csv, read_summary, sid, write_csv

WAIT_LIMIT = 30.0  # seconds any wait for a real process gives up after
POLL = 0.01  # seconds between looks at a process or a server


@pytest.fixture(autouse=True)
def _clean_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No provisioner.toml or PROVISIONER_* variable from the machine leaks into a test."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("PROVISIONER_"):
            monkeypatch.delenv(name)


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


def wait_until(condition: Callable[[], bool], what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended before {what}: {process.communicate()}")
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(POLL)


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
    wait_until(lambda: len(emulator.created) == len(rows), "every row was sent", first)
    time.sleep(0.5)  # the other rows' answers reach the run
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=WAIT_LIMIT)

    assert first.returncode == 3, stderr
    run = tmp_path / "outputs" / "r1"
    by_key = {row["customer_id"]: row for row in read_csv(run / "results.csv")}
    lost = by_key["C1"]
    assert (lost["status"], lost["error_code"], lost["lookup"]) == ("failed", STOPPED, "")
    assert lost["ambiguous_attempts"] == "1"
    summary = read_summary(run)
    assert summary["lookups"]["failed"] == 0  # no lookup failed: none was made
    assert [cause["code"] for cause in summary["causes"]] == [STOPPED]
    assert "Conversations" not in stderr  # no permission advice: Twilio refused nothing
    assert emulator.lookups == 0
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
