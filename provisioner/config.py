"""Settings from provisioner.toml and PROVISIONER_* variables, checked before anything runs.

Precedence is the command line, then the environment, then the file, then the default. cli/
carries it out with Click's own machinery: the file's values become the context's `default_map`
(so Click converts and range-checks them like typed values), each option reads its
`env_name(...)` variable, and `ctx.get_parameter_source(name)` tells where a value came from.
This module stays free of Click: it is given the options it may set and their types.

One file serves every command: [create] holds create's settings and those the other commands
share with it; [reconcile] and [status] hold their own (`load_config`). The file decides where
the credentials go, so one that another user owns or may write is refused (`check_trusted`).
"""

from __future__ import annotations

import difflib
import os
import pwd
import stat
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from provisioner.endpoints import CREDENTIAL_VARIABLES
from provisioner.errors import ConfigError

ENV_PREFIX = "PROVISIONER_"
CONFIG_NAME = "provisioner.toml"  # looked for in the working directory when --config is absent
# create's table: its options, and those it shares with reconcile and status, which serve them
# too (one settings file for the cron job and for the reconcile and status run beside it).
SECTION = "create"
ROOT_UID = 0  # root owns system-wide files: trusted, as ssh trusts them
PERMISSION_BITS = 0o7777
UNTRUSTED_WRITE_BITS = stat.S_IWGRP | stat.S_IWOTH
LIST_SEPARATOR = ";"  # between items of a repeatable option in one variable (headers hold spaces)
MAX_CONFIG_BYTES = 1_000_000  # a settings file is a few hundred bytes; refuse anything absurd
SUGGESTION_CUTOFF = (
    0.6  # difflib's similarity above which a known name is offered as "did you mean"
)
CREDENTIAL_WORDS = ("token", "secret", "password", "passwd", "credential")
CREDENTIAL_NAMES = frozenset({"account-sid", "api-key", "auth", "username", "user", "sid"})
CREDENTIALS_STAY = f"credentials stay in the environment: {CREDENTIAL_VARIABLES}"
# What each accepted Python type is called in an error message, and the TOML that gives it.
TYPE_NAMES: Mapping[type, str] = {
    str: "text in quotes",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    Path: "a path in quotes",
    list: 'a list of texts, e.g. ["A=B"], or a table of NAME = "TEXT"',
}


@dataclass(frozen=True)
class Setting:
    """An option the file and the environment may set: its command-line name, the parameter
    it fills, and the Python type of its value (`list` for a repeatable text option)."""

    name: str  # as on the command line without the dashes: "max-attempts"
    dest: str  # the parameter's name, the key of Click's default_map: "max_attempts"
    kind: type


def option_key(name: str) -> str:
    """The one spelling of an option name: lower case, dashes (`max_attempts` -> `max-attempts`)."""
    return name.strip().lstrip("-").replace("_", "-").lower()


def env_name(option_name: str) -> str:
    """The environment variable of an option: `max-attempts` -> `PROVISIONER_MAX_ATTEMPTS`."""
    return ENV_PREFIX + option_key(option_name).replace("-", "_").upper()


def split_list(value: str) -> list[str]:
    """The items of a repeatable option given in one variable: `;`-separated, blanks dropped."""
    return [item.strip() for item in value.split(LIST_SEPARATOR) if item.strip()]


def find_config(explicit: Path | None, cwd: Path) -> Path | None:
    """The settings file: --config PATH when given (it must exist), else ./provisioner.toml;
    either is refused unless it is trusted (`check_trusted`)."""
    if explicit is not None:
        path = explicit if explicit.is_absolute() else cwd / explicit
        if not path.is_file():
            raise ConfigError(f"--config {explicit}: no such file")
    else:
        path = cwd / CONFIG_NAME
        if not path.is_file():
            return None
    check_trusted(path)
    return path


