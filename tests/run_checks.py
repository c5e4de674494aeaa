"""A run checked as a user would: its files, statuses, exit code, what a server received,
and that no form of the secret appears anywhere (shared by the end-to-end hardening tests).
"""

from __future__ import annotations

import base64
import csv
import html
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from click.testing import CliRunner, Result

from provisioner.cli import cli
from provisioner.client import PARTICIPANT_CONVERSATIONS_PATH, WEB_CHATS_PATH
from provisioner.emulator import Emulator
from provisioner.result_columns import RESULT_COLUMNS
from provisioner.runtime import Runtime
from tests.conftest import (
    SECRET,
    Cli,
    read_csv,
    read_summary,
)
from tests.hostile import (
    Behaviour,
    HostileServer,
    Received,
    lookup_page,
)

STATUSES = {"created", "existing", "invalid", "failed", "not_attempted"}
ERROR_STATUSES = {"invalid", "failed", "not_attempted"}
RUN_FILES = {"results.csv", "errors.csv", "summary.json", "report.html", "run.log", "input.csv"}
SEED = 20261125  # every random choice (when a process is stopped, a long note) comes from it
PROCESS_WAIT = 30.0  # seconds a started process may take before the test gives up on it
POLL = 0.01  # seconds between looks at a running process or server


FAR_HOST = "flex-api.example.test"  # never resolved: the guard below refuses every name


@pytest.fixture(name="no_names")
def refused_names(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse name resolution for anything but loopback; the names asked for, in order."""
    asked: list[str] = []
    resolve = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(str(host))
        if host not in ("127.0.0.1", "localhost", b"127.0.0.1"):
            raise socket.gaierror(socket.EAI_NONAME, "name resolution is refused in this test")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return asked


def secret_forms(username: str, secret: str = SECRET) -> list[bytes]:
    """The secret as it could leak: plain, URL- and HTML-quoted, base64, and as Basic auth."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        html.escape(secret),
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(f"{username}:{secret}".encode()).decode(),
    }
    return [form.encode() for form in sorted(forms)]


def assert_no_secret(
    username: str, texts: Sequence[str], *folders: Path, secret: str = SECRET
) -> None:
    """No form of the secret in the texts (stdout, stderr) nor in any file under the folders."""
    forms = secret_forms(username, secret)
    for text in texts:
        for form in forms:
            assert form.decode() not in text
    for folder in folders:
        if not folder.exists():
            continue
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for form in forms:
                    assert form not in data, f"{form!r} in {path}"


@pytest.fixture(autouse=True)
def no_secret_in_any_file(provisioner: Cli) -> Iterator[None]:
    """After every test, no form of the secret in any file it left: results, logs, ledger."""
    yield
    assert_no_secret(provisioner.emulator.username, [], provisioner.workdir)


def no_secret_in(provisioner: Cli, *texts: str) -> None:
    """No form of the secret in what a run printed."""
    assert_no_secret(provisioner.emulator.username, texts)


def tool_columns(run_dir: Path) -> list[dict[str, str]]:
    """The columns the tool adds to results.csv, by name, for every row: taken from the end, so
    input columns named like them (`row`, `status`) cannot be mistaken for them."""
    with (run_dir / "results.csv").open(encoding="utf-8-sig", newline="") as stream:
        header, *records = list(csv.reader(stream))
    start = len(header) - len(RESULT_COLUMNS)
    return [dict(zip(RESULT_COLUMNS, record[start:], strict=True)) for record in records]


def check_run(run_dir: Path, rows: int, exit_code: int) -> list[dict[str, str]]:
    """Every file written, one result per input row, each with a status; the results."""
    names = {path.name for path in run_dir.iterdir()}
    assert names >= RUN_FILES - {"input.csv"}, sorted(names)
    assert any(name.startswith("input.") for name in names), sorted(names)  # the input's copy
    results = tool_columns(run_dir)
    assert len(results) == rows
    assert all(result["status"] in STATUSES for result in results), results
    errors = read_csv(run_dir / "errors.csv")
    assert len(errors) == sum(result["status"] in ERROR_STATUSES for result in results)
    summary = read_summary(run_dir)
    assert summary["exit_code"] == exit_code
    assert summary["rows"] == rows
    assert summary["counts"] == {
        status: sum(result["status"] == status for result in results)
        for status in ("created", "existing", "invalid", "failed", "not_attempted")
    }
    return results


