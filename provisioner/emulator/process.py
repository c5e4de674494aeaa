"""The emulator as a process of its own: serving until SIGTERM, and starting one from tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

from provisioner.emulator.server import Emulator
from provisioner.emulator.service import SANDBOX_ACCOUNT_SID
from provisioner.errors import ProvisionerError

STANDALONE_SECRET = "emulator-token"  # a stand-alone emulator's default; never a real secret
URL_WAIT = 15.0  # seconds spawn() waits for the URL: a cold interpreter start on a busy machine
URL_POLL = 0.01  # seconds between looks for the URL file
STOP_WAIT = 10.0  # seconds stop() waits after SIGTERM before it kills


class EmulatorError(ProvisionerError):
    """A stand-alone emulator did not start."""


def standalone_credentials(env: Mapping[str, str]) -> tuple[str, str]:
    """What a stand-alone emulator accepts: the environment's credentials, else the sandbox's."""
    account = env.get("TWILIO_ACCOUNT_SID")
    token = env.get("TWILIO_AUTH_TOKEN")
    if account and token:
        return account, token
    return SANDBOX_ACCOUNT_SID, STANDALONE_SECRET


def summary(emulator: Emulator) -> str:
    """One line for people: what the emulator served and created."""
    creates, lookups = _count(emulator.requests, "create"), _count(emulator.lookups, "lookup")
    line = (
        f"served {creates}, {lookups} and {_count(emulator.closes, 'close')}; "
        f"created {_count(len(emulator.created), 'web chat')}; "
        f"answered {emulator.throttled} with 429"
    )
    if emulator.visitors.asked:  # --live-rate: what the batch cost the website's visitors
        line += f"; {emulator.visitor_counts().line()}"
    return line


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def write_url_file(path: Path, url: str) -> None:
    """Write the URL so that a reader sees all of it or no file (write aside, then rename)."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    aside.write_text(url + "\n", encoding="utf-8")
    os.replace(aside, path)


def serve_until_stopped(
    emulator: Emulator, *, url_file: Path | None = None, record: Path | None = None
) -> None:
    """Serve in this thread until SIGTERM or Ctrl-C; then write the answers to `record`."""

    def stop(signal_number: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # SIGTERM ends it as Ctrl-C does

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        if url_file is not None:
            write_url_file(url_file, emulator.url)
        emulator.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        emulator.shutdown()
        if url_file is not None:
            url_file.unlink(missing_ok=True)  # the file exists exactly while it listens
        if record is not None:
            emulator.write_answers(record)


class EmulatorProcess:
    """A running `provisioner emulator` process: its URL, its credentials, stop()."""

    def __init__(
        self, process: subprocess.Popen[bytes], url: str, workdir: Path, env: Mapping[str, str]
    ) -> None:
        self.process = process
        self.url = url
        self.username, self.secret = standalone_credentials(env)
        self.said = ""  # what it wrote on stderr, once stopped
        self._workdir = workdir

    def credentials_env(self) -> dict[str, str]:
        """Environment variables that authenticate against this emulator."""
        return {"TWILIO_ACCOUNT_SID": self.username, "TWILIO_AUTH_TOKEN": self.secret}

    def stop(self) -> int:
        """SIGTERM it and wait (kill it if it will not end); its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if self._workdir.exists():
            self.said = (self._workdir / "stderr.txt").read_text(errors="replace")
            shutil.rmtree(self._workdir, ignore_errors=True)
        return code

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def spawn(
    options: Sequence[str] = (), env: Mapping[str, str] | None = None, *, wait: float = URL_WAIT
) -> EmulatorProcess:
    """Start `provisioner emulator --port 0 OPTIONS` and return once it listens."""
    environment = dict(os.environ if env is None else env)
    workdir = Path(tempfile.mkdtemp(prefix="provisioner-emulator-"))
    url_file = workdir / "url"
    command = [sys.executable, "-m", "provisioner", "emulator", "--port", "0"]
    with (workdir / "stderr.txt").open("wb") as stderr:  # a file: a pipe nobody reads can fill
        process = subprocess.Popen(
            [*command, "--url-file", str(url_file), *options],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    running = EmulatorProcess(process, "", workdir, environment)
    deadline = time.monotonic() + wait
    while not url_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            running.stop()
            raise EmulatorError(f"the emulator did not start: {running.said.strip()!r}")
        time.sleep(URL_POLL)  # bounded by `wait`; the file appears once the port is bound
    running.url = url_file.read_text(encoding="utf-8").strip()
    return running