def check_trusted(path: Path, opened: os.stat_result | None = None) -> None:
    """Refuse a settings file that another user owns or that group or others may write, as
    ssh does with its config: the file decides where the credentials are sent. `opened`: the
    status of the file as opened for reading (checked instead of what `path` names now)."""
    try:
        info = opened or path.stat()
        link = path.lstat()  # a symbolic link's own owner chooses the file: it must be trusted too
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from error
    user = os.getuid() if hasattr(os, "getuid") else None
    if user is None:
        return  # no owners nor modes to check (Windows)
    mode = f"mode {info.st_mode & PERMISSION_BITS:04o}"
    owner = _user_name(info.st_uid)
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (user, ROOT_UID):
        raise ConfigError(
            f"{path}: refused: a symbolic link owned by {_user_name(link.st_uid)}, who is "
            f"neither you ({_user_name(user)}) nor root; a settings file decides where the "
            "credentials go. Remove the link, or pass --config with the file it points to"
        )
    if info.st_uid not in (user, ROOT_UID):
        raise ConfigError(
            f"{path}: refused: owned by {owner}, who is neither you ({_user_name(user)}) nor "
            f"root ({mode}); a settings file decides where the credentials go. If you trust "
            f"what it says, make it yours: cp {path} FILE && chmod go-w FILE, then --config FILE"
        )
    if info.st_mode & UNTRUSTED_WRITE_BITS:
        raise ConfigError(
            f"{path}: refused: group or others may write it (owner {owner}, {mode}); "
            f"a settings file decides where the credentials go. Fix: chmod go-w {path}"
        )


