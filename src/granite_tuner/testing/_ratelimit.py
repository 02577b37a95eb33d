"""The text-generation rate limit: a token bucket, as the service applies per instance.

``fake.rate_limit`` tokens per second refill a bucket of ``fake.rate_limit_burst`` (default
``ceil(rate_limit)``); each generation request takes one token or gets 429. The knobs are read
on every request, and a change of them refills the bucket, so a test can tighten the limit
mid-run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """Whether a request may go on, the whole tokens left, and when to retry if not."""

    allowed: bool
    remaining: int
    retry_after: int


class TokenBucket:
    """Token-bucket state; not locked itself (the store's lock guards it)."""

    def __init__(self) -> None:
        self._settings: tuple[float, int] | None = None
        self._tokens = 0.0
        self._stamp = 0.0

    def take(self, rate: float, burst: int | None, now: float) -> Decision:
        """Take one token at time ``now`` (``time.monotonic``)."""
        capacity = burst if burst is not None else max(1, math.ceil(rate))
        if self._settings != (rate, capacity):
            self._settings = (rate, capacity)
            self._tokens, self._stamp = float(capacity), now
        self._tokens = min(float(capacity), self._tokens + (now - self._stamp) * rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Decision(True, math.floor(self._tokens), 0)
        wait = (1.0 - self._tokens) / rate if rate > 0 else 3600.0
        return Decision(False, 0, max(1, math.ceil(wait)))
