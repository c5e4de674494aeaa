"""Run a command and write what the OS accounted for it: a small launcher between benchmark and job.

    python -m benchmarks.measured USAGE.json COMMAND [ARGUMENT...]

Why a launcher: on Linux, a child's ru_maxrss (from wait4) is at least the RSS high-water mark
of the process it was forked (or vforked, as subprocess does) from, since exec keeps the old
memory's peak. Started straight from the benchmark process, which has grown while making
inputs, every job would report the benchmark's peak (a 100 MB job showed 132 MB, a bare
`python -c pass` 511 MB under a 500 MB parent). Started from this launcher, a fresh interpreter
that imports next to nothing, the floor is the launcher's own ~10 MB. The command inherits
the launcher's standard streams; USAGE.json gets seconds, cpu (user + sys) and peak_kib.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    """Run the command, wait for it with wait4, write its usage, exit with its exit code."""
    usage_path, command = Path(sys.argv[1]), sys.argv[2:]
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    usage_path.write_text(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": usage.ru_utime + usage.ru_stime,
                "peak_kib": usage.ru_maxrss,
                "exit_code": code,
            }
        )
    )
    sys.exit(code if code >= 0 else 1)


if __name__ == "__main__":
    main()
