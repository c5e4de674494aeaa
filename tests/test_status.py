"""`provisioner status` through the real CLI, on real ledgers: what it lists, each run's state,
its JSON, its settings, and a missing ledger."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from provisioner.errors import ExitCode
from provisioner.ledger import open_ledger
from provisioner.ledger_runs import DID_NOT_FINISH, IN_PROGRESS, RunRecord
from tests.conftest import CUSTOMER_HEADER, Cli, customers, write_csv

ROWS = 3


def status(provisioner: Cli, *args: str, expect: int = 0) -> dict[str, object]:
    """`status --json` of the fixture's output root, read."""
    result = provisioner("status", "--out", str(provisioner.out), "--json", *args, expect=expect)
    document: dict[str, object] = json.loads(result.stdout)
    return document


def runs_of(document: dict[str, object]) -> list[dict[str, object]]:
    runs = document["runs"]
    assert isinstance(runs, list)
    return runs


def test_a_missing_ledger_is_an_error_and_nothing_is_made(provisioner: Cli) -> None:
    result = provisioner("status", "--out", str(provisioner.out), expect=ExitCode.NOTHING_SENT)
    assert result.stdout == ""
    assert not provisioner.out.exists()


def test_a_finished_run_is_listed_with_its_exit_code_and_what_it_created(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))
    provisioner.knows_the_scope()
    provisioner("create", str(source), "--run-id", "r1")

    document = status(provisioner)

    assert document["ledger"] == str(provisioner.out / "ledger.sqlite")
    assert document["created"] == {provisioner.scope: ROWS + 1}  # the earlier run's row too
    assert document["unsettled"] == {}
    newest = runs_of(document)[0]
    assert set(newest) == {item.name for item in fields(RunRecord)} | {"state"}
    assert (newest["run_id"], newest["state"], newest["created"]) == ("r1", "exit 0", ROWS)


def test_the_runs_listed_are_the_newest_up_to_runs(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))
    provisioner.knows_the_scope()
    provisioner("create", str(source), "--run-id", "r1")

    assert [run["run_id"] for run in runs_of(status(provisioner, "--runs", "1"))] == ["r1"]
    assert len(runs_of(status(provisioner))) == 2  # r1 and the earlier run


def test_a_run_holding_the_ledger_is_in_progress_and_one_that_let_go_did_not_finish(
    provisioner: Cli,
) -> None:
    provisioner.knows_the_scope()
    with open_ledger(provisioner.out / "ledger.sqlite", provisioner.scope) as ledger:
        with ledger.transaction():
            ledger.begin_run("running", "in.csv", forced=False)
        states = {run["run_id"]: run["state"] for run in runs_of(status(provisioner))}
        assert states["running"] == IN_PROGRESS  # this process holds the ledger's lock

    states = {run["run_id"]: run["state"] for run in runs_of(status(provisioner))}
    assert states == {"running": DID_NOT_FINISH, "earlier": "exit 0"}


def test_the_text_names_the_ledger_the_scopes_and_each_run(provisioner: Cli) -> None:
    provisioner.knows_the_scope()
    result = provisioner("status", "--out", str(provisioner.out))

    lines = result.stdout.splitlines()
    assert str(provisioner.out / "ledger.sqlite") in lines[0]
    assert any(provisioner.scope in line for line in lines)
    assert any(line.split()[0] == "earlier" for line in lines if line.startswith("  "))


def test_ledger_and_runs_come_from_the_settings_file(provisioner: Cli, tmp_path: Path) -> None:
    provisioner.knows_the_scope()
    elsewhere = tmp_path / "elsewhere.sqlite"
    (provisioner.out / "ledger.sqlite").rename(elsewhere)
    config = tmp_path / "settings.toml"
    config.write_text(f'ledger = "{elsewhere}"\n[status]\nruns = 1\njson = true\n')
    config.chmod(0o600)

    result = provisioner("status", "--config", str(config))

    document = json.loads(result.stdout)
    assert document["ledger"] == str(elsewhere)
    assert len(document["runs"]) == 1
