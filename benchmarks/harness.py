"""What every benchmark needs: inputs, the emulator's record, the job as a measured process.

How a request's send time is known. The emulator records each answer (`seconds,status,kind`,
monotonic clock) in its handler, just before the answer's bytes leave. A request reaches the
emulator over loopback within tens of microseconds of being sent, and the handler's own work
before recording is well under a millisecond; what lies between arrival and record is the
emulator's deliberate delay, `--latency-ms`, which it sleeps only before a successful (2xx)
answer (429s and other refusals are answered at once). So a request's send time is its record
time minus that latency for a 2xx answer, and its record time otherwise: exact to about a
millisecond. The provisioner's own run.log has no line per request, so the job's side cannot
say more; and a job measured in its own process is the job as operators run it.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.emulator import spawn
from tests.earlier_run import record_earlier_run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ACCOUNT = "AC" + "0" * 32
TOKEN = "emulator-token"  # the emulator's own stand-alone secret; never a real one
# No PROVISIONER_* setting from the shell reaches a job: the options written here are all it gets.
# A batch alone on the account (no live site): issue 21's reserve off, today's behaviour.
ALONE = ("--reserve", "0")
ENV = {
    **{name: value for name, value in os.environ.items() if not name.startswith("PROVISIONER_")},
    "TWILIO_ACCOUNT_SID": ACCOUNT,
    "TWILIO_AUTH_TOKEN": TOKEN,
    "PYTHONPATH": str(ROOT),  # `python -m benchmarks.bare_loop` from any folder
}
ADDRESSES = 97  # distinct AddressSids in a generated input: rows share them, as real ones do
MB = 1024 * 1024
KIB_PER_MB = 1024  # ru_maxrss is in KiB on Linux (see benchmarks/measured.py for its floor)
CREATED = 201
THROTTLED = 429


@dataclass(frozen=True)
class Result:
    """One line of RESULTS.md: a figure computed from the run, its target, and the verdict."""

    benchmark: str
    figure: str
    target: str = ""
    met: bool | None = None  # None: a figure with no target, shown for context


# ---------------------------------------------------------------- inputs

HEADER = (
    "customer_id",
    "AddressSid",
    "ChatFriendlyName",
    "CustomerFriendlyName",
    "PreEngagementData",
    "Note",
)


def input_row(n: int, addresses: int = ADDRESSES) -> tuple[str, ...]:
    """Row `n` of a generated input: an id, an address, two names, pre-engagement JSON, a note."""
    return (
        f"C{n:08d}",
        address_sid(n % addresses),
        "Onboarding",
        f"Customer {n}",
        json.dumps({"email": f"c{n}@example.com"}),
        f"batch {n // 1000}",
    )


def address_sid(number: int) -> str:
    """A well-formed AddressSid, distinct per number."""
    return f"IG{number:032x}"


def make_input(path: Path, rows: int, addresses: int = ADDRESSES) -> Path:
    """A CSV of `rows` generated rows, about 120 bytes each."""
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(input_row(n, addresses) for n in range(rows))
    return path


# ---------------------------------------------------------------- the emulator's record


@dataclass(frozen=True)
class Answered:
    """One answer the emulator sent, and when its request was sent (see the module's docstring)."""

    seconds: float  # monotonic, when the answer left
    status: int
    kind: str  # create | lookup | close | other
    sent: float  # monotonic, when the request was sent


@dataclass
class Served:
    """An emulator for one benchmark: its URL, its delay, and (once stopped) what it answered."""

    url: str
    latency: float
    answers: list[Answered] = field(default_factory=list)

    def read(self, rows: Sequence[tuple[float, int, str]]) -> None:
        """Take in recorded answers, with the send time of each."""
        self.answers = sorted(
            (
                Answered(seconds, status, kind, sent_time(seconds, status, self.latency))
                for seconds, status, kind in rows
            ),
            key=lambda answer: answer.sent,
        )

    def statuses(self, kind: str | None = "create") -> Counter[int]:
        """How many answers of each status (of one kind of request; None: all)."""
        return Counter(a.status for a in self.answers if kind is None or a.kind == kind)

    def sends(self, kind: str | None = "create") -> list[float]:
        """Send times of the requests (of one kind; None: all), in order."""
        return [a.sent for a in self.answers if kind is None or a.kind == kind]

    def span(self) -> float:
        """Seconds from the first request sent to the last answer."""
        return max(a.seconds for a in self.answers) - min(a.sent for a in self.answers)

    def share_throttled(self) -> tuple[float, int, int]:
        """Share of all requests answered 429, the 429s, and the requests."""
        statuses = self.statuses(None)
        total = sum(statuses.values())
        return statuses[THROTTLED] / max(total, 1), statuses[THROTTLED], total


def sent_time(seconds: float, status: int, latency: float) -> float:
    """When a request was sent, from when its answer was recorded: 2xx answers waited `latency`."""
    return seconds - latency if 200 <= status < 300 else seconds


def read_record(path: Path) -> list[tuple[float, int, str]]:
    """The emulator's `--record` file: `seconds,status,kind` rows."""
    with path.open(newline="") as stream:
        return [(float(r["seconds"]), int(r["status"]), r["kind"]) for r in csv.DictReader(stream)]


@contextmanager
def emulator(
    work: Path,
    *,
    latency: float = 0.0,
    rate_limit: float | None = None,
    max_concurrent: int | None = None,
) -> Iterator[Served]:
    """`provisioner emulator` in its own process (through `spawn`); its answers read when it stops."""
    record = work / f"answers-{time.monotonic_ns()}.csv"
    options = ["--record", str(record), "--latency-ms", f"{latency * 1000:g}"]
    if rate_limit is not None:
        options += ["--rate-limit", f"{rate_limit:g}"]
    if max_concurrent is not None:
        options += ["--max-concurrent", str(max_concurrent)]
    process = spawn(options, ENV)
    served = Served(process.url, latency)
    try:
        yield served
    finally:
        code = process.stop()
        if code != 0 or not record.exists():
            raise RuntimeError(f"the emulator ended with {code}: {process.said[-2000:]}")
        served.read(read_record(record))


def most_in_one_second(times: Sequence[float]) -> int:
    """The most requests sent in any one-second window (sliding, half-open: (t - 1, t])."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


# ---------------------------------------------------------------- measured processes


@dataclass(frozen=True)
class Finished:
    """A process that ended: wall seconds, CPU seconds and peak RSS from wait4, exit code."""

    seconds: float
    cpu: float  # user + system seconds of the process itself
    peak_mb: float
    exit_code: int
    stderr: str


def measure(
    command: Sequence[str], env: dict[str, str], stdout: Path, cwd: Path = ROOT
) -> Finished:
    """Run `command` through benchmarks.measured: its own wall time, CPU time and peak RSS.

    Its standard output goes to `stdout`, its standard error beside it (`.stderr`), and the
    OS's accounting of it (wait4, in the launcher) beside that (`.usage.json`).
    """
    stderr_path, usage_path = stdout.with_suffix(".stderr"), stdout.with_suffix(".usage.json")
    launcher = [sys.executable, "-m", "benchmarks.measured", str(usage_path)]
    # Files, not pipes: a pipe nobody reads while the child runs fills up and stalls it.
    with stdout.open("wb") as out, stderr_path.open("wb") as err:
        subprocess.run(
            [*launcher, *command],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            check=False,
        )
    usage = json.loads(usage_path.read_text())
    return Finished(
        usage["seconds"],
        usage["cpu"],
        usage["peak_kib"] / KIB_PER_MB,
        usage["exit_code"],
        stderr_path.read_text(errors="replace"),
    )


@dataclass(frozen=True)
class JobRun:
    """One `provisioner create` process: what wait4 said, and its summary.json."""

    process: Finished
    summary: dict[str, Any]

    @property
    def created(self) -> int:
        """Rows created."""
        return int(self.summary.get("counts", {}).get("created", 0))

    @property
    def timeline(self) -> list[dict[str, Any]]:
        """Requests, 429s and the limits learnt, a point per bucket (see limits_timeline.Timeline)."""
        return list(self.summary.get("timeline", []))


def run_job(
    source: Path,
    work: Path,
    *options: str,
    env: dict[str, str] | None = None,
    expect: tuple[int, ...] = (0, 1),
    new_ledger: bool = False,
) -> JobRun:
    """`provisioner create SOURCE OPTIONS` in a child process, measured; stderr shown if unexpected.

    A run given `--base-url` starts from a ledger that an earlier, finished run in the same
    account and host wrote, as an operator's ledger in steady use is: a ledger new to them
    would look every row up before its first send (prelookup.py), which only `new_ledger`
    runs (the first-lookup benchmark) are meant to measure.
    """
    out = work / f"out-{time.monotonic_ns()}"
    out.mkdir(parents=True)
    if not new_ledger and "--base-url" in options:
        base_url = options[options.index("--base-url") + 1]
        account = (env or ENV).get("TWILIO_ACCOUNT_SID", ACCOUNT)
        record_earlier_run(out / "ledger.sqlite", account, base_url)
    command = [sys.executable, "-m", "provisioner", "create", str(source)]
    command += ["--out", str(out), "--run-id", "run", *options]
    # Run from the work folder: a provisioner.toml in the checkout must not change the options.
    finished = measure(command, env or ENV, stdout=out / "stdout.txt", cwd=work)
    summary_file = out / "run" / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    if finished.exit_code not in expect:
        print(f"  exit {finished.exit_code}: {finished.stderr[-1500:]}", file=sys.stderr)
    return JobRun(finished, summary)


def verdict(met: bool | None) -> str:
    """The `met` column."""
    return "" if met is None else "yes" if met else "NO"
