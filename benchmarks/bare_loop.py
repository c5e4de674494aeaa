"""The ceiling for client overhead: a loop that only POSTs each row, as its own process.

    python -m benchmarks.bare_loop INPUT.csv URL CONCURRENCY

Sends the five form fields the job sends (AddressSid, ChatFriendlyName, CustomerFriendlyName,
PreEngagementData, and an Identity derived the job's way, a blake2b of the row's key) from
`CONCURRENCY` threads over one pooled requests session; credentials from the environment.
Prints the count of each answer's status as JSON. It runs as a process of its own so that
the OS accounts its CPU time apart, like the job's.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

FIELDS = ("AddressSid", "ChatFriendlyName", "CustomerFriendlyName", "PreEngagementData")
TIMEOUT = 30.0  # seconds; the job's default --timeout
SCOPE = "bare-loop"  # the job hashes its ledger scope with the key; any constant costs the same


def main() -> None:
    """Send every row of the input once; print the statuses."""
    source, url, concurrency = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=concurrency))
    session.auth = (os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"])

    def post(row: dict[str, str]) -> int:
        form = {name: row[name] for name in FIELDS}
        digest = hashlib.blake2b(f"{SCOPE}\0{row['customer_id']}".encode(), digest_size=16)
        form["Identity"] = "prv-" + digest.hexdigest()
        return session.post(f"{url}/v2/WebChats", data=form, timeout=TIMEOUT).status_code

    with (
        source.open(newline="", encoding="utf-8") as stream,
        ThreadPoolExecutor(concurrency) as pool,
    ):
        statuses = Counter(pool.map(post, csv.DictReader(stream)))
    print(json.dumps({str(status): count for status, count in statuses.items()}))


if __name__ == "__main__":
    main()