# An error line: `error: ...` (Click's usage errors: `Error: ...`), after the date, time and
# zone that every line carries when stderr is not a terminal.
ERROR_LINE = re.compile(r"(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} )?error: ", re.IGNORECASE)


def error_lines(result: Result | str) -> list[str]:
    """The lines of stderr that report an error, from `error:` on."""
    text = result if isinstance(result, str) else result.stderr
    return [
        line[match.start(0) :] for line in text.splitlines() if (match := ERROR_LINE.match(line))
    ]


def posts(server: HostileServer) -> list[Received]:
    """The web chat creations the server received."""
    return [r for r in server.received if r.method == "POST" and r.path == WEB_CHATS_PATH]


def against(server: HostileServer, *creates: Behaviour) -> None:
    """Answer the next creations with these, then lookups with "nothing found"."""
    server.script(*creates, path=WEB_CHATS_PATH)
    server.always(PARTICIPANT_CONVERSATIONS_PATH, lookup_page(server.url, []))


def create_on(
    provisioner: Cli,
    server: HostileServer,
    source: Path,
    *extra: str,
    expect: int | None,
    run_id: str = "r1",
) -> Result:
    """`provisioner create` against a hostile server, one request at a time, no rate limit."""
    return provisioner(
        "create",
        str(source),
        "--run-id",
        run_id,
        "--base-url",
        server.url,
        "--concurrency",
        "1",
        "--rate",
        "0",
        *extra,
        base_url=False,
        expect=expect,
    )


def invoke(provisioner: Cli, *args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI with exactly these arguments (no --out or --base-url added)."""
    runtime = Runtime(sleep=provisioner.sleeps, env=provisioner.env() if env is None else env)
    return CliRunner().invoke(cli, list(args), obj=runtime, catch_exceptions=False)


def start(
    arguments: Sequence[str],
    env: dict[str, str],
    *,
    cwd: Path | None = None,
    preexec: Callable[[], None] | None = None,
) -> subprocess.Popen[str]:
    """`python -m provisioner ARGUMENTS` as a real process."""
    return subprocess.Popen(
        [sys.executable, "-m", "provisioner", *arguments],
        env={**os.environ, **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,
    )


def wait_until(
    condition: Callable[[], bool],
    process: subprocess.Popen[str] | None = None,
    what: str = "going",
) -> None:
    """Poll until `condition()`: a bounded wait for another thread or process to get somewhere
    (not a backoff). A process given must still run meanwhile; `what` says where, if it fails."""
    deadline = time.monotonic() + PROCESS_WAIT
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the run ended before it got {what}: {process.communicate()}")
        assert time.monotonic() < deadline, f"gave up waiting to get {what}"
        time.sleep(POLL)


def finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Wait for the process to end; its stdout and stderr."""
    try:
        return process.communicate(timeout=PROCESS_WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        _stdout, stderr = process.communicate()
        pytest.fail(f"the run did not end: {stderr[-2000:]}")


def run_args(emulator: Emulator, source: Path, out: Path, run_id: str, *extra: str) -> list[str]:
    """A create against the in-process emulator."""
    return [
        "create",
        str(source),
        "--out",
        str(out),
        "--run-id",
        run_id,
        "--base-url",
        emulator.url,
        "--rate",
        "0",
        *extra,
    ]


def creations_per_customer(emulator: Emulator) -> Counter[str]:
    """How many web chats the emulator created for each customer name."""
    return Counter(chat.parameters["CustomerFriendlyName"] for chat in list(emulator.created))
