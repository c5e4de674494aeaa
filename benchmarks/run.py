"""Throughput and memory benchmarks of `provisioner create` against the emulator on loopback.

    pip install -e '.[bench]' && python benchmarks/run.py            # all, writes RESULTS.md
    python benchmarks/run.py --only overhead,rate                      # some
    python benchmarks/run.py --million-real                            # adds a 1,000,000-row real run

Each benchmark starts `provisioner emulator` in its own process (recording every answer), runs
the job (or an alternative) in another, and prints its figures against the target. Results go
to benchmarks/RESULTS.md and the adaptive benchmark's sending rate to benchmarks/adaptive.png.
Not part of the test suite: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
ACCOUNT = "AC" + "0" * 32
TOKEN = "emulator-token"
ENV = {**os.environ, "TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN}


@dataclass
class Emulator:
    url: str
    record: Path
    answers: list[tuple[float, int]] = field(default_factory=list)

    def statuses(self) -> Counter[int]:
        return Counter(status for _, status in self.answers)


@contextmanager
def emulator(work: Path, *options: str) -> Iterator[Emulator]:
    """`provisioner emulator` in its own process; its answers are read when it stops."""
    record = work / f"answers-{time.monotonic_ns()}.csv"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provisioner",
            "emulator",
            "--port",
            "0",
            "--record",
            str(record),
            *options,
        ],
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    url = process.stderr.readline().split("POST ")[1].split("/v2/")[0]
    running = Emulator(url, record)
    try:
        yield running
    finally:
        process.terminate()
        process.wait()
        with record.open() as stream:
            running.answers = [
                (float(r["seconds"]), int(r["status"])) for r in csv.DictReader(stream)
            ]


def make_input(path: Path, rows: int) -> Path:
    """About 120 bytes a row: an id, an address, two names, pre-engagement JSON, a note."""
    with path.open("w", encoding="utf-8", newline="") as stream:
        stream.write(
            "customer_id,AddressSid,ChatFriendlyName,CustomerFriendlyName,PreEngagementData,Note\n"
        )
        for n in range(rows):
            stream.write(
                f"C{n:08d},IG{n % 97:032x},Onboarding,Customer {n},"
                f'"{{""email"": ""c{n}@example.com""}}",batch {n // 1000}\n'
            )
    return path


@dataclass
class JobRun:
    seconds: float  # wall clock of the whole process
    peak_mb: float
    exit_code: int
    summary: dict[str, Any]

    @property
    def send_seconds(self) -> float:
        return float(self.summary["duration_seconds"])


def run_job(source: Path, work: Path, *options: str) -> JobRun:
    """`provisioner create` in a child process; its own peak RSS from wait4."""
    out = work / f"out-{time.monotonic_ns()}"
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provisioner",
            "create",
            str(source),
            "--out",
            str(out),
            "--run-id",
            "run",
            *options,
        ],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    assert process.stderr is not None
    stderr = process.stderr.read().decode()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 1):
        print(stderr[-2000:], file=sys.stderr)
    summary = (
        json.loads((out / "run" / "summary.json").read_text()) if (out / "run").exists() else {}
    )
    return JobRun(seconds, usage.ru_maxrss / 1024, process.returncode, summary)


def bare_loop(url: str, rows: int, concurrency: int) -> float:
    """Seconds for a loop that does nothing but POST, with the same concurrency: the ceiling."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=concurrency)
    session.mount("http://", adapter)
    session.auth = (ACCOUNT, TOKEN)

    def post(n: int) -> int:
        return session.post(
            f"{url}/v2/WebChats", data={"AddressSid": f"IG{n % 97:032x}"}, timeout=30
        ).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        statuses = Counter(pool.map(post, range(rows)))
    assert statuses[201] == rows, statuses
    return time.perf_counter() - started


def most_in_one_second(times: list[float]) -> int:
    """The largest number of answers in any one-second window (sliding)."""
    times = sorted(times)
    best, start = 0, 0
    for end, moment in enumerate(times):
        while times[start] <= moment - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


@dataclass
class Row:
    name: str
    figure: str
    target: str
    met: bool | None


def overhead(work: Path) -> list[Row]:
    rows = 5000
    source = make_input(work / "overhead.csv", rows)
    with emulator(work) as api:
        bare = bare_loop(api.url, rows, 8)
    with emulator(work) as api:
        job = run_job(source, work, "--base-url", api.url, "--rate", "0", "--concurrency", "8")
    ratio = (rows / job.send_seconds) / (rows / bare)
    print(
        f"overhead: bare loop {rows / bare:,.0f} rows/s; provisioner {rows / job.send_seconds:,.0f} rows/s "
        f"sending ({rows / job.seconds:,.0f} rows/s whole process, start-up and validation included)"
    )
    return [
        Row(
            "1. overhead, no latency, concurrency 8",
            f"{ratio:.0%} of a bare requests loop "
            f"({rows / job.send_seconds:,.0f} vs {rows / bare:,.0f} rows/s; "
            f"{rows / job.seconds:,.0f} rows/s whole process)",
            ">= 90 %",
            ratio >= 0.90,
        )
    ]


