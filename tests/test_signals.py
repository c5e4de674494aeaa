"""Real processes, real signals: SIGTERM stops gracefully, SIGKILL loses nothing unflagged."""

from __future__ import annotations

import json
import os
import pty
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import cast

import pytest

from provisioner.dispatch import WINDOW_PER_WORKER
from provisioner.emulator import Emulator
from tests.conftest import CUSTOMER_HEADER, Cli, customers, read_csv, read_summary, write_csv

pytestmark = pytest.mark.slow
ROWS = 1500
CONCURRENCY = 4
SEED = 20261124  # when each signal comes is drawn at random, from this seed: a failure repeats


def start_run(emulator: Emulator, source: Path, out: Path, run_id: str) -> subprocess.Popen[str]:
    env = {**os.environ, **emulator.credentials_env()}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provisioner",
            "create",
            str(source),
            "--out",
            str(out),
            "--run-id",
            run_id,
            "--base-url",
            emulator.url,
            "--rate",
            "0",
            "--concurrency",
            str(CONCURRENCY),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_creations(emulator: Emulator, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while len(emulator.created) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.01)


def creations_per_customer(emulator: Emulator) -> Counter[str]:
    return Counter(chat.parameters["CustomerFriendlyName"] for chat in emulator.created)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_writes_everything_and_the_rerun_finishes_it(
    provisioner: Cli, tmp_path: Path, signal_number: signal.Signals
) -> None:
    provisioner.emulator.latency = 0.005
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))
    process = start_run(provisioner.emulator, source, provisioner.out, "r1")
    wait_for_creations(provisioner.emulator, random.Random(SEED).randint(20, 300), process)

    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 3, stderr
    assert f"interrupted by {signal_number.name}" in stderr
    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert len(rows) == ROWS
    statuses = Counter(r["status"] for r in rows)
    assert set(statuses) <= {"created", "not_attempted"}
    assert statuses["not_attempted"] > 0
    assert len(read_csv(provisioner.run_dir("r1") / "errors.csv")) == statuses["not_attempted"]
    assert read_summary(provisioner.run_dir("r1"))["exit_code"] == 3

    provisioner.emulator.latency = 0
    assert provisioner("create", str(source), "--run-id", "r2", "--rate", "0").exit_code == 0

    assert creations_per_customer(provisioner.emulator) == Counter(
        {f"Customer {n}": 1 for n in range(1, ROWS + 1)}
    )


def test_after_sigkill_the_rerun_looks_up_what_was_in_flight_and_creates_nothing_twice(
    provisioner: Cli, tmp_path: Path
) -> None:
    provisioner.emulator.latency = 0.005
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))
    process = start_run(provisioner.emulator, source, provisioner.out, "r1")
    wait_for_creations(provisioner.emulator, random.Random(SEED + 1).randint(20, 300), process)

    process.kill()
    process.communicate(timeout=30)
    time.sleep(0.1)  # let the emulator answer what was in flight, as Twilio would

    partial = read_csv(provisioner.run_dir("r1") / "results.csv")  # readable after a kill
    # the sheet's row numbers: the header is row 1
    assert [r["row"] for r in partial] == [str(n) for n in range(2, len(partial) + 2)]
    provisioner.emulator.latency = 0
    result = provisioner("create", str(source), "--run-id", "r2", "--rate", "0")
    assert result.exit_code == 0, result.output

    rows = read_csv(provisioner.run_dir("r2") / "results.csv")
    flagged = {r["CustomerFriendlyName"] for r in rows if int(r["ambiguous_attempts"]) > 0}
    counts = creations_per_customer(provisioner.emulator)
    assert set(counts) == {f"Customer {n}" for n in range(1, ROWS + 1)}
    duplicates = {name for name, n in counts.items() if n > 1}
    assert duplicates <= flagged
    assert duplicates == set()  # rows left in flight were looked up before any was sent again
    # At most those in flight or handed to a worker: the dispatcher's window.
    assert len(flagged) <= WINDOW_PER_WORKER * CONCURRENCY
    assert read_summary(provisioner.run_dir("r2"))["in_flight_from_earlier_runs"] == len(flagged)


