"""Typed summaries for tests of the page and the end lines: summary.json's keys, as a test writes
them (or a run wrote them), made into the `Summary` the page reads, the keys a test leaves out
empty. The way back from summary.json's JSON, guided by the parts' own type hints."""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from enum import Enum
from typing import Any, Union, get_args, get_origin, get_type_hints

from provisioner.summary import Summary, json_key

NO_EXIT_CODE = -1  # a summary that names no exit code: the page calls it unknown
EMPTY: Mapping[str, Any] = {
    "run_id": "",
    "input": "",
    "started_at": "",
    "ended_at": "",
    "duration_seconds": 0.0,
    "rows": 0,
    "counts": {},
    "invalid_reasons": {},
    "requests_sent": 0,
    "exit_code": NO_EXIT_CODE,
    "stop_reason": "",
    "dry_run": False,
    "warnings": (),
    "forced_rows": 0,
    "ambiguous_rows": 0,
    "in_flight_from_earlier_runs": 0,
    "rate": {},
    "base_url": "",
    "ledger": "",
    "files": {},
    "rerun_command": "",
}


def summary_of(keys: Mapping[str, Any]) -> Summary:
    """The Summary with summary.json's `keys` (e.g. read back from a run's file)."""
    summary: Summary = typed(Summary, {**EMPTY, **keys})
    return summary


def typed(kind: Any, value: Any) -> Any:
    """`value`, as JSON holds it, made into the type `kind`: a part (a dataclass, its keys
    summary.json's, a key left out its default), a mapping, a sequence, an enum; a value that
    already is one is kept."""
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        parts = [part for part in get_args(kind) if is_dataclass(part)]
        return typed(parts[0], value) if parts and isinstance(value, Mapping) else value
    if is_dataclass(kind) and isinstance(kind, type):
        if isinstance(value, kind):
            return value
        hints = get_type_hints(kind)
        unknown = set(value) - {json_key(item.name) for item in fields(kind)}
        assert not unknown, f"{kind.__name__} has no keys {sorted(unknown)}"
        return kind(
            **{
                item.name: typed(hints[item.name], value[json_key(item.name)])
                for item in fields(kind)
                if json_key(item.name) in value
            }
        )
    if origin is Mapping:
        key_kind, value_kind = get_args(kind)
        return {typed(key_kind, key): typed(value_kind, item) for key, item in value.items()}
    if origin is Sequence:
        (item_kind,) = get_args(kind)
        return tuple(typed(item_kind, item) for item in value)
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind(value)
    return value