def _user_name(uid: int) -> str:
    """A user's name, e.g. `alice`; `uid 12345` when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def load_config(
    path: Path,
    tables: Mapping[str, Collection[Setting]],
    command: str = SECTION,
    *,
    own: Collection[str] = (),
) -> dict[str, object]:
    """The file's settings for `command`, keyed by parameter name (Click's default_map).

    `tables` holds each command's settings, by command name; each command may have a table of
    its own. Top-level keys and the [create] table are one layer (a key set in both is an
    error), which serves every command that has the option, except the parameters in `own`
    (how a command prints, which is each command's own); the command's own table wins over it.
    Every table is checked whichever command runs, so a typo is found at once."""
    document = _read_toml(path)
    for name in tables:
        if name in document and not isinstance(document[name], dict):
            raise ConfigError(f"{path}: {name!r} must be a table: [{name}]")
    every = [setting for settings in tables.values() for setting in settings]
    top = {key: value for key, value in document.items() if key not in tables}
    shared = _layer(path, top, every, name="")
    in_create = _layer(path, document.get(SECTION, {}), tables[SECTION], name=SECTION)
    for dest in shared.keys() & in_create.keys():
        first, second = shared[dest][0], in_create[dest][0]
        raise ConfigError(f"{path}: {second!r} is set twice ({first!r} and {second!r}); keep one")
    shared.update(in_create)
    own_tables = {
        name: _layer(path, document.get(name, {}), settings, name=name)
        for name, settings in tables.items()
        if name != SECTION
    }
    mine = {setting.dest for setting in tables[command]}
    values = {
        dest: value
        for dest, (_, value) in shared.items()
        if dest in mine and (command == SECTION or dest not in own)
    }
    values.update((dest, value) for dest, (_, value) in own_tables.get(command, {}).items())
    return values


def _layer(
    path: Path, table: object, settings: Collection[Setting], *, name: str
) -> dict[str, tuple[str, object]]:
    """One table's entries, keyed by parameter name, as (key, typed value): each key a setting
    of `settings` (else an error naming the closest), none spelt twice."""
    assert isinstance(table, dict)  # load_config checked that each command's entry is a table
    by_key = {option_key(setting.name): setting for setting in settings}
    where = f" (in [{name}])" if name else ""
    found: dict[str, tuple[str, object]] = {}
    for key, value in table.items():
        option = option_key(key)
        if _is_credential(option) and option not in by_key:
            raise ConfigError(f"{path}: {key!r} is not allowed in a file; {CREDENTIALS_STAY}")
        setting = by_key.get(option)
        if setting is None:
            raise ConfigError(f"{path}: unknown setting {key!r}{_closest(option, by_key)}{where}")
        if setting.dest in found:
            raise ConfigError(
                f"{path}: {key!r} is set twice ({found[setting.dest][0]!r} and {key!r}); keep one"
            )
        found[setting.dest] = (key, _typed(path, key, value, setting.kind))
    return found


def _read_toml(path: Path) -> dict[str, object]:
    """The file's TOML, read through the descriptor whose file was checked: a file renamed
    over it after the check (a folder others may write) is never the one read."""
    try:
        # O_NONBLOCK: a FIFO put in its place is refused, not waited on for a writer.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from error
    opened = os.fstat(descriptor)
    if not stat.S_ISREG(opened.st_mode):
        os.close(descriptor)
        raise ConfigError(f"cannot read {path}: not a regular file")
    with os.fdopen(descriptor, "rb") as file:
        check_trusted(path, opened)
        try:
            raw = file.read(MAX_CONFIG_BYTES + 1)
        except OSError as error:
            raise ConfigError(f"cannot read {path}: {error.strerror or error}") from error
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a settings file")
    try:
        # utf-8-sig: Notepad and other Windows editors save UTF-8 with a BOM, which TOML forbids
        # but which is no part of the settings.
        return tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (TOML files are UTF-8)") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error


def _is_credential(name: str) -> bool:
    bare = name.removeprefix("twilio-")
    return bare in CREDENTIAL_NAMES or any(word in bare for word in CREDENTIAL_WORDS)


def _closest(name: str, known: Collection[str]) -> str:
    matches = difflib.get_close_matches(name, sorted(known), n=1, cutoff=SUGGESTION_CUTOFF)
    if matches:
        return f"; did you mean {matches[0]!r}?"
    return f"; known settings: {', '.join(sorted(known))}"


def _typed(path: Path, key: str, value: object, kind: type) -> object:
    """The value as the option's type, or a ConfigError naming the key and the type expected."""
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)  # TOML's `rate = 5` is an integer; the option takes any number
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = False
    elif kind in (str, Path):
        ok = isinstance(value, str)
    elif kind is list:
        return _text_list(path, key, value)
    else:
        raise TypeError(f"setting {key!r}: unsupported type {kind!r}")
    if not ok:
        got = type(value).__name__
        raise ConfigError(f"{path}: {key!r} must be {TYPE_NAMES[kind]}, not {got} {value!r}")
    return value


def _text_list(path: Path, key: str, value: object) -> list[str]:
    """A repeatable option: a list of texts, or a table NAME = "TEXT" read as `NAME=TEXT`."""
    if isinstance(value, dict) and all(isinstance(item, str) for item in value.values()):
        return [f"{name}={text}" for name, text in value.items()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ConfigError(f"{path}: {key!r} must be {TYPE_NAMES[list]}")


def unknown_env(env: Mapping[str, str], option_names: Collection[str]) -> list[str]:
    """PROVISIONER_* variables no option reads (typos), each with the closest known name."""
    known = {env_name(name) for name in option_names}
    problems = []
    for variable in sorted(env):
        if variable.startswith(ENV_PREFIX) and variable not in known:
            hint = difflib.get_close_matches(variable, sorted(known), n=1, cutoff=SUGGESTION_CUTOFF)
            problems.append(f"{variable}{f' (did you mean {hint[0]}?)' if hint else ''}")
    return problems


def source_label(source: str, option_name: str, config_path: Path | None) -> str:
    """Where a setting came from, in words; `source` is a Click ParameterSource's name."""
    if source == "COMMANDLINE":
        return "command line"
    if source == "ENVIRONMENT":
        return f"environment ({env_name(option_name)})"
    if source == "DEFAULT_MAP":
        return f"file ({config_path})" if config_path is not None else "file"
    return "default"
