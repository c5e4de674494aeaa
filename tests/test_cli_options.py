"""The command line's options are defined once: each default is its group's dataclass default,
each variable is derived from the option's name, and only provisioner/cli imports click."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import click
import pytest

import provisioner
from provisioner.cli import cli
from provisioner.config import env_name
from provisioner.reconcile import ReconcileOptions
from provisioner.run import RunOptions

PACKAGE = Path(provisioner.__file__).parent
# Each command's options, and the dataclass whose fields they fill.
FILLS = {"create": RunOptions, "reconcile": ReconcileOptions}


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


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_variable_is_the_one_derived_from_the_option_name(command: str) -> None:
    for option in options_of(command):
        if option.envvar is not None:
            assert option.envvar == env_name(max(option.opts, key=len)), option.name


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
