"""Inputs that break naive readers: open quotes, huge cells, a file changed mid-run, repeated
keys, headers named like the tool's columns, named pipes, devices, sockets, standard input.
"""

from __future__ import annotations

import csv
import io
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.cli import cli
from provisioner.result_columns import RESULT_COLUMNS
from provisioner.runtime import Runtime
from tests.conftest import (
    CUSTOMER_HEADER,
    Cli,
    customers,
    read_csv,
    sid,
    write_csv,
)
from tests.run_checks import (
    SEED,
    assert_no_secret,
    check_run,
    creations_per_customer,
    error_lines,
    finish,
    no_secret_in,
    no_secret_in_any_file,  # noqa: F401  (autouse: no secret in any file a test leaves)
    run_args,
    start,
    wait_until,
)

OPEN_QUOTES = {
    "in-the-middle": (["C1,{1},Customer 1", 'C2,{2},"Customer 2', "C3,{3},Customer 3"], 3),
    "in-the-last-row": (["C1,{1},Customer 1", "C2,{2},Customer 2", 'C3,{3},"Customer 3'], 4),
    "closed-by-a-later-row": (
        ["C1,{1},Customer 1", 'C2,{2},"Customer 2', 'C3,{3},Customer 3"', "C4,{4},Customer 4"],
        3,
    ),
}


@pytest.mark.parametrize(("lines", "line"), OPEN_QUOTES.values(), ids=OPEN_QUOTES.keys())
def test_a_quote_left_open_is_refused_naming_its_line_and_nothing_is_sent(
    provisioner: Cli, tmp_path: Path, lines: list[str], line: int
) -> None:
    body = [text.format(*(sid(n) for n in range(5))) for text in lines]
    source = tmp_path / "in.csv"
    source.write_text("\n".join([",".join(CUSTOMER_HEADER), *body]) + "\n")

    result = provisioner("create", str(source), expect=2)

    (message,) = error_lines(result)
    assert f"line {line}" in message
    assert "quote" in message
    assert provisioner.emulator.requests == 0
    assert not (provisioner.out / "ledger.sqlite").exists()
    assert "Traceback" not in result.output
    no_secret_in(provisioner, result.output)


def test_a_cell_longer_than_the_csv_modules_default_limit_is_read(
    provisioner: Cli, tmp_path: Path
) -> None:
    generator = random.Random(SEED)
    inside = "".join(generator.choice('abcdef \n,"') for _ in range(200_000))
    long_note = f"[{inside}]"  # > 128 kB, with no surrounding space to trim
    header = [*CUSTOMER_HEADER, "Notes"]
    rows = [[*row, long_note if n == 0 else "short"] for n, row in enumerate(customers(2))]
    source = write_csv(tmp_path / "in.csv", header, rows)

    result = provisioner("create", str(source), "--run-id", "r1", expect=0)

    no_secret_in(provisioner, result.output)
    results = check_run(provisioner.run_dir("r1"), rows=2, exit_code=0)
    assert [r["status"] for r in results] == ["created", "created"]
    assert [r["Notes"] for r in read_csv(provisioner.run_dir("r1") / "results.csv")] == [
        long_note,
        "short",
    ]
    assert provisioner.emulator.requests == 2
    assert all("Notes" not in chat.parameters for chat in provisioner.emulator.created)


