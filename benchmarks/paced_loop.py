"""Calibration of the send-time method: one thread sends at a steady rate and notes each send.

    python -m benchmarks.paced_loop URL REQUESTS RATE

Prints the monotonic time (the system-wide CLOCK_MONOTONIC, the clock the emulator records
with) just before each request leaves, as a JSON list. Compared with the emulator's record of
the same requests, it shows how late the record is: the error of taking a record's time for
the time its request was sent.
"""

from __future__ import annotations

import json
import os
import sys
import time

import requests

from benchmarks.harness import address_sid

TIMEOUT = 30.0  # seconds; the job's default --timeout


def main() -> None:
    """Send REQUESTS creates, 1/RATE seconds apart, one at a time; print when each left."""
    url, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    session = requests.Session()
    session.auth = (os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"])
    sent: list[float] = []
    start = time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        form = {"AddressSid": address_sid(n), "Identity": f"paced-{n}"}
        sent.append(time.monotonic())
        session.post(f"{url}/v2/WebChats", data=form, timeout=TIMEOUT).raise_for_status()
    print(json.dumps(sent))


if __name__ == "__main__":
    main()
