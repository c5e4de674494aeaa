"""The ledger's file on real files: the lock beside it, one name for it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from provisioner.errors import LedgerError
from provisioner.ledger import open_ledger
from provisioner.ledger_lock import exclusive_lock, lock_holder, refuse_hard_links

SCOPE = "AC123@flex-api.twilio.com"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.db"


def test_the_lock_file_is_private_and_names_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    lock = tmp_path / "ledger.db.lock"
    with exclusive_lock(path):
        first = lock.read_text()
    lock.write_text("1234567890")  # a longer pid, left by a run long gone
    with exclusive_lock(path):
        second = lock.read_text()

    assert (first, second) == (str(os.getpid()), str(os.getpid()))
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def test_a_ledger_with_another_name_is_refused_a_symbolic_link_is_not(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"")
    (tmp_path / "symbolic.db").symlink_to(path)
    refuse_hard_links(tmp_path / "symbolic.db")
    refuse_hard_links(tmp_path / "absent.db")

    os.link(path, tmp_path / "hard.db")

    with pytest.raises(LedgerError, match=r"another name \(a hard link\)"):
        refuse_hard_links(path)


def test_lock_holder_names_the_run_holding_the_lock_and_then_nobody(path: Path) -> None:
    assert lock_holder(path) is None  # no lock file yet

    with open_ledger(path, SCOPE):
        assert lock_holder(path) == os.getpid()
        link = path.with_name("link.db")
        link.symlink_to(path)
        assert lock_holder(link) == os.getpid()  # another path to the same ledger
        with (
            pytest.raises(LedgerError, match=rf"another run \(pid {os.getpid()}\)"),
            open_ledger(link, SCOPE),
        ):
            pass

    assert lock_holder(path) is None
    with open_ledger(path, SCOPE):  # the lock was freed
        pass
