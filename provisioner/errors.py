"""The one error type lower modules raise, and the exit codes the CLI maps it to."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; a contract for cron wrappers and other tools."""

    OK = 0  # every row created or existing
    ROWS_FAILED = 1  # the run finished; some rows invalid or failed
    NOTHING_SENT = 2  # usage, input or configuration error: nothing was sent
    STOPPED = 3  # the run stopped early: credentials rejected, failures in a row, interrupted
    INTERNAL = 4  # an unexpected error (a bug); what was created is in the ledger
    # Output went into a closed pipe (`| head`): 128 + SIGPIPE, what a shell reports for a tool
    # that a closed pipe ended, so `set -o pipefail` scripts read it as they read any other.
    BROKEN_PIPE = 141


class ProvisionerError(Exception):
    """An error with a message that tells the operator what to do next."""

    exit_code: ExitCode = ExitCode.NOTHING_SENT


class InputError(ProvisionerError):
    """The input file cannot be used as it is."""


class ConfigError(ProvisionerError):
    """Options or environment do not make a usable configuration."""


class LedgerError(ProvisionerError):
    """The ledger cannot be opened, is not a ledger, or is in use by another run."""


class ResultsError(ProvisionerError):
    """The result files cannot be written mid-run (a full disk): the run stopped."""

    exit_code = ExitCode.STOPPED
