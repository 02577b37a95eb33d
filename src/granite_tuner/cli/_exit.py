"""Exit codes that scripts can rely on, and which error ends in which code.

The table is shown by `granite-tuner --help` and kept in the package docstring; a test checks
that the two agree.
"""

from __future__ import annotations

from enum import IntEnum

from granite_tuner._exceptions import innermost
from granite_tuner.errors import (
    APIError,
    APITimeoutError,
    ConfigurationError,
    DeploymentNotFoundError,
    DeploymentTimeoutError,
    GraniteTunerError,
    InvalidDataError,
    InvalidParametersError,
    NoCheckpointError,
    NotFoundError,
    ResumeMismatchError,
    RunFinishedError,
    RunNotFoundError,
    TuningTimeoutError,
)

__all__ = ["EXIT_CODE_TABLE", "ExitCode", "exit_code_for", "innermost"]


class ExitCode(IntEnum):
    """How a `granite-tuner` command ended."""

    OK = 0
    FAILED = 1
    USAGE = 2
    SERVICE = 3
    TIMEOUT = 4
    INTERRUPTED = 130


_MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "the operation failed: a run or deployment failed, --min-gain missed",
    ExitCode.USAGE: "bad usage or input: an option, file, data, parameter, setting, unknown id",
    ExitCode.SERVICE: "service or network error (after the retries)",
    ExitCode.TIMEOUT: "timeout: --timeout passed (the remote work goes on), or no answer in time",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C); 143 for SIGTERM",
}

#: One line per exit code, for `--help` and the docs.
EXIT_CODE_TABLE = "\n".join(f"  {int(code):>3}  {text}" for code, text in _MEANINGS.items())

_BAD_INPUT = (
    ConfigurationError,
    InvalidDataError,
    InvalidParametersError,
    RunNotFoundError,
    DeploymentNotFoundError,
    ResumeMismatchError,
    RunFinishedError,
    NoCheckpointError,
    # HTTP 404: the service knows no object of the id given (`deploy no-such-run`).
    NotFoundError,
)
_TIMEOUTS = (TuningTimeoutError, DeploymentTimeoutError, APITimeoutError)


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code a command that raised `error` ends with."""
    error = innermost(error)
    if isinstance(error, _BAD_INPUT):
        return ExitCode.USAGE
    if isinstance(error, _TIMEOUTS):
        return ExitCode.TIMEOUT
    if isinstance(error, APIError):
        return ExitCode.SERVICE
    if isinstance(error, GraniteTunerError):
        return ExitCode.FAILED
    if isinstance(error, OSError):  # a path given on the command line cannot be read or written
        return ExitCode.USAGE
    return ExitCode.FAILED
