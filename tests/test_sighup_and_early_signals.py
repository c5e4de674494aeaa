"""SIGHUP mid-run, and SIGHUP or SIGTERM while the input is still read: exit 3, every file,
no copy of the customer data left behind.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest

from provisioner.ledger_runs import read_status
from tests.conftest import (
    CUSTOMER_HEADER,
    Cli,
    customers,
    write_csv,
)
from tests.run_checks import (
    SEED,
    assert_no_secret,
    check_run,
    finish,
    no_secret_in_any_file,  # noqa: F401  (autouse: no secret in any file a test leaves)
    run_args,
    start,
    wait_until,
)


@pytest.mark.slow
def test_sighup_is_handled_like_sigterm(provisioner: Cli, tmp_path: Path) -> None:
    rows = 400
    provisioner.emulator.latency = 0.005
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))
    process = start(
        run_args(provisioner.emulator, source, provisioner.out, "r1", "--concurrency", "2"),
        provisioner.env(),
    )
    wait_until(
        lambda: len(provisioner.emulator.created) >= random.Random(SEED + 1).randint(5, 50),
        process,
    )

    process.send_signal(signal.SIGHUP)
    stdout, stderr = finish(process)

    assert process.returncode == 3, stderr
    assert "SIGHUP" in stderr  # the signal that stopped it is named
    results = check_run(provisioner.run_dir("r1"), rows=rows, exit_code=3)
    statuses = Counter(r["status"] for r in results)
    assert set(statuses) <= {"created", "not_attempted"}
    assert statuses["not_attempted"] > 0
    assert statuses["created"] == len(provisioner.emulator.created)
    assert read_status(provisioner.out / "ledger.sqlite").unsettled == {}
    assert_no_secret(provisioner.emulator.username, [stdout, stderr], provisioner.out)


BIG_INPUT_ROWS = 200_000  # seconds to read and check: time for a signal to land in that phase


def _staging_copy(pid: int) -> Path | None:
    """The input copy a run is reading in its staging folder, from its open files."""
    try:
        targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return None
    return next((Path(t) for t in targets if "provisioner-" in t and t.endswith("input.csv")), None)


@pytest.mark.slow
@pytest.mark.parametrize(
    "signal_number", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"]
)
def test_a_signal_while_the_input_is_checked_exits_3_and_leaves_no_copy(
    provisioner: Cli, tmp_path: Path, signal_number: signal.Signals
) -> None:
    if not Path("/proc/self/fd").exists():
        pytest.skip("needs /proc to see the run's open files")
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(BIG_INPUT_ROWS))
    process = start(
        run_args(provisioner.emulator, source, provisioner.out, "r1"), provisioner.env()
    )
    copies: list[Path] = []

    def reading() -> bool:
        copy = _staging_copy(process.pid)
        if copy is not None:
            copies.append(copy)
        return bool(copies)

    wait_until(reading, process)

    process.send_signal(signal_number)
    _, stderr = finish(process)
    left_behind = copies[0].exists()
    shutil.rmtree(copies[0].parent, ignore_errors=True)  # never leave the test's copy behind

    assert provisioner.emulator.requests == 0
    assert not left_behind, "a copy of the customer data was left in the staging folder"
    assert process.returncode == 3, stderr
    assert "interrupted" in stderr