def latency_bound(work: Path) -> list[Row]:
    rows, latency, concurrency = 1600, 0.2, 32
    source = make_input(work / "latency.csv", rows)
    with emulator(work, "--latency-ms", "200") as api:
        job = run_job(
            source, work, "--base-url", api.url, "--rate", "0", "--concurrency", str(concurrency)
        )
    ideal = rows * latency / concurrency
    excess = job.send_seconds / ideal - 1
    print(f"latency-bound: {job.send_seconds:.2f} s against ideal {ideal:.2f} s ({excess:+.1%})")
    return [
        Row(
            "2. latency 200 ms, concurrency 32",
            f"{job.send_seconds:.2f} s vs ideal {ideal:.2f} s ({excess:+.1%})",
            "within 5 %",
            abs(excess) <= 0.05,
        )
    ]


def rate_bound(work: Path) -> list[Row]:
    rows, rate = 2000, 50
    source = make_input(work / "rate.csv", rows)
    with emulator(work) as api:
        job = run_job(source, work, "--base-url", api.url, "--rate", str(rate))
    ideal = rows / rate
    excess = job.send_seconds / ideal - 1
    busiest = most_in_one_second([moment for moment, _ in api.answers])
    print(
        f"rate-bound: {job.send_seconds:.2f} s against ideal {ideal:.2f} s ({excess:+.1%}); "
        f"busiest second {busiest} requests"
    )
    return [
        Row(
            "3. --rate 50, 2,000 rows",
            f"{job.send_seconds:.2f} s vs ideal {ideal:.2f} s ({excess:+.1%})",
            "within 5 %",
            abs(excess) <= 0.05,
        ),
        Row(
            "3. busiest one-second window",
            f"{busiest} requests",
            f"<= {rate} (+ burst <= 8)",
            busiest <= rate + 8,
        ),
    ]


def adaptive(work: Path) -> list[Row]:
    rows, limit = 2000, 40
    source = make_input(work / "adaptive.csv", rows)
    with emulator(work, "--rate-limit", str(limit)) as api:
        job = run_job(source, work, "--base-url", api.url, "--rate", "200")
    statuses = api.statuses()
    share = statuses[429] / max(sum(statuses.values()), 1)
    throughput = rows / job.send_seconds
    settled = job.summary["rate"]["settled"]
    print(
        f"adaptive: {statuses[429]} of {sum(statuses.values())} answers were 429 ({share:.1%}); "
        f"{throughput:.1f} rows/s against a limit of {limit}/s; settled at {settled:.1f}/s"
    )
    plot_rates(api.answers, limit, HERE / "adaptive.png")
    return [
        Row(
            "4. adaptive: share of 429s (limit 40/s, --rate 200)",
            f"{share:.1%} ({statuses[429]} of {sum(statuses.values())})",
            "< 5 %",
            share < 0.05,
        ),
        Row(
            "4. adaptive: throughput",
            f"{throughput:.1f} rows/s = {throughput / limit:.0%} of 40/s; settled at "
            f"{settled:.1f}/s",
            ">= 85 %",
            throughput / limit >= 0.85,
        ),
    ]


def plot_rates(answers: list[tuple[float, int]], limit: float, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return
    start = min(moment for moment, _ in answers)
    seconds = int(max(moment for moment, _ in answers) - start) + 1
    accepted, throttled = [0] * seconds, [0] * seconds
    for moment, status in answers:
        (throttled if status == 429 else accepted)[int(moment - start)] += 1
    figure, axes = plt.subplots(figsize=(9, 4))
    axes.bar(range(seconds), accepted, label="accepted (201)", color="#2a7")
    axes.bar(range(seconds), throttled, bottom=accepted, label="throttled (429)", color="#d43")
    axes.axhline(limit, color="black", linestyle="--", label=f"account limit {limit:g}/s")
    axes.set_xlabel("seconds since the first request")
    axes.set_ylabel("requests per second")
    axes.set_title("provisioner started at --rate 200 against a 40/s limit")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"plot: {path}")


