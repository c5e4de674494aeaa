"""The command line's options are defined once: each default is its group's dataclass default,
each option reaches the command in its group, each variable is derived from the option's name,
where each setting may come from and whether a rerun repeats it are decided by its definition,
and only provisioner/cli imports click."""

from __future__ import annotations

import ast
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import provisioner
from provisioner.cli import cli
from provisioner.cli.settings import Option, Origin, given, rerun_options, settings_tables
from provisioner.config import ENV_PREFIX, env_name
from provisioner.errors import ExitCode, InputError
from provisioner.options import (
    Conduct,
    Endpoints,
    InputReading,
    Output,
    Pacing,
    Reporting,
    Sandbox,
    Sending,
    Settling,
    Source,
)
from provisioner.reconcile import ReconcileOptions
from provisioner.run import RunOptions
from provisioner.runtime import Runtime

PACKAGE = Path(provisioner.__file__).parent
# Each command's options, and the dataclass whose fields they fill.
FILLS = {"create": RunOptions, "reconcile": ReconcileOptions}
# The groups each command's options dataclass is made of.
GROUPS: dict[str, tuple[type[Any], ...]] = {
    "create": (
        Source,
        Output,
        InputReading,
        Endpoints,
        Sandbox,
        Pacing,
        Sending,
        Conduct,
        Reporting,
    ),
    "reconcile": (Output, InputReading, Endpoints, Settling, Pacing),
}
# What the command line gives a run besides its options' values, and what it works out itself.
NOT_OPTIONS = {"rerun_options", "settings"}
WORKED_OUT = {"run_id", "base_url", "conversations_url"}  # named at start; the API roots
CREDENTIALS = {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t" * 32}
# Each command's own options, given one at a time, and the fields they set (the rest keep their
# defaults): the groups' fields the command line fills, each from its own option.
OWN_OPTIONS = {
    "create": [
        (["--sandbox"], {"sandbox": True}),
        (["--sandbox", "--sandbox-live-rate", "2"], {"sandbox": True, "sandbox_live_rate": 2.0}),
        (["--reserve", "0.5"], {"reserve": 0.5}),
        (["--run-id", "r9"], {"run_id": "r9"}),
        (["--concurrency", "4"], {"concurrency": 4}),
        (["--max-attempts", "2"], {"max_attempts": 2}),
        (["--dry-run"], {"dry_run": True}),
        (["--force"], {"force": True}),
        (["--strict"], {"strict": True}),
        (["--no-lookup"], {"lookups": False}),
        (["--xlsx"], {"xlsx": True}),
        (["--quiet"], {"quiet": True}),
        (["--json"], {"as_json": True}),
    ],
    "reconcile": [
        (["--close-duplicates"], {"close_duplicates": True}),
        (["--concurrency", "3"], {"concurrency": 3}),
    ],
}
OWN_GROUPS = {"create": (Sandbox, Sending, Conduct, Reporting), "reconcile": (Settling,)}
INPUT = {"create": ["in.csv"], "reconcile": []}


def options_of(command: str) -> list[click.Option]:
    return [p for p in cli.commands[command].params if isinstance(p, click.Option)]


@pytest.mark.parametrize("command", sorted(FILLS))
def test_each_default_is_the_default_of_the_field_it_fills(command: str) -> None:
    defaults = {item.name: item.default for item in fields(FILLS[command])}
    checked = 0
    for option in options_of(command):
        if option.name not in defaults or not option.show_default:
            continue  # no default shown: None, worked out later (the ledger, the encoding)
        assert option.default == defaults[option.name], option.name
        checked += 1
    assert checked >= 5  # --out, --rate, --lookup-lag, --timeout, --concurrency at least


@pytest.mark.parametrize("command", sorted(FILLS))
def test_each_field_is_defined_once_in_one_group(command: str) -> None:
    names = [item.name for group in GROUPS[command] for item in fields(group)]
    assert len(names) == len(set(names))  # no field in two groups
    own = {item.name for item in fields(FILLS[command])} - set(names)
    assert own <= NOT_OPTIONS | {"input_path"}, own  # every option's field is a group's
    assert all(issubclass(FILLS[command], group) for group in GROUPS[command])


def received(
    command: str, arguments: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The options dataclass `provisioner COMMAND ARGUMENTS` hands the library (whose run is
    made to fail at once: nothing is sent)."""
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no ./provisioner.toml
    handed: list[Any] = []

    def library_call(options: Any, *_others: object) -> None:
        handed.append(options)
        raise InputError("stopped by the test once the options were handed over")

    monkeypatch.setattr(f"provisioner.cli.{command}.{command}", library_call)
    result = CliRunner().invoke(cli, [command, *arguments], obj=Runtime(env=CREDENTIALS))
    assert result.exit_code == ExitCode.NOTHING_SENT, result.output
    (options,) = handed
    return options


@pytest.mark.parametrize("command", sorted(FILLS))
def test_options_not_given_reach_the_command_as_their_groups_defaults(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = received(command, INPUT[command], tmp_path, monkeypatch)
    checked = []
    for group in GROUPS[command]:
        for item in fields(group):
            if group is not Source and item.name not in WORKED_OUT:
                assert getattr(options, item.name) == getattr(group(), item.name), item.name
                checked.append(item.name)
    assert len(checked) == {"create": 22, "reconcile": 12}[command]  # all but those worked out


@pytest.mark.parametrize(
    ("command", "arguments", "expected"),
    [(command, *case) for command, cases in OWN_OPTIONS.items() for case in cases],
    ids=[" ".join(case[0]) for cases in OWN_OPTIONS.values() for case in cases],
)
def test_each_of_a_command_s_own_options_sets_its_field_of_its_group(
    command: str,
    arguments: list[str],
    expected: dict[str, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = received(command, [*INPUT[command], *arguments], tmp_path, monkeypatch)
    defaults = {
        item.name: item.default
        for group in OWN_GROUPS[command]
        for item in fields(group)
        if item.name != "run_id" or "run_id" in expected  # else named after the time
    }
    assert {name: getattr(options, name) for name in defaults} == {**defaults, **expected}


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_variable_is_the_one_derived_from_the_option_name(command: str) -> None:
    for option in options_of(command):
        if option.envvar is not None:
            assert option.envvar == env_name(max(option.opts, key=len)), option.name


@pytest.mark.parametrize("command", sorted(settings_tables()))
def test_every_option_of_a_configured_command_has_its_settings_decided(command: str) -> None:
    """A new option cannot be left out of the settings by forgetting a list: each option of a
    command the file and variables configure is an Option, which cannot be made without saying
    where its value may come from and whether a rerun repeats it."""
    options = options_of(command)
    assert options
    for option in options:
        assert isinstance(option, Option), f"{option.name}: define it with setting() or Option"


@pytest.mark.parametrize("command", sorted(settings_tables()))
def test_each_option_comes_from_where_its_origin_says(command: str) -> None:
    keys = {setting.name for setting in settings_tables()[command]}
    for option in options_of(command):
        assert isinstance(option, Option)
        flag = max(option.opts, key=len)
        in_file = flag.lstrip("-") in keys
        assert in_file == (option.origin is not Origin.COMMAND_LINE), flag
        has_variable = option.envvar == env_name(flag)
        assert has_variable == (option.origin is Origin.ENVIRONMENT), flag
        assert option.envvar is None or has_variable, flag


def test_decisions_for_one_run_come_only_from_the_command_line() -> None:
    only_typed = {"--force", "--run-id", "--close-duplicates", "--config", "--traceback"}
    found = set()
    for command in settings_tables():
        for option in options_of(command):
            flag = max(option.opts, key=len)
            assert isinstance(option, Option)
            assert (option.origin is Origin.COMMAND_LINE) == (flag in only_typed), flag
            found.add(flag)
    assert only_typed <= found


def test_commands_without_settings_read_no_variables() -> None:
    for command in sorted(set(cli.commands) - set(settings_tables())):
        assert all(option.envvar is None for option in options_of(command)), command


# create given every option, and the options a rerun of its errors.csv repeats: those that
# shape sending and recording, not how the first input was read nor this run's own decisions.
EVERY_CREATE_OPTION = [
    *("in.csv", "--out", "o", "--ledger", "l.sqlite", "--column", "A=B", "--encoding", "utf-8"),
    *("--delimiter", ";", "--sheet", "S", "--header-row", "2", "--base-url", "http://127.0.0.1:9"),
    *("--conversations-url", "http://127.0.0.1:8", "--sandbox", "--sandbox-live-rate", "1"),
    *("--rate", "7", "--lookup-lag", "3", "--timeout", "4", "--reserve", "2", "--run-id", "r1"),
    *("--concurrency", "3", "--max-attempts", "2", "--dry-run", "--force", "--strict"),
    *("--no-lookup", "--xlsx", "--quiet", "--json", "--traceback"),
]
REPEATED = {"--out", "--ledger", "--column", "--base-url", "--conversations-url", "--sandbox"}
REPEATED |= {"--rate", "--lookup-lag", "--timeout", "--reserve", "--concurrency"}
REPEATED |= {"--max-attempts", "--no-lookup", "--xlsx"}


def test_a_rerun_repeats_the_options_that_shape_sending_in_help_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no ./provisioner.toml
    (tmp_path / "in.csv").write_text("AddressSid\n", encoding="utf-8")
    command = cli.commands["create"]
    ctx = command.make_context("create", list(EVERY_CREATE_OPTION), obj=Runtime(env={}))
    typed = given(ctx)
    assert {word for word in typed if word.startswith("--")} == {
        max(option.opts, key=len) for option in options_of("create") if option.expose_value
    }  # every option given

    repeated = list(rerun_options(ctx))

    assert {chunk[0] for chunk in chunks(repeated)} == REPEATED
    # The words of each option as typed, in the order of the run's first line (--help's).
    assert chunks(repeated) == [chunk for chunk in chunks(typed) if chunk[0] in REPEATED]


def chunks(words: list[str]) -> list[list[str]]:
    """Command-line words cut before each option: [["--out", "o"], ["--sandbox"], ...]."""
    cut: list[list[str]] = []
    for word in words:
        if word.startswith("--"):
            cut.append([word])
        else:
            cut[-1].append(word)
    return cut


def test_create_and_reconcile_share_their_options_definitions() -> None:
    shared = {"out_dir", "ledger_path", "columns", "encoding", "delimiter", "sheet"}
    shared |= {"header_row", "base_url", "conversations_url", "rate", "lookup_lag", "timeout"}
    create = {option.name: option for option in options_of("create")}
    reconcile = {option.name: option for option in options_of("reconcile")}
    for name in sorted(shared):
        one, other = create[name], reconcile[name]
        assert (one.opts, one.help, one.default, one.envvar) == (
            other.opts,
            other.help,
            other.default,
            other.envvar,
        ), name
        assert type(one.type) is type(other.type), name


def _imports_click(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "click" for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "click":
            return True
    return False


def test_only_the_cli_package_imports_click() -> None:
    importers = {
        path.relative_to(PACKAGE).parts[0] for path in PACKAGE.rglob("*.py") if _imports_click(path)
    }
    assert importers == {"cli"}
