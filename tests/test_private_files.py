"""Every file and folder a run makes is its owner's only, whatever the umask: end to end, and
through private.py, the one place that makes them so."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.ledger import open_ledger
from provisioner.private import PRIVATE_FOLDER_MODE, PRIVATE_MODE, open_private
from tests.conftest import (
    CUSTOMER_HEADER,
    Cli,
    customers,
    write_csv,
)
from tests.run_checks import (
    RUN_FILES,
    assert_no_secret,
    finish,
    no_secret_in_any_file,  # noqa: F401  (autouse: no secret in any file a test leaves)
    run_args,
    start,
    wait_until,
)


def _no_umask() -> None:
    """In the child: a umask that takes no permission away."""
    os.umask(0)


@pytest.mark.slow
def test_with_umask_0_every_file_is_the_owners_only(provisioner: Cli, tmp_path: Path) -> None:
    provisioner.emulator.latency = 0.01
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(100))
    ledger = provisioner.out / "ledger.sqlite"
    wal = ledger.with_name("ledger.sqlite-wal")
    process = start(
        run_args(provisioner.emulator, source, provisioner.out, "r1", "--concurrency", "2"),
        provisioner.env(),
        preexec=_no_umask,
    )
    wait_until(lambda: len(provisioner.emulator.created) >= 5 and wal.exists(), process)
    modes_during = {
        path.name: path.stat().st_mode & 0o777
        for path in provisioner.out.glob("ledger.sqlite*")
        if path.exists()
    }
    stdout, stderr = finish(process)

    assert process.returncode == 0, stderr
    run_dir = provisioner.run_dir("r1")
    assert run_dir.stat().st_mode & 0o777 == 0o700
    assert provisioner.out.stat().st_mode & 0o777 == 0o700
    modes = {path.name: path.stat().st_mode & 0o777 for path in run_dir.iterdir()}
    assert set(modes) >= RUN_FILES
    assert modes == dict.fromkeys(modes, 0o600)
    assert {"ledger.sqlite", "ledger.sqlite-wal"} <= set(modes_during)
    assert modes_during == dict.fromkeys(modes_during, 0o600)
    after = {path.name: path.stat().st_mode & 0o777 for path in provisioner.out.glob("ledger*")}
    assert after == dict.fromkeys(after, 0o600)
    assert_no_secret(provisioner.emulator.username, [stdout, stderr], provisioner.out)


# ---------------------------------------------------------------- the one home: private.py


@pytest.fixture
def umask_0() -> Iterator[None]:
    """This process's umask takes no permission away, for the test."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    """The permission bits of a file or folder."""
    return stat.S_IMODE(path.stat().st_mode)


def write_through(descriptor: int, data: bytes) -> None:
    """Write `data` through a descriptor and close it."""
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)


@pytest.mark.usefixtures("umask_0")
def test_a_new_file_is_the_owners_only_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"

    write_through(open_private(path, os.O_WRONLY), b"row\n")

    assert mode(path) == PRIVATE_MODE == 0o600
    assert path.read_bytes() == b"row\n"


def test_an_existing_file_is_made_the_owners_only_and_the_flags_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "run.log"
    path.write_bytes(b"first\n")
    path.chmod(0o644)

    write_through(open_private(path, os.O_WRONLY | os.O_APPEND), b"second\n")

    assert mode(path) == PRIVATE_MODE
    assert path.read_bytes() == b"first\nsecond\n"  # O_APPEND kept it; O_TRUNC would not
    write_through(open_private(path, os.O_WRONLY | os.O_TRUNC), b"afresh\n")
    assert path.read_bytes() == b"afresh\n"


@pytest.mark.usefixtures("umask_0")
def test_the_ledger_its_folder_and_its_lock_are_the_owners_only(tmp_path: Path) -> None:
    ledger = tmp_path / "ledgers" / "ledger.sqlite"

    with open_ledger(ledger, "AC1@flex-api.twilio.com"):
        lock = [path for path in ledger.parent.iterdir() if path.name.endswith(".lock")]

    assert mode(ledger.parent) == PRIVATE_FOLDER_MODE == 0o700
    assert mode(ledger) == PRIVATE_MODE
    assert lock
    assert {mode(path) for path in lock} == {PRIVATE_MODE}