def alternatives(work: Path) -> list[Row]:
    from twilio.base.exceptions import TwilioRestException
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    rows, limit = 1000, 40
    source = make_input(work / "alternatives.csv", rows)
    options = ("--latency-ms", "50", "--rate-limit", str(limit))

    def sdk_client(url: str, pool: int) -> Client:
        http = TwilioHttpClient(pool_connections=True, max_retries=None)
        http.session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=pool))
        client = Client(ACCOUNT, TOKEN, http_client=http)
        client.flex_api.base_url = url
        return client

    def create_with(client: Client) -> Callable[[int], str]:
        def create(n: int) -> str:
            try:
                client.flex_api.v2.web_channels.create(
                    address_sid=f"IG{n % 97:032x}", customer_friendly_name=f"Customer {n}"
                )
                return "created"
            except TwilioRestException as error:
                return str(error.status)

        return create

    with emulator(work, *options) as api:
        started = time.perf_counter()
        serial = Counter(map(create_with(sdk_client(api.url, 1)), range(rows)))
        serial_seconds = time.perf_counter() - started
    with emulator(work, *options) as api:
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            threaded = Counter(pool.map(create_with(sdk_client(api.url, 8)), range(rows)))
        threaded_seconds = time.perf_counter() - started
    with emulator(work, *options) as api:
        job = run_job(source, work, "--base-url", api.url, "--rate", "200", "--concurrency", "8")
    job_429 = api.statuses()[429]  # the answers are read when the emulator stops
    created = job.summary["counts"]["created"]
    print(
        f"alternatives: SDK loop {serial_seconds:.1f} s {dict(serial)}; SDK + 8 threads "
        f"{threaded_seconds:.1f} s {dict(threaded)}; provisioner {job.seconds:.1f} s, {created} created, "
        f"{job_429} answers 429 (retried)"
    )
    return [
        Row(
            "5. SDK, plain loop (50 ms latency, 40/s limit)",
            f"{serial_seconds:.1f} s, {serial['created']} created; "
            f"provisioner is {serial_seconds / job.seconds:.1f}x faster",
            "",
            None,
        ),
        Row(
            "5. SDK, 8 threads, no limiter",
            f"{threaded_seconds:.1f} s, {threaded['created']} created, "
            f"{rows - threaded['created']} failed ({threaded['429']} on 429)",
            "",
            None,
        ),
        Row(
            "5. provisioner --rate 200 --concurrency 8",
            f"{job.seconds:.1f} s whole process, {created} created, "
            f"0 failed; {job_429} answers were 429, all retried",
            "",
            created == rows,
        ),
    ]


def scale(work: Path, rows: int = 100_000) -> list[Row]:
    source = make_input(work / "scale.csv", rows)
    with emulator(work) as api:
        job = run_job(source, work, "--base-url", api.url, "--rate", "0")
    print(
        f"scale: {rows:,} rows in {job.seconds:.1f} s ({rows / job.seconds:,.0f} rows/s), "
        f"peak RSS {job.peak_mb:.0f} MB, exit {job.exit_code}"
    )
    return [
        Row(
            f"6. scale: {rows:,} rows, no latency",
            f"{rows / job.seconds:,.0f} rows/s whole process, peak RSS {job.peak_mb:.0f} MB",
            "< 250 MB",
            job.peak_mb < 250 and job.exit_code == 0,
        )
    ]


def million(work: Path, real: bool) -> list[Row]:
    rows = 1_000_000
    source = make_input(work / "million.csv", rows)
    size = source.stat().st_size / 1e6
    job = run_job(source, work, "--dry-run")
    print(
        f"million, dry run: {job.seconds:.1f} s, peak RSS {job.peak_mb:.0f} MB ({size:.0f} MB input)"
    )
    result = [
        Row(
            f"7. 1,000,000 rows ({size:.0f} MB), --dry-run",
            f"{job.seconds:.0f} s, peak RSS {job.peak_mb:.0f} MB",
            "< 250 MB",
            job.peak_mb < 250 and job.exit_code == 0,
        )
    ]
    if real:
        result += [
            Row(r.name.replace("6. scale", "7. real run"), r.figure, r.target, r.met)
            for r in scale(work, rows)
        ]
    return result


BENCHMARKS: dict[str, Callable[[Path], list[Row]]] = {
    "overhead": overhead,
    "latency": latency_bound,
    "rate": rate_bound,
    "adaptive": adaptive,
    "alternatives": alternatives,
    "scale": scale,
}


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help=f"comma-separated: {', '.join([*BENCHMARKS, 'million'])}")
    parser.add_argument(
        "--million-real", action="store_true", help="also send a million rows (~20 min)"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave RESULTS.md alone"
    )
    arguments = parser.parse_args()
    chosen = arguments.only.split(",") if arguments.only else [*BENCHMARKS, "million"]
    results: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        for name in chosen:
            work = Path(folder) / name
            work.mkdir()
            if name == "million":
                results += million(work, arguments.million_real)
            else:
                results += BENCHMARKS[name](work)
    lines = [
        "# Benchmark results",
        "",
        f"Made by `python benchmarks/run.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {machine()}. The emulator runs in its own process on 127.0.0.1, sharing the cores.",
        "",
        "| benchmark | figure | target | met |",
        "|---|---|---|---|",
        *(
            f"| {r.name} | {r.figure} | {r.target} | {'' if r.met is None else 'yes' if r.met else 'NO'} |"
            for r in results
        ),
        "",
    ]
    if "adaptive" in chosen:
        lines += [
            "Sending rate over time in the adaptive benchmark:",
            "",
            "![adaptive](adaptive.png)",
            "",
        ]
    print("\n".join(lines))
    if not arguments.no_write:
        (HERE / "RESULTS.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
