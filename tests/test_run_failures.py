"""run.py's finishing path: whatever fails after sending started, every row of the input ends
with one status in results.csv, the run has a summary, and a rerun creates each customer once."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.cli import cli
from provisioner.emulator import Emulator
from provisioner.endpoints import Credentials
from provisioner.errors import ExitCode
from provisioner.run import RunOptions, create
from provisioner.runtime import Progress, Runtime
from provisioner.vocabulary import ErrorCode, Status
from tests.conftest import (
    CUSTOMER_HEADER,
    JITTER_SEED,
    Sleeps,
    customers,
    read_csv,
    read_summary,
    said,
    write_csv,
)

ROWS = 12
STATUSES = {status.value for status in Status}


class InjectedError(RuntimeError):
    """The failure a test injects into one piece of the Runtime."""


@dataclass
class SleepsThenFails(Sleeps):
    """Records sleeps (the run's pacing) and raises at call `fail_at`: a failure on a worker."""

    fail_at: int = 3

    def __call__(self, seconds: float) -> None:
        super().__call__(seconds)
        if len(self.calls) == self.fail_at:
            raise InjectedError("the injected sleep broke")


def assert_every_row_once(results: Path, source: Path) -> list[dict[str, str]]:
    """results.csv has each input row once, in input order, each with one known status."""
    rows = read_csv(results)
    assert [row["customer_id"] for row in rows] == [row["customer_id"] for row in read_csv(source)]
    assert all(row["status"] in STATUSES for row in rows), [row["status"] for row in rows]
    return rows


def creations(emulator: Emulator) -> Counter[str]:
    """Web chats created at the emulator, per customer name."""
    return Counter(chat.parameters["CustomerFriendlyName"] for chat in list(emulator.created))


def test_a_failure_on_a_worker_mid_send_still_writes_every_row_and_a_rerun_finishes(
    emulator: Emulator, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))
    out = tmp_path / "outputs"
    base = ["--out", str(out), "--base-url", emulator.url, "--concurrency", "2"]
    runtime = Runtime(
        sleep=SleepsThenFails(), env=emulator.credentials_env(), jitter=random.Random(JITTER_SEED)
    )

    failed = CliRunner().invoke(cli, ["create", str(source), *base, "--run-id", "r1"], obj=runtime)

    assert failed.exit_code == ExitCode.INTERNAL, failed.output
    assert "Traceback" not in failed.output
    rows = assert_every_row_once(out / "r1" / "results.csv", source)
    statuses = Counter(row["status"] for row in rows)
    assert statuses[Status.NOT_ATTEMPTED] >= 1  # the failure stopped the run before the end
    assert set(statuses) <= {Status.CREATED, Status.NOT_ATTEMPTED}
    created = {row["CustomerFriendlyName"] for row in rows if row["status"] == Status.CREATED}
    assert created <= set(creations(emulator))  # a row written created was created
    summary = read_summary(out / "r1")
    assert summary["exit_code"] == ExitCode.INTERNAL
    assert "internal error: InjectedError: the injected sleep broke" in summary["stop_reason"]
    assert sum(summary["counts"].values()) == ROWS
    assert "the injected sleep broke" in (out / "r1" / "run.log").read_text()
    assert any(line.startswith("stopped early: internal error") for line in said(failed.stderr))

    rerun = Runtime(sleep=Sleeps(), env=emulator.credentials_env())
    again = CliRunner().invoke(
        cli, ["create", str(source), *base, "--run-id", "r2", "--lookup-lag", "0"], obj=rerun
    )

    assert again.exit_code == 0, again.output
    assert creations(emulator) == Counter({f"Customer {n}": 1 for n in range(1, ROWS + 1)})
    finished = assert_every_row_once(out / "r2" / "results.csv", source)
    assert {row["status"] for row in finished} <= {Status.CREATED, Status.EXISTING}


class ProgressFails:
    """Progress that raises at its `fail_at`-th report: a failure on the main thread."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.calls = 0

    def __call__(self, progress: Progress) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise InjectedError("the injected progress broke")


@pytest.mark.parametrize("fail_at", [1, 3])
def test_a_failure_on_the_main_thread_mid_send_still_writes_every_row(
    emulator: Emulator, tmp_path: Path, fail_at: int
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))
    options = RunOptions(
        input_path=source,
        out_dir=tmp_path / "outputs",
        run_id="r1",
        concurrency=2,
        base_url=emulator.url,
        conversations_url=emulator.url,
    )
    runtime = Runtime(sleep=Sleeps(), env={}, progress=ProgressFails(fail_at))
    credentials = Credentials.from_env(emulator.credentials_env())

    summary = create(options, runtime, credentials)

    assert summary.exit_code == ExitCode.INTERNAL
    rows = assert_every_row_once(tmp_path / "outputs" / "r1" / "results.csv", source)
    cut_off = [row for row in rows if row["error_code"] == ErrorCode.CUT_OFF]
    assert all(row["status"] == Status.NOT_ATTEMPTED for row in cut_off)
    assert sum(summary.counts.values()) == ROWS
    assert "the injected progress broke" in (summary.stop_reason or "")
    assert (tmp_path / "outputs" / "r1" / "summary.json").is_file()
