"""What the command line was given, read from Click's context: the options as words (the run's
first line, the rerun command), each setting's value and source (summary.json), where settings
came from, and the settings a file may hold (derived from the Click parameters, each an `Option`
that says where its value may come from and whether a rerun repeats it)."""

from __future__ import annotations

import functools
import shlex
from collections.abc import Sequence
from dataclasses import fields
from enum import Enum, auto
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from provisioner.cli.voice import Voice
from provisioner.config import ENV_PREFIX, Setting, env_name, source_label
from provisioner.endpoints import REGION_VARIABLES
from provisioner.options import Endpoints
from provisioner.summary import SettingUsed


class Origin(Enum):
    """Where an option's value may come from besides the command line."""

    # Nowhere else: a decision for one run, never a standing setting (creating again, closing
    # chats, naming a run folder), or no setting at all (--config, --traceback).
    COMMAND_LINE = auto()
    FILE = auto()  # the settings file (status's own, which have no variable)
    ENVIRONMENT = auto()  # its PROVISIONER_<OPTION> variable and the settings file


class Option(click.Option):
    """An option of provisioner's, with the decisions the settings make of it, so that each is
    part of the option's one definition: where its value may come from (`origin`; its
    PROVISIONER_<OPTION> variable is derived from that and its name), whether a rerun of
    errors.csv repeats it (`rerun`: those that shape sending and recording, not how the first
    input was read, since errors.csv is this tool's own), and whether it is how the command
    prints (`own`: create's `json = true` in [create] does not make status print JSON)."""

    def __init__(
        self,
        param_decls: Sequence[str],
        *,
        origin: Origin,
        rerun: bool,
        own: bool = False,
        **attributes: Any,
    ) -> None:
        assert "envvar" not in attributes, "the origin decides the variable"
        super().__init__(param_decls, **attributes)
        self.origin = origin
        self.rerun = rerun
        self.own = own
        if origin is Origin.ENVIRONMENT:
            self.envvar = env_name(max(self.opts, key=len))


# The options that decide where requests, and the credentials with them, are sent.
_ENDPOINTS = tuple(item.name for item in fields(Endpoints))
# Where a setting comes from when the operator did not type it: named on the first lines.
_NOT_TYPED = (ParameterSource.DEFAULT_MAP, ParameterSource.ENVIRONMENT)
_CONFIGURED_COMMANDS = ("create", "reconcile", "status")
_configured: dict[str, click.Command] = {}


def configured(command: click.Command) -> click.Command:
    """Register `command` as one provisioner.toml and PROVISIONER_* variables configure."""
    assert command.name in _CONFIGURED_COMMANDS, command.name
    _configured[command.name] = command
    return command


def name_sources(ctx: click.Context, voice: Voice, roots: tuple[str, str] | None) -> None:
    """The settings not typed, each with where it came from (the first line shows only what
    was typed); where the requests and credentials go (`roots`, when any are sent), when the
    settings file or a variable decided it, also under --quiet."""
    config_path = ctx.meta.get("config_path")
    names = [
        param.name
        for param in ctx.command.params
        if isinstance(param, click.Option) and param.name and param.name not in _ENDPOINTS
    ]
    for source, where in (
        (ParameterSource.DEFAULT_MAP, f"the file {config_path}"),
        (ParameterSource.ENVIRONMENT, f"the environment ({ENV_PREFIX}*)"),
    ):
        words = _option_words(ctx, names, source)
        if words:
            voice(f"settings from {where}: {shlex.join(words)}")
    if roots is None:
        # The sandbox's emulator takes every request: a run "creates" what never reaches Twilio.
        origin = ctx.get_parameter_source("sandbox") if "sandbox" in ctx.params else None
        if ctx.params.get("sandbox") and origin in _NOT_TYPED:
            label = source_label(origin.name, flag(ctx, "sandbox"), config_path)
            voice.always(f"endpoint: --sandbox from the {label}; nothing reaches Twilio")
        return
    for name, root in zip(_ENDPOINTS, roots, strict=True):
        origin = ctx.get_parameter_source(name)
        if origin in _NOT_TYPED:
            long_flag = flag(ctx, name)
            label = source_label(origin.name, long_flag, config_path)
            voice.always(f"endpoint: {long_flag} {root} from the {label}; the credentials go there")
    region = {name: ctx.obj.env.get(name, "") for name in REGION_VARIABLES} if ctx.obj else {}
    base_url, conversations_url = (ctx.params.get(name) for name in _ENDPOINTS)
    # Lookups go to the base URL when it is set, and to the region's host only when neither is.
    derived = [roots[0]] if not base_url else []
    derived += [roots[1]] if not (base_url or conversations_url) else []
    if any(region.values()) and derived:
        chosen = " ".join(f"{name}={value}" for name, value in region.items() if value)
        voice.always(
            f"endpoint: {' and '.join(derived)} from the environment ({chosen}); "
            "the credentials go there"
        )


