"""A hostile pass over the ledger's files: what another program or user left where the ledger's
lock goes. The real CLI against the emulator on loopback, real files in a tmp dir."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CUSTOMER_HEADER, Cli, customers, write_csv

VICTIM_TEXT = "a file of the operator's that a lock must never overwrite\n"


def a_directory(lock: Path, victim: Path) -> None:
    lock.mkdir()


def a_fifo(lock: Path, victim: Path) -> None:
    os.mkfifo(lock, 0o600)


def a_link_to_another_file(lock: Path, victim: Path) -> None:
    lock.symlink_to(victim)


def a_dangling_link(lock: Path, victim: Path) -> None:
    lock.symlink_to(victim.with_name("made-by-the-lock"))


@pytest.mark.parametrize("plant", [a_directory, a_fifo, a_link_to_another_file, a_dangling_link])
def test_what_is_planted_where_the_ledger_s_lock_goes_is_refused_untouched(
    provisioner: Cli, tmp_path: Path, plant: Callable[[Path, Path], None]
) -> None:
    """A shared folder for the ledger (`--ledger /srv/shared/ledger.sqlite`): another user (or
    a mistake) put something at `ledger.sqlite.lock`. One error line, exit 2, nothing sent; a
    file the lock's name points to is neither overwritten nor made."""
    shared = tmp_path / "shared"
    shared.mkdir()
    ledger = shared / "ledger.sqlite"
    victim = tmp_path / "victim.txt"
    victim.write_text(VICTIM_TEXT, encoding="utf-8")
    plant(shared / "ledger.sqlite.lock", victim)
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))

    result = provisioner("create", str(source), "--ledger", str(ledger), expect=None)

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "internal error" not in result.stderr
    assert any("error:" in line and "lock" in line for line in result.stderr.splitlines())
    assert provisioner.emulator.requests == 0
    assert victim.read_text(encoding="utf-8") == VICTIM_TEXT
    assert not victim.with_name("made-by-the-lock").exists()


@pytest.mark.parametrize("text", ["²", "9" * 5000])
def test_status_with_a_lock_naming_no_pid_is_not_an_internal_error(
    provisioner: Cli, tmp_path: Path, text: str
) -> None:
    """The lock is held while it holds digits int() refuses (str.isdigit() takes `²`)."""
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))
    provisioner("create", str(source))
    lock = provisioner.out / "ledger.sqlite.lock"
    with lock.open("w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX)
        result = provisioner("status", "--out", str(provisioner.out), "--json", expect=None)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["runs"][0]["state"] != "in progress"