def test_a_second_run_while_one_is_running_refuses_naming_its_pid(
    provisioner: Cli, tmp_path: Path
) -> None:
    provisioner.emulator.latency = 0.01
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))
    first = start_run(provisioner.emulator, source, provisioner.out, "r1")
    wait_for_creations(provisioner.emulator, 10, first)

    second = start_run(provisioner.emulator, source, provisioner.out, "r2")
    _, refusal = second.communicate(timeout=30)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)

    assert second.returncode == 2
    assert f"another run (pid {first.pid}) is using this ledger" in refusal
    assert not provisioner.run_dir("r2").exists()


PRESS_CTRL_C = b"\x03"  # what the keyboard sends; the terminal makes it SIGINT and echoes `^C`


def test_after_a_ctrl_c_typed_at_a_terminal_the_stopping_line_starts_on_a_fresh_line(
    provisioner: Cli, tmp_path: Path
) -> None:
    provisioner.emulator.latency = 0.005
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))
    terminal, side = pty.openpty()  # a real terminal: a progress bar, and `^C` echoed
    arguments = [
        sys.executable, "-m", "provisioner", "create", str(source), "--out", str(provisioner.out),
        "--run-id", "r1", "--base-url", provisioner.emulator.url, "--rate", "0",
        "--concurrency", str(CONCURRENCY),
    ]  # fmt: skip
    process = subprocess.Popen(
        ["setsid", "--ctty", *arguments],  # the terminal controls it: Ctrl-C reaches it
        env={**os.environ, **provisioner.emulator.credentials_env()},
        stdin=side,
        stdout=side,
        stderr=side,
    )
    os.close(side)
    try:
        wait_for_creations(provisioner.emulator, 50, cast(subprocess.Popen[str], process))
        os.write(terminal, PRESS_CTRL_C)
        shown = read_until_closed(terminal)
    finally:
        os.close(terminal)
    assert process.wait(timeout=30) == 3

    text = shown.decode(errors="replace")
    assert "^C" in text  # the terminal did echo it
    stopping = text.index("stopping: interrupted by SIGINT")
    assert text[stopping - 1] == "\n"  # its own line, not after the `^C`


def read_until_closed(terminal: int) -> bytes:
    """Everything shown on the terminal until the process on it ends (Linux: EIO then)."""
    shown = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([terminal], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(terminal, 1 << 16)
        except OSError:  # the other side closed: the process ended
            break
        if not chunk:
            break
        shown += chunk
    return shown


def test_after_two_signals_only_requests_that_went_out_are_left_unsettled(
    provisioner: Cli, tmp_path: Path
) -> None:
    # Every answer takes long: the first rows' requests are out when the signals come, and the
    # rest of their batch (marked in flight with them) waits in the workers' queue.
    provisioner.emulator.latency = 3.0
    provisioner.knows_the_scope()  # no lookups before the first sends
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))
    process = start_run(provisioner.emulator, source, provisioner.out, "r1")
    wait_for_creations_sent(provisioner.emulator, CONCURRENCY, process)

    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)  # again: stop at once
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 3, stderr
    sent = provisioner.emulator.requests  # the requests that really went out
    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    cut_off = [row for row in rows if row["error_code"] == "cut_off"]
    assert len(cut_off) == sent == CONCURRENCY
    status = json.loads(provisioner("status", "--out", str(provisioner.out), "--json").stdout)
    assert status["unsettled"] == {provisioner.scope: sent}  # not the whole batch marked
    never_sent = [row for row in rows if row["status"] == "not_attempted" and not row["error_code"]]
    assert len(never_sent) == ROWS - sent

    deadline = time.monotonic() + 30  # Twilio would create what reached it: let it finish
    while len(provisioner.emulator.created) < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    provisioner.emulator.latency = 0
    provisioner("create", str(source), "--run-id", "r2", "--rate", "0")
    assert creations_per_customer(provisioner.emulator) == Counter(
        {f"Customer {n}": 1 for n in range(1, ROWS + 1)}
    )  # exactly once: each request cut off was looked up, not sent again


def wait_for_creations_sent(emulator: Emulator, count: int, process: subprocess.Popen[str]) -> None:
    """Until `count` create requests have reached the emulator (answered or not)."""
    deadline = time.monotonic() + 30
    while emulator.requests < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.01)
