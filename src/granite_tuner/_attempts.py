"""How many HTTP attempts one call took, counted without passing anything through the call chain.

Retries happen deep inside a client's transport, far from the `Evaluator` that wants to report
them per item. The evaluator wraps each target call in `count_attempts()`; the transport calls
`note_attempt()` once per HTTP attempt; the counter in force for the current task (a
`ContextVar`, so asyncio and trio tasks each see their own) goes up by one. Code that runs
outside any `count_attempts()` block calls `note_attempt()` for nothing, at no cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["AttemptCounter", "count_attempts", "note_attempt"]


class AttemptCounter:
    """The number of attempts noted so far inside one `count_attempts()` block."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def __repr__(self) -> str:
        return f"AttemptCounter(value={self.value})"


_current: ContextVar[AttemptCounter | None] = ContextVar(
    "granite_tuner_attempt_counter", default=None
)


@contextmanager
def count_attempts() -> Iterator[AttemptCounter]:
    """Count the `note_attempt()` calls made by this task (and tasks it starts) in the block."""
    counter = AttemptCounter()
    token = _current.set(counter)
    try:
        yield counter
    finally:
        _current.reset(token)


def note_attempt() -> None:
    """Record one attempt (one HTTP request sent) on the counter in force, if there is one."""
    counter = _current.get()
    if counter is not None:
        counter.value += 1