@pytest.mark.slow
@pytest.mark.parametrize("change", ["truncated", "rewritten"])
def test_an_input_changed_during_the_run_does_not_change_it(
    provisioner: Cli, tmp_path: Path, change: str
) -> None:
    rows = 200
    provisioner.emulator.latency = 0.01
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))
    original = source.read_bytes()
    arguments = run_args(provisioner.emulator, source, provisioner.out, "r1", "--concurrency", "2")
    process = start(arguments, provisioner.env())
    wait_until(lambda: len(provisioner.emulator.created) >= 10, process)

    if change == "truncated":
        source.write_bytes(original[: len(original) // 3])
    else:
        write_csv(source, CUSTOMER_HEADER, customers(rows, start=1000))
    stdout, stderr = finish(process)

    assert process.returncode == 0, stderr
    results = check_run(provisioner.run_dir("r1"), rows=rows, exit_code=0)
    assert {r["status"] for r in results} == {"created"}
    assert creations_per_customer(provisioner.emulator) == Counter(
        {f"Customer {n}": 1 for n in range(1, rows + 1)}
    )
    assert (provisioner.run_dir("r1") / "input.csv").read_bytes() == original
    assert_no_secret(provisioner.emulator.username, [stdout, stderr], provisioner.out)


def test_a_repeated_row_key_is_sent_once_and_the_second_is_invalid(
    provisioner: Cli, tmp_path: Path
) -> None:
    header = ["row_key", "AddressSid", "CustomerFriendlyName"]
    rows = [["K1", sid(1), "First"], ["K1", sid(2), "Joined twice"], ["K2", sid(3), "Other"]]
    source = write_csv(tmp_path / "in.csv", header, rows)

    result = provisioner("create", str(source), "--run-id", "r1", expect=1)

    no_secret_in(provisioner, result.output)
    results = check_run(provisioner.run_dir("r1"), rows=3, exit_code=1)
    assert [r["status"] for r in results] == ["created", "invalid", "created"]
    assert results[1]["error_code"] == "duplicate_row_key"
    sent = Counter(chat.parameters["CustomerFriendlyName"] for chat in provisioner.emulator.created)
    assert sent == Counter({"First": 1, "Other": 1})  # in any order: rows go concurrently


def test_headers_named_row_status_identity_are_the_users_own_columns(
    provisioner: Cli, tmp_path: Path
) -> None:
    header = ["AddressSid", "row", "status", "identity"]
    rows = [[sid(1), "7", "vip", "customer-one"], [sid(2), "8", "new", "customer-two"]]
    source = write_csv(tmp_path / "in.csv", header, rows)

    result = provisioner("create", str(source), "--run-id", "r1", expect=0)

    no_secret_in(provisioner, result.output)
    results = check_run(provisioner.run_dir("r1"), rows=2, exit_code=0)
    assert [r["status"] for r in results] == ["created", "created"]
    assert [r["identity"] for r in results] == ["customer-one", "customer-two"]
    with (provisioner.run_dir("r1") / "results.csv").open(encoding="utf-8-sig") as stream:
        written = list(csv.reader(stream))
    assert written[0] == [*header, *RESULT_COLUMNS]
    assert [record[: len(header)] for record in written[1:]] == rows
    sent = Counter(chat.parameters.get("Identity") for chat in provisioner.emulator.created)
    assert sent == Counter({"customer-one": 1, "customer-two": 1})


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[Path, bytes]]:
    """A named pipe that a writer thread fills with a CSV once the run opens it."""
    path = tmp_path / "in.csv"
    os.mkfifo(path)
    data = write_csv(tmp_path / "data.csv", CUSTOMER_HEADER, customers(3)).read_bytes()

    def feed() -> None:
        with path.open("wb") as stream:  # blocks until the run opens the pipe
            stream.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    yield path, data
    if writer.is_alive():  # the run never opened it: open the reading end so the writer ends
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        writer.join(5)
        os.close(descriptor)


def test_a_named_pipe_is_read_whole(provisioner: Cli, fifo: tuple[Path, bytes]) -> None:
    path, data = fifo

    result = provisioner("create", str(path), "--run-id", "r1", expect=0)

    results = check_run(provisioner.run_dir("r1"), rows=3, exit_code=0)
    assert {r["status"] for r in results} == {"created"}
    assert (provisioner.run_dir("r1") / "input.csv").read_bytes() == data
    assert provisioner.emulator.requests == 3
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_refused_at_once(provisioner: Cli, device: str) -> None:
    if not Path(device).exists():
        pytest.skip(f"{device} does not exist here")
    started = time.monotonic()

    result = provisioner("create", device, expect=2)

    assert time.monotonic() - started < 5
    (message,) = error_lines(result)
    assert device in message
    assert "device" in message
    no_secret_in(provisioner, result.output)
    assert provisioner.emulator.requests == 0
    assert not provisioner.out.exists()


def test_standard_input_is_read_whole(provisioner: Cli, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "data.csv", CUSTOMER_HEADER, customers(3)).read_bytes()
    runtime = Runtime(sleep=provisioner.sleeps, env=provisioner.env(), stdin=io.BytesIO(data))
    arguments = ["create", "-", "--out", str(provisioner.out), "--run-id", "r1"]
    arguments += ["--base-url", provisioner.emulator.url]

    result = CliRunner().invoke(cli, arguments, obj=runtime, catch_exceptions=False)

    assert result.exit_code == 0, result.output
    results = check_run(provisioner.run_dir("r1"), rows=3, exit_code=0)
    assert {r["status"] for r in results} == {"created"}
    assert (provisioner.run_dir("r1") / "input.csv").read_bytes() == data
    no_secret_in(provisioner, result.output)


def test_a_named_pipe_nobody_writes_to_is_refused_without_hanging(
    provisioner: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("provisioner.table.FIFO_WRITER_WAIT_SECONDS", 0.2)
    path = tmp_path / "in.csv"
    os.mkfifo(path)
    started = time.monotonic()

    result = provisioner("create", str(path), expect=2)

    assert time.monotonic() - started < 5
    (message,) = error_lines(result)
    assert "FIFO" in message
    no_secret_in(provisioner, result.output)
    assert provisioner.emulator.requests == 0
    assert not provisioner.out.exists()


def test_a_socket_is_refused_at_once(provisioner: Cli, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        result = provisioner("create", str(path), expect=2)

    (message,) = error_lines(result)
    assert "socket" in message
    no_secret_in(provisioner, result.output)
    assert provisioner.emulator.requests == 0
