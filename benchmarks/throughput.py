"""Throughput against the emulator: client overhead, latency, a kept rate, adapting to a rate limit.

Rows/s are measured on the emulator's record: the rows created over the span from the first
request sent to the last answer (see harness.py for how a send time is known), so start-up,
reading and writing files are not in them; whole-process figures are given beside.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from benchmarks.harness import (
    ACCOUNT,
    ALONE,
    CREATED,
    ENV,
    HERE,
    THROTTLED,
    TOKEN,
    Result,
    address_sid,
    emulator,
    make_input,
    measure,
    most_in_one_second,
    run_job,
)
from benchmarks.plots import ServerLimits, plot_timeline

# Targets, each with its reason.
OVERHEAD_SHARE = (
    0.90  # the job's own work (checks, ledger, files) costs at most a tenth of the rows/s
)
WITHIN = 0.05  # a bound run (rate or latency) lasts within 5 % of its ideal time
CALIBRATION_SHARE = 0.25  # the send-time error stays under a quarter of the gap between sends
ADAPTIVE_MAX_429 = 0.05  # finding a limit 5x under --rate costs at most 1 request in 20
ADAPTIVE_SHARE = 0.85  # and then runs at 85 % of the limit or more
OVERHEAD_REPEATS = 5  # pairs of runs: the median of five shrugs off two disturbed runs
NO_LIMIT = ("--rate", "0", "--lookup-lag", "0")  # no rate ceiling; no lost answers to wait for


@dataclass(frozen=True)
class Pair:
    """One bare loop and one job on the same input: rows/s of each, CPU seconds a row of each."""

    bare_rate: float
    job_rate: float
    bare_cpu: float
    job_cpu: float
    job_seconds: float  # the job's whole process
    created: int

    @property
    def share(self) -> float:
        """The job's rows/s as a share of the bare loop's."""
        return self.job_rate / self.bare_rate


def _pair(source: Path, rows: int, concurrency: int, work: Path) -> Pair:
    with emulator(work) as bare_api:
        command = [sys.executable, "-m", "benchmarks.bare_loop", str(source), bare_api.url]
        bare = measure([*command, str(concurrency)], ENV, stdout=work / "bare.txt")
    statuses = json.loads((work / "bare.txt").read_text())
    if statuses != {str(CREATED): rows}:
        raise RuntimeError(f"the bare loop was not answered 201 for every row: {statuses}")
    with emulator(work) as job_api:
        job = run_job(
            source, work, "--base-url", job_api.url, "--concurrency", str(concurrency), *NO_LIMIT
        )
    return Pair(
        rows / bare_api.span(),
        job.created / job_api.span(),
        bare.cpu / rows,
        job.process.cpu / rows,
        job.process.seconds,
        job.created,
    )


def overhead(work: Path) -> list[Result]:
    """Rows/s and CPU per row of the job beside a bare requests loop, no latency, 8 in flight.

    Both share two cores with the emulator, so rows/s vary from run to run: the pair runs
    OVERHEAD_REPEATS times, alternating, and the median pair (by share) is reported.
    """
    rows, concurrency = 10_000, 8
    source = make_input(work / "overhead.csv", rows)
    pairs = sorted(
        (_pair(source, rows, concurrency, work) for _ in range(OVERHEAD_REPEATS)),
        key=lambda pair: pair.share,
    )
    middle = pairs[len(pairs) // 2]
    dry = run_job(source, work, "--dry-run")
    sending_cpu = middle.job_cpu - dry.process.cpu / rows
    shares = f"{pairs[0].share:.0%} to {pairs[-1].share:.0%}"
    print(
        f"overhead: median of {len(pairs)}: bare loop {middle.bare_rate:,.0f} rows/s, "
        f"{middle.bare_cpu * 1e3:.2f} ms CPU a row; job {middle.job_rate:,.0f} rows/s, "
        f"{middle.job_cpu * 1e3:.2f} ms CPU a row; shares {shares}"
    )
    name = f"overhead: {rows:,} rows, no latency, --concurrency {concurrency} --rate 0"
    return [
        Result(
            name,
            f"{middle.job_rate:,.0f} rows/s = {middle.share:.0%} of a bare requests loop "
            f"({middle.bare_rate:,.0f} rows/s, same five fields), the median of {len(pairs)} "
            f"pairs ({shares}); whole process {rows / middle.job_seconds:,.0f} rows/s",
            f">= {OVERHEAD_SHARE:.0%}",
            middle.share >= OVERHEAD_SHARE and all(pair.created == rows for pair in pairs),
        ),
        Result(
            name,
            f"CPU per row (user + sys, wait4), same pair: job {middle.job_cpu * 1e3:.2f} ms = "
            f"{middle.job_cpu / middle.bare_cpu:.1f}x the bare loop's {middle.bare_cpu * 1e3:.2f} "
            f"ms; {sending_cpu * 1e3:.2f} ms beyond a --dry-run of the same file "
            f"({dry.process.cpu:.1f} s CPU in all: start-up, checks, files)",
        ),
    ]


def latency_bound(work: Path) -> list[Result]:
    """200 ms answers, 32 in flight, no rate: the run lasts rows x latency / concurrency."""
    rows, latency, concurrency = 1600, 0.2, 32
    source = make_input(work / "latency.csv", rows)
    with emulator(work, latency=latency) as api:
        job = run_job(
            source, work, "--base-url", api.url, "--concurrency", str(concurrency), *NO_LIMIT
        )
    ideal = rows * latency / concurrency
    excess = api.span() / ideal - 1
    print(f"latency-bound: {api.span():.2f} s against ideal {ideal:.2f} s ({excess:+.1%})")
    plot_timeline(
        job.timeline,
        ServerLimits(),
        f"{rows:,} rows, {latency * 1e3:g} ms answers, --concurrency {concurrency} --rate 0",
        HERE / "latency.png",
    )
    return [
        Result(
            f"latency-bound: {rows:,} rows, {latency * 1e3:g} ms answers, --concurrency {concurrency}",
            f"{api.span():.2f} s vs ideal {ideal:.2f} s ({excess:+.1%}); {job.created:,} created",
            f"within {WITHIN:.0%}",
            abs(excess) <= WITHIN and job.created == rows,
        )
    ]


def rate_bound(work: Path) -> list[Result]:
    """--rate 50, no server limit: the run lasts rows / rate, and no second holds more than 50.

    The send times come from the emulator's record (harness.py); a paced loop that notes its
    own send times first measures how late the record is, so the error of the method is known.
    """
    rows, rate, calibration = 2000, 50, 500
    source = make_input(work / "rate.csv", rows)
    with emulator(work) as paced_api:
        command = [sys.executable, "-m", "benchmarks.paced_loop", paced_api.url]
        measure([*command, str(calibration), str(rate)], ENV, stdout=work / "paced.txt")
    paced = json.loads((work / "paced.txt").read_text())
    delays = sorted(r - s for r, s in zip(paced_api.sends(), paced, strict=True))
    spread = delays[-1] - delays[0]
    with emulator(work) as api:
        job = run_job(
            source, work, "--base-url", api.url, "--rate", str(rate), "--lookup-lag", "0", *ALONE
        )
    ideal = rows / rate
    excess = api.span() / ideal - 1
    sends = api.sends()
    busiest = most_in_one_second(sends)
    # How long each run of rate + 1 consecutive sends took: under 1 s is one too many.
    spans = [later - earlier for earlier, later in zip(sends, sends[rate:], strict=False)]
    crowded = sum(1 for span in spans if span < 1.0)
    gaps = sorted(later - earlier for earlier, later in itertools.pairwise(sends))
    print(
        f"rate-bound: {api.span():.2f} s against ideal {ideal:.2f} s ({excess:+.1%}); "
        f"busiest second {busiest} requests sent; record {delays[0] * 1e3:.1f} to "
        f"{delays[-1] * 1e3:.1f} ms after the send"
    )
    plot_timeline(
        job.timeline,
        ServerLimits(),
        f"{rows:,} rows, --rate {rate}, no server limit",
        HERE / "rate.png",
    )
    return [
        Result(
            f"rate-bound: {rows:,} rows, --rate {rate}",
            f"{api.span():.2f} s vs ideal {ideal:.2f} s ({excess:+.1%}); {job.created:,} created",
            f"within {WITHIN:.0%}",
            abs(excess) <= WITHIN and job.created == rows,
        ),
        Result(
            f"rate-bound: send times, calibrated by a paced loop of {calibration} requests",
            f"the emulator records a request {delays[0] * 1e3:.1f} to {delays[-1] * 1e3:.1f} ms "
            f"(median {delays[len(delays) // 2] * 1e3:.1f}) after it was sent: error spread "
            f"{spread * 1e3:.1f} ms",
            f"spread < {CALIBRATION_SHARE:.0%} of 1/{rate} s",
            spread < CALIBRATION_SHARE / rate,
        ),
        Result(
            f"rate-bound: busiest one-second window of sends, --rate {rate}",
            f"{busiest} requests sent; {crowded} of {len(spans)} runs of {rate + 1} consecutive "
            f"sends fit in under 1 s (tightest {min(spans):.3f} s); gaps between sends "
            f"{gaps[0] * 1e3:.1f} to {gaps[-1] * 1e3:.1f} ms (median {gaps[len(gaps) // 2] * 1e3:.1f})",
            f"<= {rate} (the rate asked for)",
            busiest <= rate,
        ),
    ]


def adaptive(work: Path) -> list[Result]:
    """--rate 200 against a 40/s limit: few 429s, then close to the limit."""
    rows, limit, asked = 2000, 40, 200
    source = make_input(work / "adaptive.csv", rows)
    with emulator(work, rate_limit=limit) as api:
        job = run_job(
            source, work, "--base-url", api.url, "--rate", str(asked), "--lookup-lag", "0", *ALONE
        )
    share, throttled, total = api.share_throttled()
    throughput = job.created / api.span()
    settled = job.summary.get("rate", {}).get("settled")
    settled_text = "no rate" if settled is None else f"{settled:.1f}/s"
    print(
        f"adaptive: {throttled} of {total} answers were 429 ({share:.1%}); {throughput:.1f} rows/s "
        f"against a limit of {limit}/s; settled at {settled_text}"
    )
    plot_timeline(
        job.timeline,
        ServerLimits(rate=limit),
        f"--rate {asked} against a {limit}/s rate limit",
        HERE / "adaptive.png",
    )
    name = f"adaptive: {rows:,} rows, --rate {asked} against a {limit}/s limit"
    return [
        Result(
            name,
            f"{share:.1%} of requests answered 429 ({throttled} of {total})",
            f"< {ADAPTIVE_MAX_429:.0%}",
            share < ADAPTIVE_MAX_429,
        ),
        Result(
            name,
            f"{throughput:.1f} rows/s = {throughput / limit:.0%} of {limit}/s; settled at "
            f"{settled_text}; {job.created:,} created",
            f">= {ADAPTIVE_SHARE:.0%}",
            throughput / limit >= ADAPTIVE_SHARE and job.created == rows,
        ),
    ]


def alternatives(work: Path) -> list[Result]:
    """Twilio's Python SDK in a plain loop and with threads, beside the job (for context)."""
    from twilio.base.exceptions import TwilioRestException
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    rows, limit, latency, threads = 500, 40, 0.05, 8
    source = make_input(work / "alternatives.csv", rows)

    def sdk_client(url: str, pool: int) -> Client:
        http = TwilioHttpClient(pool_connections=True, max_retries=None)
        http.session.mount("http://", HTTPAdapter(pool_maxsize=pool))
        client = Client(ACCOUNT, TOKEN, http_client=http)
        client.flex_api.base_url = url
        return client

    def create_with(client: Client) -> Callable[[int], str]:
        def create(n: int) -> str:
            try:
                client.flex_api.v2.web_channels.create(
                    address_sid=address_sid(n % 97), customer_friendly_name=f"Customer {n}"
                )
                return "created"
            except TwilioRestException as error:
                return str(error.status)
            except requests.RequestException as error:
                return type(error).__name__

        return create

    with emulator(work, latency=latency, rate_limit=limit) as api:
        started = time.perf_counter()
        serial = Counter(map(create_with(sdk_client(api.url, 1)), range(rows)))
        serial_seconds = time.perf_counter() - started
    with emulator(work, latency=latency, rate_limit=limit) as api:
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            threaded = Counter(pool.map(create_with(sdk_client(api.url, threads)), range(rows)))
        threaded_seconds = time.perf_counter() - started
    with emulator(work, latency=latency, rate_limit=limit) as api:
        job = run_job(
            source,
            work,
            "--base-url",
            api.url,
            "--rate",
            "200",
            "--concurrency",
            str(threads),
            "--lookup-lag",
            "0",
            *ALONE,
        )
    job_429 = api.statuses()[THROTTLED]
    failed = rows - job.created
    print(
        f"alternatives: SDK loop {serial_seconds:.1f} s {dict(serial)}; SDK + {threads} threads "
        f"{threaded_seconds:.1f} s {dict(threaded)}; job {job.process.seconds:.1f} s, "
        f"{job.created} created, {job_429} answers 429"
    )
    setting = f"({latency * 1e3:g} ms answers, {limit}/s limit, {rows} rows)"
    return [
        Result(
            f"alternatives: SDK, plain loop {setting}",
            f"{serial_seconds:.1f} s, {serial['created']} created; the job is "
            f"{serial_seconds / job.process.seconds:.1f}x faster (whole process)",
        ),
        Result(
            f"alternatives: SDK, {threads} threads, no limiter {setting}",
            f"{threaded_seconds:.1f} s, {threaded['created']} created, "
            f"{rows - threaded['created']} failed ({threaded[str(THROTTLED)]} on 429)",
        ),
        Result(
            f"alternatives: job --rate 200 --concurrency {threads} {setting}",
            f"{job.process.seconds:.1f} s whole process, {job.created} created, {failed} failed; "
            f"{job_429} answers were 429, all retried",
            "every row created",
            failed == 0,
        ),
    ]