def flag(ctx: click.Context, name: str) -> str:
    """The long spelling of parameter `name` of the command running: `--base-url`."""
    return next(max(p.opts, key=len) for p in ctx.command.params if p.name == name)


def _option_words(
    ctx: click.Context, names: Sequence[str], only: ParameterSource | None = None
) -> list[str]:
    """The options `names` as command-line words, those not left at their default (`only`:
    those from this source)."""
    words: list[str] = []
    by_name = {param.name: param for param in ctx.command.params}
    for name in names:
        param = by_name[name]
        value = ctx.params.get(name)
        source = ctx.get_parameter_source(name)
        if source is ParameterSource.DEFAULT or value is None or value is False:
            continue
        if only is not None and source is not only:
            continue
        if isinstance(value, (tuple, dict)) and not value:
            continue
        long_flag = max(param.opts, key=len) if isinstance(param, click.Option) else name
        if isinstance(param, click.Option) and param.is_flag:
            words.append(long_flag)
        elif isinstance(value, dict):
            for key, header in value.items():
                words += [long_flag, f"{key}={header}"]
        else:
            words += [long_flag, str(value)]
    return words


def rerun_options(ctx: click.Context) -> tuple[str, ...]:
    """The options a rerun of errors.csv repeats, as command-line words (in --help's order)."""
    names = [
        param.name
        for param in ctx.command.params
        if isinstance(param, Option) and param.rerun and param.name
    ]
    return tuple(_option_words(ctx, names))


def given(ctx: click.Context) -> list[str]:
    """The options typed on the command line, as words."""
    names = [p.name for p in ctx.command.params if p.name and p.name != "input_path"]
    return _option_words(ctx, names, ParameterSource.COMMANDLINE)


def settings(ctx: click.Context) -> dict[str, SettingUsed]:
    """Every option's value and where it came from, for summary.json."""
    config_path = ctx.meta.get("config_path")
    found = {}
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or not param.name or not param.expose_value:
            continue
        source = ctx.get_parameter_source(param.name)
        value = ctx.params.get(param.name)
        found[param.name] = SettingUsed(
            value=str(value) if isinstance(value, Path) else value,
            source=source_label(
                source.name if source else "DEFAULT", max(param.opts, key=len), config_path
            ),
        )
    return found


def _setting_kind(param: click.Parameter) -> type:
    if isinstance(param, click.Option) and param.is_flag:
        return bool
    if param.multiple:
        return list
    if isinstance(param.type, click.types.IntParamType):
        return int
    if isinstance(param.type, click.types.FloatParamType):
        return float
    if isinstance(param.type, click.Path):
        return Path
    return str


def _settings_of(command: click.Command) -> list[Setting]:
    """What provisioner.toml may set for `command`: its options but those of the command line
    only."""
    return [
        Setting(max(param.opts, key=len).lstrip("-"), param.name, _setting_kind(param))
        for param in command.params
        if isinstance(param, Option) and param.name and param.origin is not Origin.COMMAND_LINE
    ]


@functools.cache
def settings_tables() -> dict[str, list[Setting]]:
    """Each configured command's settings, by the name of its table in provisioner.toml."""
    return {name: _settings_of(_configured[name]) for name in _CONFIGURED_COMMANDS}


@functools.cache
def per_command() -> frozenset[str]:
    """The parameters that are how a command prints, each command's own in provisioner.toml:
    [create] and top-level keys set them for create alone."""
    return frozenset(
        param.name
        for command in _configured.values()
        for param in command.params
        if isinstance(param, Option) and param.own and param.name
    )


def variable_options() -> list[str]:
    """The options of every command that a PROVISIONER_* variable sets."""
    return sorted(
        {
            max(param.opts, key=len)
            for command in _configured.values()
            for param in command.params
            if isinstance(param, click.Option) and param.envvar
        }
    )
