"""A hostile pass over settings files: races between the trust check and the read, a working
directory that is gone. The real CLI, real files in tmp dirs, the emulator on loopback."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner import config
from provisioner.cli import cli
from provisioner.config import CONFIG_NAME
from provisioner.errors import ConfigError
from provisioner.runtime import Runtime
from tests.conftest import CUSTOMER_HEADER, Cli, customers, no_machine_settings, write_csv
from tests.hostile import HostileServer, Reply
from tests.run_checks import (
    FAR_HOST,
    refused_names,  # noqa: F401  (the `no_names` fixture)
)

OTHER_UID = 12345  # a user who is neither the one running the tests nor root
RESCUE_AFTER = 2.0  # seconds after which a read stuck on a FIFO is let go (the test fails)


def test_a_settings_file_swapped_in_after_its_check_is_never_read(
    provisioner: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder a team may write (2775): another member renames their own file over the
    operator's trusted provisioner.toml between the trust check and the read. What is read
    must be what was checked: the other member's host never gets the credentials."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o2775)
    mine = shared / CONFIG_NAME
    mine.write_text("[create]\nsandbox = true\nout = 'runs'\n", encoding="utf-8")
    mine.chmod(0o600)
    theirs = shared / ".theirs.toml"
    theirs.write_text(
        f"[create]\nbase_url = '{provisioner.emulator.url}'\nout = 'theirs'\n", encoding="utf-8"
    )
    theirs.chmod(0o644)
    os.chown(theirs, OTHER_UID, -1)
    source = write_csv(shared / "in.csv", CUSTOMER_HEADER, customers(2))
    checked = config.check_trusted
    swaps: list[Path] = []

    def check_then_swap(path: Path, *args: object, **kwargs: object) -> None:
        checked(path, *args, **kwargs)  # type: ignore[arg-type]
        if not swaps:  # the attacker's rename lands right after the first check passed
            os.replace(theirs, mine)
            swaps.append(path)

    monkeypatch.setattr(config, "check_trusted", check_then_swap)
    monkeypatch.chdir(shared)
    no_machine_settings(monkeypatch)
    env = provisioner.env()
    result = CliRunner().invoke(cli, ["create", str(source)], obj=Runtime(env=env), env=env)

    assert swaps, "the race was not run"
    assert provisioner.emulator.requests == 0, result.output
    assert not (shared / "theirs").exists()
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:  # the swapped-in file was the one checked, and refused
        assert f"owned by uid {OTHER_UID}" in " ".join(result.stderr.split())
    else:  # the file checked was the one read: the operator's, a sandbox run
        assert (shared / "runs").is_dir()


def test_a_fifo_swapped_in_for_the_settings_file_does_not_hang_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO where the checked file was: reading it would wait for a writer forever."""
    path = tmp_path / CONFIG_NAME
    path.write_text("[create]\nout = 'runs'\n", encoding="utf-8")
    path.chmod(0o600)
    checked = config.check_trusted

    def check_then_swap(checked_path: Path, *args: object, **kwargs: object) -> None:
        checked(checked_path, *args, **kwargs)  # type: ignore[arg-type]
        if path.is_file():
            path.unlink()
            os.mkfifo(path, 0o600)

    def unblock_a_waiting_reader() -> None:  # so that a read that waits fails, not hangs
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    monkeypatch.setattr(config, "check_trusted", check_then_swap)
    rescue = threading.Timer(RESCUE_AFTER, unblock_a_waiting_reader)
    rescue.start()
    try:
        found = config.find_config(None, tmp_path)
        assert found == path
        with pytest.raises(ConfigError, match="not a regular file"):
            config.load_config(found, {"create": [config.Setting("out", "out_dir", Path)]})
    finally:
        rescue.cancel()


@pytest.mark.parametrize("command", ["create", "reconcile", "status"])
def test_a_working_directory_that_was_removed_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """The folder a shell sits in removed under it (cron's folder replaced by a deploy): the
    settings file cannot be looked for there; one error line, exit 2, never a traceback."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))
    args = [command, *([str(source), "--sandbox"] if command == "create" else [])]

    result = CliRunner().invoke(cli, args, obj=Runtime(env={}))

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert [line for line in result.stderr.splitlines() if "error:" in line]


@pytest.mark.parametrize("port", ["²", "9" * 5000], ids=["superscript", "5000-digits"])
def test_a_no_proxy_port_of_digits_int_refuses_is_not_an_internal_error(
    provisioner: Cli, tmp_path: Path, no_names: list[str], port: str
) -> None:
    """NO_PROXY=host:PORT with digits str.isdigit() takes and int() refuses: the run goes on
    (the entry names no port it can match), never exit 4."""
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))
    with HostileServer(default=Reply(502, b"", ())) as proxy:
        environment = {"HTTPS_PROXY": proxy.url, "NO_PROXY": f"{FAR_HOST}:{port}"}
        result = provisioner(
            "create", str(source), "--run-id", "r1", "--base-url", f"https://{FAR_HOST}",
            "--max-attempts", "1", env=provisioner.env(**environment), base_url=False, expect=None,
        )  # fmt: skip

    assert result.exit_code == 1, result.output
    assert "internal error" not in result.stderr
    assert (provisioner.run_dir("r1") / "results.csv").is_file()


@pytest.mark.parametrize("channel", ["environment", "file"])
def test_sandbox_from_a_variable_or_the_file_is_named_under_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, channel: str
) -> None:
    """PROVISIONER_SANDBOX=1 left from a rehearsal, or `sandbox = true` in the file, sends the
    cron job's rows to a local emulator: under --quiet its log said only `2 created`."""
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    env = {"PROVISIONER_SANDBOX": "1"} if channel == "environment" else {}
    if channel == "file":
        settings = tmp_path / CONFIG_NAME
        settings.write_text("[create]\nsandbox = true\n", encoding="utf-8")
        settings.chmod(0o600)
    monkeypatch.chdir(tmp_path)
    no_machine_settings(monkeypatch)

    result = CliRunner().invoke(
        cli, ["create", str(source), "--quiet"], obj=Runtime(env=env), env=env
    )

    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "--sandbox" in line]
    assert len(lines) == 1, result.stderr
    assert ("PROVISIONER_SANDBOX" if channel == "environment" else CONFIG_NAME) in lines[0]
