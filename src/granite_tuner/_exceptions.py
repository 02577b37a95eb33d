"""The lone error inside exception groups: anyio's task groups wrap even a single error.

One place for it, so the evaluator, the CLI's exit codes and the local client unwrap the
same way: nested groups of exactly one error give that error; anything else stays as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["innermost", "raise_lone_error"]


def innermost(error: BaseException) -> BaseException:
    """The error itself, or the lone error inside (nested) exception groups."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


@contextmanager
def raise_lone_error() -> Iterator[None]:
    """Re-raise a group holding a single error (nested or not) as that error.

    The error keeps its own cause and context (re-raising it would otherwise chain the group).
    A group of several errors goes on unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        error = innermost(group)
        if error is group:
            raise
        cause, context, suppress = error.__cause__, error.__context__, error.__suppress_context__
        try:
            raise error  # the group was only a wrapper
        finally:
            error.__cause__, error.__context__ = cause, context
            error.__suppress_context__ = suppress
            del error, group
