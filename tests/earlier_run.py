"""A ledger that an earlier, finished run in one account and host wrote, as after a first run.

A ledger new to an account and host looks every row up before its first send (prelookup.py).
Tests of other paths, and benchmarks of a batch on an operator's ledger in steady use, start
from a ledger that already knows the account and host: this is where it is written.
"""

from __future__ import annotations

from pathlib import Path

from provisioner.endpoints import scope_of
from provisioner.ledger import open_ledger

EARLIER = "earlier"  # the run id and row key of the earlier run record_earlier_run writes


def record_earlier_run(ledger_file: Path, account: str, base_url: str) -> None:
    """Make `ledger_file` one that an earlier run in `account` on `base_url`'s host finished
    (exit 0, one row `earlier` created): its next run there looks no row up first."""
    with open_ledger(ledger_file, scope_of(account, base_url)) as ledger, ledger.transaction():
        ledger.begin_run(EARLIER, "earlier.csv", forced=False)
        ledger.record_created(
            EARLIER,
            EARLIER,
            conversation_sid="CH" + "0" * 32,
            identity=EARLIER,
            request_id="",
            ambiguous_attempts=0,
        )
        ledger.end_run(EARLIER, exit_code=0, counts={"created": 1}, stop_reason="")
