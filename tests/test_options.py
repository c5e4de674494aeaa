"""options.py: the groups of options create and reconcile share, and their defaults."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from provisioner.options import (
    Endpoints,
    InputReading,
    Output,
    Pacing,
    fields_of,
    ledger_file,
)
from provisioner.reconcile import ReconcileOptions
from provisioner.run import RunOptions
from provisioner.send import SendSettings


def test_the_ledger_is_the_one_given_else_in_the_output_root() -> None:
    assert ledger_file(Path("out"), None) == Path("out/ledger.sqlite")
    assert ledger_file(Path("out"), Path("elsewhere.db")) == Path("elsewhere.db")
    assert Output().ledger_file == Path("outputs/ledger.sqlite")
    assert RunOptions(Path("in.csv"), Path("o")).ledger_file == Path("o/ledger.sqlite")
    assert ReconcileOptions(ledger_path=Path("l.db")).ledger_file == Path("l.db")


def test_create_and_reconcile_are_made_of_the_same_groups_with_the_same_defaults() -> None:
    for group in (Output, InputReading, Endpoints, Pacing):
        names = [item.name for item in fields(group)]
        run, reconcile = RunOptions(Path("in.csv")), ReconcileOptions()
        assert isinstance(run, group)
        assert isinstance(reconcile, group)
        assert fields_of(group()) == {name: getattr(run, name) for name in names}
        assert fields_of(group()) == {name: getattr(reconcile, name) for name in names}


def test_the_send_settings_default_to_the_run_s() -> None:
    run = RunOptions(Path("in.csv"))
    assert SendSettings() == SendSettings(run.max_attempts, run.lookups, run.lookup_lag)


def test_groups_given_make_the_options_of_a_run() -> None:
    pacing = Pacing(rate=None, lookup_lag=0.0, timeout=1.0)
    reading = InputReading(columns={"AddressSid": "Address"}, sheet="Sheet2")
    options = RunOptions(input_path=Path("in.csv"), **fields_of(Output(), reading, pacing))
    assert (options.rate, options.lookup_lag, options.timeout) == (None, 0.0, 1.0)
    assert (options.columns, options.sheet, options.encoding) == (reading.columns, "Sheet2", None)
