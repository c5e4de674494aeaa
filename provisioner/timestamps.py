"""ISO 8601 times: the ledger's own, written (`utc_now`) and read back, and Twilio's
`date_created`. Callers reach `utc_now` through this module (`timestamps.utc_now()`), so that
a test sets the clock of every writer in one place."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    """The current UTC time as ISO 8601 with a Z, as the ledger stores times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch_seconds(text: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (`2026-11-25T10:00:00Z`); None if not one."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
