"""Fixtures: a real emulator on a loopback socket, the real CLI, and helpers for real files."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, settings

from provisioner.cli import cli
from provisioner.emulator import Emulator
from provisioner.rows import IDENTITY_PREFIX
from provisioner.runtime import Runtime
from tests.earlier_run import EARLIER as EARLIER  # the earlier run Cli.knows_the_scope records
from tests.earlier_run import record_earlier_run

JITTER_SEED = 7
SECRET = "s3cr3t-auth-token-never-printed"

# Every random choice in the tests is seeded, hypothesis's examples too: a failure seen once is
# seen again on the next run (hypothesis still shrinks and saves what it finds). No deadline and
# no too-slow check: they time the machine, not the code, and fail on two cores shared by many.
settings.register_profile(
    "seeded",
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("seeded")


def sid(number: int) -> str:
    """A well-formed Address SID, distinct per number."""
    return f"IG{number:032x}"


@dataclass
class Sleeps:
    """An injected sleep that records instead of waiting."""

    calls: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


# Waits longer than this are a lookup's wait for Twilio's index (the lag less the time since the
# lost answer, 10 s by default); the backoffs of a few tries are well below it.
LAG_WAIT = 5.0
READY_LIMIT = 10.0  # seconds a lag wait may really take in a test before it gives up on `ready`
READY_POLL = 0.01  # seconds between checks of `ready`


@dataclass
class SleepsUntilReady(Sleeps):
    """Records sleeps; a lookup's lag wait lasts until `ready()`: the server caught up.

    With sleeping recorded, the lag the tool waits for Twilio's index takes no time, and a
    server still working on a slow request would not have created its web chat yet.
    """

    ready: Callable[[], bool] = lambda: True

    def __call__(self, seconds: float) -> None:
        super().__call__(seconds)
        if seconds > LAG_WAIT:
            deadline = time.monotonic() + READY_LIMIT
            while not self.ready() and time.monotonic() < deadline:
                time.sleep(READY_POLL)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(secret=SECRET, seed=1) as running:
        yield running


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@dataclass
class Cli:
    """Runs `provisioner` in-process against the emulator, with sleeping injected."""

    emulator: Emulator
    sleeps: Sleeps
    workdir: Path

    @property
    def out(self) -> Path:
        return self.workdir / "outputs"

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.emulator.credentials_env(), **extra}

    @property
    def scope(self) -> str:
        """The ledger scope of runs against this emulator: what derived identities hash."""
        return f"{self.emulator.username}@{self.emulator.url.split('//')[1]}"

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        base_url: bool = True,
        expect: int | None = 0,
        known_scope: bool | None = None,
    ) -> Result:
        """Run the CLI; assert it exits with `expect` (None: any code) and show why if not.

        A create against a test's own server (`base_url=False`, its `--base-url` given) starts
        from a ledger that knows that account and host (`known_scope`, on unless told): such a
        server answers only what the test scripts, and a new ledger would look rows up first.
        """
        arguments = [*args]
        if arguments and arguments[0] == "create":
            arguments += ["--out", str(self.out)]
            if base_url and "--sandbox" not in arguments:
                arguments += ["--base-url", self.emulator.url]
            own_server = not base_url and "--base-url" in arguments
            if own_server and (known_scope if known_scope is not None else expect != 2):
                self.knows_the_scope(arguments[arguments.index("--base-url") + 1])
        runtime = Runtime(
            sleep=self.sleeps,
            env=self.env() if env is None else env,
            jitter=random.Random(JITTER_SEED),  # seeded: the backoffs are the same every run
        )
        result = CliRunner().invoke(cli, arguments, obj=runtime, catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, (
                f"{arguments} exited {result.exit_code}, expected {expect}:\n{result.output}"
            )
        return result

    def run_dir(self, run_id: str) -> Path:
        return self.out / run_id

    def knows_the_scope(self, base_url: str | None = None) -> None:
        """Make the fixture's ledger one that an earlier, finished run in this account and host
        wrote (one row, `earlier`), as after a first run: a new ledger's rows are looked up
        before their first send (prelookup.py), which tests of other paths do not expect."""
        ledger_file = self.out / "ledger.sqlite"
        record_earlier_run(ledger_file, self.emulator.username, base_url or self.emulator.url)


@pytest.fixture
def provisioner(emulator: Emulator, sleeps: Sleeps, tmp_path: Path) -> Cli:
    return Cli(emulator, sleeps, tmp_path)


def without_derived_identity(parameters: Mapping[str, str]) -> dict[str, str]:
    """The parameters a web chat was created with, less an Identity the tool derived itself.

    Derived identities are checked on their own (see test_create.py); an Identity the input
    gave is kept, so comparisons stay exact for everything the input said.
    """
    return {
        name: value
        for name, value in parameters.items()
        if not (name == "Identity" and value.startswith(IDENTITY_PREFIX))
    }


def write_csv(
    path: Path, header: Sequence[str], rows: Sequence[Sequence[str]], **kwargs: Any
) -> Path:
    with path.open("w", newline="", encoding=kwargs.pop("encoding", "utf-8")) as stream:
        writer = csv.writer(stream, **kwargs)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as stream:
        return list(csv.DictReader(stream))


def read_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as stream:
        return next(csv.reader(stream))


def read_summary(run_dir: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return summary


def customers(count: int, start: int = 1) -> list[list[str]]:
    """Rows of customer_id, AddressSid, CustomerFriendlyName."""
    return [[f"C{n}", sid(n % 7 + 1), f"Customer {n}"] for n in range(start, start + count)]


CUSTOMER_HEADER = ["customer_id", "AddressSid", "CustomerFriendlyName"]


# The timestamp every line for people carries when stderr is not a terminal (cron).
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{4} ")


def said(stderr: str) -> list[str]:
    """The lines for people, without their timestamps."""
    return [TIMESTAMP.sub("", line) for line in stderr.splitlines()]


def conversation_sid_of(row_key: str) -> str:
    """A conversation SID of the row's own (one web chat never settles two rows)."""
    return "CH" + hashlib.blake2b(row_key.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Reading:
    """How an input is read (staging.InputSettings), everything detected: for read_input."""

    input_path: Path | None
    columns: Mapping[str, str] = field(default_factory=dict)
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    header_row: int | None = None


def no_machine_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PROVISIONER_* variable of the machine running the tests reaches a command (Click
    reads options' variables from os.environ)."""
    for name in [name for name in os.environ if name.startswith("PROVISIONER_")]:
        monkeypatch.delenv(name)
