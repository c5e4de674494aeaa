"""Owner-only files and folders: results, logs, the input's copy and the ledger name customers.

Every file the tool makes is readable by its owner only, whatever the umask says; this module is
the one place that says what "owner only" is.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_MODE = 0o600  # owner read and write: the files name customers
PRIVATE_FOLDER_MODE = 0o700  # owner read, write and enter: the folders that hold those files


def open_private(path: Path, flags: int) -> int:
    """`os.open(path, flags)`, creating the file 0600 and setting 0600 whatever the umask did.

    An existing file keeps its old mode through `os.open`, and the umask may take bits away
    from a new one: the explicit chmod on the descriptor settles both.
    """
    descriptor = os.open(path, flags | os.O_CREAT, PRIVATE_MODE)
    if hasattr(os, "fchmod"):  # POSIX only
        os.fchmod(descriptor, PRIVATE_MODE)
    return descriptor
