"""Every file and folder a run makes is its owner's only, whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
