"""Throughput, account limits and memory benchmarks of `provisioner create`, on loopback.

    pip install -e '.[bench]' && python benchmarks/run.py       # all; writes RESULTS.md and PNGs
    python benchmarks/run.py --only overhead,rate                 # some (names: --help)
    python benchmarks/run.py --million-real                       # adds a 1,000,000-row real run

Each benchmark starts the emulator in its own process (`provisioner.emulator.spawn`, recording
every answer), runs the job in another and measures that process: wall time, CPU time and
peak RSS from wait4, in a small launcher (measured.py says why). Every figure, verdict and
machine fact in RESULTS.md is computed by this run. Modules: harness (inputs, records,
measured processes; how a send time is known), throughput, accounts (Twilio's limits),
memory (scale, workbooks, bombs), plots; bare_loop and sdk_loop are the clients the job is
compared with, measured the same way; paced_loop calibrates the send times; measured is the
launcher.
Not part of the test suite: timings depend on the machine. About 20 minutes on 2 cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python benchmarks/run.py` from the checkout; tests.hostile

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import provisioner  # noqa: E402
from benchmarks import accounts, cotenant, memory, throughput  # noqa: E402
from benchmarks.harness import HERE, Result, verdict  # noqa: E402

Benchmark = Callable[[Path], list[Result]]
BENCHMARKS: dict[str, Benchmark] = {
    "overhead": throughput.overhead,
    "latency": throughput.latency_bound,
    "rate": throughput.rate_bound,
    "adaptive": throughput.adaptive,
    "concurrency-cap": accounts.concurrency_cap,
    "twilio-shape": accounts.twilio_shape,
    "first-lookup": accounts.first_lookup,
    "rate-only": accounts.rate_only,
    "early-429": accounts.early_429,
    "co-tenant": cotenant.cotenant,
    "alternatives": throughput.alternatives,
    "scale": memory.scale,
    "million": lambda work: memory.million(work, real=False),
    "workbook": memory.workbook,
    "zip-bomb": memory.zip_bomb,
    "gzip-bomb": memory.gzip_bomb,
}
PLOTS = {  # the PNG each benchmark writes, linked from RESULTS.md when it ran
    "latency": "latency.png",
    "rate": "rate.png",
    "adaptive": "adaptive.png",
    "concurrency-cap": "concurrency-cap.png",
    "twilio-shape": "twilio-shape.png",
    "rate-only": "rate-only.png",
    "early-429": "early-429.png",
    "co-tenant": "co-tenant.png",
}


def machine() -> str:
    """Cores, CPU model, memory, OS and Python of this machine, as read now."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({model}), {memory_gib:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def revision() -> str:
    """The checkout's commit, and whether files differ from it."""

    def git(*arguments: str) -> str:
        done = subprocess.run(
            ["git", *arguments], cwd=ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # This run's own outputs (RESULTS.md, the charts) are written before it is asked.
    changed = git(
        "status", "--porcelain", "--", ".", ":!benchmarks/*.png", ":!benchmarks/RESULTS.md"
    )
    return commit + (" with local changes" if changed else "")


def report(results: list[Result], chosen: list[str], started: datetime, seconds: float) -> str:
    """RESULTS.md: how it was made, on what, the table, the plots."""
    command = " ".join(["python benchmarks/run.py", *sys.argv[1:]])
    lines = [
        "# Benchmark results",
        "",
        f"Made by `{command}` on {started:%Y-%m-%d %H:%M} UTC in {seconds / 60:.1f} minutes, "
        f"provisioner {provisioner.__version__} at {revision()}.",
        f"Machine: {machine()}. The emulator runs in its own process on 127.0.0.1, sharing "
        "the cores. Every figure below is computed by that run; how each is measured is in "
        "benchmarks/ (harness.py says how a request's send time is known). Every scenario "
        "but first-lookup runs on a ledger that an earlier, finished run in the same account "
        "and host wrote, as an operator's ledger in steady use is, so no row is looked up "
        "before its first send; first-lookup measures a new ledger's first run.",
        "",
        "| benchmark | figure | target | met |",
        "|---|---|---|---|",
        *(
            f"| {r.benchmark} | {r.figure.replace('|', '/')} | {r.target} | {verdict(r.met)} |"
            for r in results
        ),
        "",
    ]
    targets = [r for r in results if r.met is not None]
    missed = [r for r in targets if not r.met]
    lines += [f"{len(targets) - len(missed)} of {len(targets)} targets met.", ""]
    plots = [
        (name, PLOTS[name]) for name in chosen if name in PLOTS and (HERE / PLOTS[name]).exists()
    ]
    if plots:
        lines += [
            "## The job's own timeline, per scenario",
            "",
            "Requests sent per second (429s in red), the rate the job allowed itself and the "
            "requests in flight it allowed, from summary.json's `timeline`; dashed: the server's "
            "limits.",
            "",
        ]
        for name, png in plots:
            lines += [f"### {name}", "", f"![{name}]({png})", ""]
    return "\n".join(lines)


def main() -> None:
    """Run the chosen benchmarks, print their figures, write RESULTS.md."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help=f"comma-separated: {', '.join(BENCHMARKS)}")
    parser.add_argument(
        "--million-real", action="store_true", help="also send a million rows (~15 min)"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave RESULTS.md alone"
    )
    arguments = parser.parse_args()
    chosen = arguments.only.split(",") if arguments.only else list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if arguments.million_real:
        BENCHMARKS["million"] = lambda work: memory.million(work, real=True)
        chosen += [] if "million" in chosen else ["million"]
    started, clock = datetime.now(UTC), time.perf_counter()
    results: list[Result] = []
    for name in chosen:
        print(f"== {name}", flush=True)
        began = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder:
            try:
                results += BENCHMARKS[name](Path(folder))
            except Exception as error:  # one broken benchmark must not lose the others' figures
                traceback.print_exc()
                results.append(Result(name, f"did not run: {error!r}"[:300], "runs", False))
        print(f"   ({time.perf_counter() - began:.0f} s)", flush=True)
    text = report(results, chosen, started, time.perf_counter() - clock)
    print(text)
    if not arguments.no_write:
        (HERE / "RESULTS.md").write_text(text)


if __name__ == "__main__":
    main()
