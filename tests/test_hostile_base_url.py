"""PROVISIONER_BASE_URL has one reader, Click (as --base-url's variable): every command with
the endpoint options must still send there, and nothing else may have relied on the library
reading it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CUSTOMER_HEADER, Cli, customers, read_csv, write_csv

ROWS = 3


def test_create_then_reconcile_go_where_the_variable_says(
    provisioner: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVISIONER_BASE_URL", provisioner.emulator.url)  # Click reads os.environ
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))

    created = provisioner("create", str(source), "--run-id", "r1", base_url=False)
    lookups_before = provisioner.emulator.lookups
    provisioner("reconcile", str(source), "--out", str(provisioner.out), "--rate", "0")

    assert [row["status"] for row in read_csv(provisioner.run_dir("r1") / "results.csv")] == [
        "created"
    ] * ROWS
    assert len(provisioner.emulator.created) == ROWS
    assert provisioner.emulator.lookups == lookups_before + ROWS  # the reconcile's, there too
    assert "PROVISIONER_BASE_URL" in created.stderr  # the first lines name where it came from
