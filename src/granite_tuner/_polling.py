"""Waiting for a remote object to change: reads spaced out from seconds to a cap, within a deadline.

Used by `Tuner` (trainings) and `Deployment` (deployments). Each read is already retried by the
client; a read that still fails for a passing reason (`_retry.is_passing_failure`: network,
5xx, 429, a broken body) is logged and tried again at the next poll instead of ending the wait.
Only the deadline ends it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

import anyio

from granite_tuner._retry import is_passing_failure
from granite_tuner._secrets import get_logger
from granite_tuner.errors import APIError, ConfigurationError

__all__ = ["PollDeadline", "Poller", "checked_poll_interval", "checked_timeout"]

logger = get_logger("granite_tuner.polling")

T = TypeVar("T")

_GROWTH = 1.5


def checked_timeout(timeout: object, *, what: str = "timeout") -> float | None:
    """`timeout` if it is None (wait forever) or a positive number of seconds."""
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or math.isnan(timeout)
        or timeout <= 0
    ):
        raise ConfigurationError(
            f"{what} must be a positive number of seconds (or None to wait forever), "
            f"got {timeout!r}."
        )
    return float(timeout)


def checked_poll_interval(poll_interval: object) -> tuple[float, float]:
    """`poll_interval` as (first, largest) seconds with 0 < first <= largest, both finite."""
    values = tuple(poll_interval) if isinstance(poll_interval, tuple | list) else ()
    numbers = [
        float(v)
        for v in values
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]
    if len(values) != 2 or len(numbers) != 2 or not 0 < numbers[0] <= numbers[1]:
        raise ConfigurationError(
            "poll_interval must be (first, largest) seconds between status reads, with "
            f"0 < first <= largest, e.g. (2, 60); got {poll_interval!r}."
        )
    first, largest = numbers
    return float(first), float(largest)


class PollDeadline(Exception):
    """The deadline passed; the caller raises its own typed timeout error."""


class Poller(Generic[T]):
    """Reads `read()` until the consumer stops, spacing reads from `first` to `largest` s."""

    def __init__(
        self,
        read: Callable[[], Awaitable[T]],
        *,
        poll_interval: tuple[float, float],
        timeout: float | None,
        what: str,
    ) -> None:
        self._read = read
        self._first, self._largest = poll_interval
        self._interval = self._first
        self._deadline = math.inf if timeout is None else anyio.current_time() + timeout
        self._what = what

    def reset_interval(self) -> None:
        """Read soon again: something just changed."""
        self._interval = self._first

    async def snapshots(self) -> AsyncGenerator[T, None]:
        """Each successful read, in order. Raises `PollDeadline` when the deadline passes."""
        while True:
            snapshot = await self._read_once()
            if snapshot is not None:
                yield snapshot
            remaining = self._deadline - anyio.current_time()
            if remaining <= 0:
                raise PollDeadline
            await anyio.sleep(min(self._interval, remaining))
            self._interval = min(self._interval * _GROWTH, self._largest)

    async def _read_once(self) -> T | None:
        remaining = self._deadline - anyio.current_time()
        if remaining <= 0:
            raise PollDeadline
        # The deadline scope covers only the read, never a `yield` (see anyio's rules on
        # cancel scopes in async generators).
        with anyio.move_on_after(remaining) as scope:
            try:
                return await self._read()
            except APIError as exc:
                if not is_passing_failure(exc):  # the retry policy's answer
                    raise
                logger.warning(
                    "Reading %s failed (%s); trying again at the next poll", self._what, exc
                )
                return None
        if scope.cancelled_caught:
            raise PollDeadline
        return None
