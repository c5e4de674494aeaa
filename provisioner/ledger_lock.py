"""The ledger's file: one run at a time (a lock beside it), one name, the same file throughout."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from provisioner.errors import LedgerError
from provisioner.private import PRIVATE_MODE

_PID = re.compile(r"[0-9]{1,18}")  # what a run writes in its lock; anything else names no pid
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NO_BLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO at the lock's name is refused, not waited on
# Seconds between checks that the ledger file is still the one opened (a stat each commit
# cost more than the commit on a busy run; a second's delay to notice is harmless).
IDENTITY_CHECK_EVERY = 1.0


def refuse_hard_links(path: Path) -> None:
    """Refuse a ledger that has another name: each name would have a lock and WAL of its own."""
    if path.exists() and path.stat().st_nlink > 1:
        # A hard link is another name for the file: the lock and SQLite's WAL are named after
        # the path, so a second run through the other name would see none of this run's rows.
        raise LedgerError(
            f"{path}: the ledger has another name (a hard link); use one path for it, "
            "or a symbolic link"
        )


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold `<ledger>.lock` for the run; the kernel frees it even if the process is killed."""
    lock = _lock_path(path)
    try:
        # The lock is written (the holder's pid): a symbolic link put at its name (a shared
        # folder) would have the run overwrite or make the file it points to; never followed.
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | _NO_FOLLOW | _NO_BLOCK, PRIVATE_MODE)
    except OSError as error:
        reason = "a symbolic link" if error.errno == errno.ELOOP else error.strerror
        raise LedgerError(
            f"{lock}: cannot use it as the ledger's lock ({reason}); nothing was sent"
        ) from error
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise LedgerError(
            f"{lock}: the ledger's lock is not a regular file; remove it, nothing was sent"
        )
    stream: IO[str] = os.fdopen(descriptor, "r+", encoding="utf-8")
    try:
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            stream.seek(0)
            holder = stream.read().strip() or "unknown"
            raise LedgerError(
                f"{path}: another run (pid {holder}) is using this ledger; "
                "wait for it to finish, nothing was sent"
            ) from error
        stream.seek(0)
        stream.truncate()
        stream.write(str(os.getpid()))
        stream.flush()
        yield
    finally:
        stream.close()


def lock_holder(path: Path) -> int | None:
    """The pid of the run holding the ledger's lock now, or None when no run holds it."""
    try:
        stream = _lock_path(path).open("r", encoding="utf-8")
    except OSError:
        return None
    with stream:
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = stream.read().strip()
            # ASCII digits only, and few: str.isdigit() takes `²`, which int() refuses.
            return int(text) if _PID.fullmatch(text) else -1
        fcntl.flock(stream.fileno(), fcntl.LOCK_UN)
        return None


def _lock_path(path: Path) -> Path:
    """The lock file beside the real ledger, so two paths to one ledger share one lock."""
    real = path.resolve()
    return real.with_name(real.name + ".lock")


class FileWatch:
    """Notices that the ledger file was deleted or replaced under a run, once a second at most."""

    def __init__(self, path: Path, clock: Callable[[], float]) -> None:
        self._path = path
        self._identity = _file_identity(path)
        self._clock = clock
        self._next_check = 0.0

    def check(self) -> None:
        """Raise LedgerError if the file at the path is no longer the one first seen."""
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + IDENTITY_CHECK_EVERY
        if _file_identity(self._path) != self._identity:
            raise LedgerError(
                f"{self._path}: the ledger was deleted or replaced during the run; "
                "put it back, then rerun (rows in flight are looked up first)"
            )


def _file_identity(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1)
    return (stat.st_dev, stat.st_ino)
