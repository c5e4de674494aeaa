"""Twilio's own Python SDK in a plain loop, one row after another, as its own process.

    python -m benchmarks.sdk_loop INPUT.csv URL

What an operator without provisioner would write: `client.flex_api.v2.web_channels.create`
for each row, with the same five fields the job sends (the Identity derived the job's way),
no threads, no retries. Credentials from the environment. Prints the count of each outcome
(`created`, or the HTTP status or exception name of a failure) as JSON. It runs as a process
of its own so that the emulator's record times it the same way as the job.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

SCOPE = "sdk-loop"  # the job hashes its ledger scope with the key; any constant costs the same


def main() -> None:
    """Create a web chat for every row of the input, one at a time; print the outcomes."""
    source, url = Path(sys.argv[1]), sys.argv[2]
    client = Client(
        os.environ["TWILIO_ACCOUNT_SID"],
        os.environ["TWILIO_AUTH_TOKEN"],
        http_client=TwilioHttpClient(pool_connections=True, max_retries=None),
    )
    client.flex_api.base_url = url

    def create(row: dict[str, str]) -> str:
        digest = hashlib.blake2b(f"{SCOPE}\0{row['customer_id']}".encode(), digest_size=16)
        try:
            client.flex_api.v2.web_channels.create(
                address_sid=row["AddressSid"],
                chat_friendly_name=row["ChatFriendlyName"],
                customer_friendly_name=row["CustomerFriendlyName"],
                pre_engagement_data=row["PreEngagementData"],
                identity="prv-" + digest.hexdigest(),
            )
            return "created"
        except TwilioRestException as error:
            return str(error.status)
        except requests.RequestException as error:
            return type(error).__name__

    with source.open(newline="", encoding="utf-8") as stream:
        outcomes = Counter(create(row) for row in csv.DictReader(stream))
    print(json.dumps(dict(outcomes)))


if __name__ == "__main__":
    main()
