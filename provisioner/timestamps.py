"""ISO 8601 times read back: the ledger's own (`utc_now`) and Twilio's `date_created`."""

from __future__ import annotations

from datetime import datetime


def epoch_seconds(text: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (`2026-11-25T10:00:00Z`); None if not one."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
