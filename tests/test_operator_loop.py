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

from provisioner.emulator import Emulator, Fault
from provisioner.ledger import read_status
from provisioner.outcome import STOPPED
from tests.conftest import CUSTOMER_HEADER, read_csv, read_summary, sid, write_csv

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
