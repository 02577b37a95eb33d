"""The text-generation rate limit, counted the way a gateway might count it.

Services count requests with different algorithms, and a client cannot know which; the fake
offers the common ones so that a client can be tried against each (``fake.rate_limit_mode``):

- ``token_bucket`` (the default): ``rate_limit`` tokens per second refill a bucket of
  ``rate_limit_burst`` tokens (default ``ceil(rate_limit)``); each request takes one.
- ``sliding_window``: a request is admitted while fewer than ``limit`` admitted requests
  arrived in the last second; each admitted request counts for exactly one second after it
  arrived (a sliding log).
- ``fixed_window``: at most ``limit`` requests per wall-clock second, the count starting
  afresh at each whole second of ``time.time()`` (so several fakes, or a client, agree on
  where a window starts).

For both windows ``limit`` is the whole number of requests a second allows:
``max(1, floor(rate_limit))``. A rejected request does not count. The knobs are read on
every request, and any change of them starts the limit afresh, so a test can tighten the
limit mid-run. Each algorithm takes ``now`` as an argument, so tests drive it with a clock
of their own.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

RateLimitMode = Literal["token_bucket", "sliding_window", "fixed_window"]
RATE_LIMIT_MODES: tuple[RateLimitMode, ...] = ("token_bucket", "sliding_window", "fixed_window")

_WINDOW = 1.0  # seconds; what "per second" counts over


@dataclass(frozen=True)
class Decision:
    """Whether a request may go on, the whole requests left, and when to retry if not."""

    allowed: bool
    remaining: int
    retry_after: int


class Admission(Protocol):
    """One rate-limit algorithm: admit or refuse a request arriving at ``now``."""

    def take(self, now: float) -> Decision: ...


def _whole_seconds(wait: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1 (as the header is usually sent)."""
    return max(1, math.ceil(wait - 1e-9))


def window_limit(rate: float) -> int:
    """How many requests one window admits at ``rate`` requests per second."""
    return max(1, math.floor(rate))


class TokenBucket:
    """``rate`` tokens per second into a bucket of ``capacity``; it starts full."""

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = float(capacity)
        self._stamp = now

    def take(self, now: float) -> Decision:
        self._tokens = min(float(self.capacity), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Decision(True, math.floor(self._tokens), 0)
        wait = (1.0 - self._tokens) / self.rate if self.rate > 0 else 3600.0
        return Decision(False, 0, _whole_seconds(wait))


class SlidingWindow:
    """At most ``limit`` admitted requests in any one second: each counts for one second."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._admitted: deque[float] = deque()

    def take(self, now: float) -> Decision:
        while self._admitted and self._admitted[0] <= now - _WINDOW:
            self._admitted.popleft()
        if len(self._admitted) < self.limit:
            self._admitted.append(now)
            return Decision(True, self.limit - len(self._admitted), 0)
        # Room comes back when the oldest admitted request stops counting.
        return Decision(False, 0, _whole_seconds(self._admitted[0] + _WINDOW - now))


class FixedWindow:
    """At most ``limit`` requests per whole second of the clock it is given."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._window = -math.inf
        self._count = 0

    def take(self, now: float) -> Decision:
        window = math.floor(now / _WINDOW)
        if window != self._window:
            self._window, self._count = window, 0
        if self._count < self.limit:
            self._count += 1
            return Decision(True, self.limit - self._count, 0)
        return Decision(False, 0, _whole_seconds((window + 1) * _WINDOW - now))


def new_admission(mode: RateLimitMode, rate: float, burst: int | None, now: float) -> Admission:
    """A fresh algorithm for these settings (``burst`` only matters to the bucket)."""
    if mode == "token_bucket":
        return TokenBucket(rate, burst if burst is not None else max(1, math.ceil(rate)), now)
    if mode == "sliding_window":
        return SlidingWindow(window_limit(rate))
    if mode == "fixed_window":
        return FixedWindow(window_limit(rate))
    raise ValueError(f"unknown rate_limit_mode {mode!r}; use one of {RATE_LIMIT_MODES}")


class ServiceLimit:
    """The fake's limit: rebuilt whenever its settings change; not locked itself (the
    store's lock guards it)."""

    def __init__(self) -> None:
        self._settings: tuple[RateLimitMode, float, int | None] | None = None
        self._admission: Admission | None = None

    def take(
        self,
        mode: RateLimitMode,
        rate: float,
        burst: int | None,
        *,
        monotonic: float,
        wall: float,
    ) -> Decision:
        """Admit or refuse one request. The fixed window counts by the wall clock (its
        windows are aligned to whole seconds); the others by the monotonic one."""
        now = wall if mode == "fixed_window" else monotonic
        if self._admission is None or self._settings != (mode, rate, burst):
            self._settings = (mode, rate, burst)
            self._admission = new_admission(mode, rate, burst, now)
        return self._admission.take(now)
