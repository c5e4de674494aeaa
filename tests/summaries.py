"""Typed summaries for tests of the page: summary.json's keys, as a test writes them, made into
the `Summary` the page reads, the keys a test leaves out empty."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisioner.report import Summary

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


def summary_of(fields: Mapping[str, Any]) -> Summary:
    """The Summary with summary.json's `fields` (e.g. read back from a run's file)."""
    return Summary(**{**EMPTY, **fields})
