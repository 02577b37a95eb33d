"""Per-key rate and concurrency limits, answered the way watsonx.ai answers them.

Every generation request takes a token from its caller's bucket (`rate` tokens per second, up
to `burst`) and holds one of the caller's `max_concurrency` slots until its answer (streamed or
not) is complete. Over either limit the request is refused at once with 429, `Retry-After`
(seconds) and the `x-requests-limit-*` headers that IBM's SDK reads to pace itself
(`x-requests-limit-rate` sets its bucket's capacity, `x-requests-limit-remaining` its tokens).
Refusing instead of queueing keeps a burst from one key from delaying everyone else's answers,
and lets clients back off as they already do for the service.

Everything runs on the server's one event loop, so plain dicts need no lock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from granite_tuner.server._wire import WireError

__all__ = ["KeyLimits"]


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class KeyLimits:
    rate: float | None = None  # requests per second per key; None: no rate limit
    burst: int | None = None  # bucket size; default: max(1, ceil(rate))
    max_concurrency: int | None = None  # requests in flight per key; None: no limit
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _in_flight: dict[str, int] = field(default_factory=dict)

    @property
    def capacity(self) -> int:
        if self.rate is None:
            return 0
        return self.burst if self.burst is not None else max(1, math.ceil(self.rate))

    def in_flight(self) -> int:
        return sum(self._in_flight.values())

    @contextmanager
    def admit(self, caller: str, headers: dict[str, str]) -> Iterator[None]:
        """Hold a slot for one request of `caller`, or raise 429; fills the limit headers."""
        self._take_token(caller, headers)
        busy = self._in_flight.get(caller, 0)
        if self.max_concurrency is not None and busy >= self.max_concurrency:
            raise WireError(
                429,
                f"Too many requests in flight for this API key (limit {self.max_concurrency}); "
                "retry when one has finished.",
                "too_many_requests",
                headers={**headers, "retry-after": "1"},
            )
        self._in_flight[caller] = busy + 1
        try:
            yield
        finally:
            left = self._in_flight[caller] - 1
            if left:
                self._in_flight[caller] = left
            else:
                del self._in_flight[caller]

    def _take_token(self, caller: str, headers: dict[str, str]) -> None:
        if self.rate is None:
            return
        capacity = self.capacity
        now = time.monotonic()
        bucket = self._buckets.setdefault(caller, _Bucket(float(capacity), now))
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        headers["x-requests-limit-rate"] = str(capacity)
        if bucket.tokens < 1:
            wait = math.ceil((1 - bucket.tokens) / self.rate)
            headers["x-requests-limit-remaining"] = "0"
            raise WireError(
                429,
                f"Rate limit of {self.rate:g} requests per second for this API key exceeded; "
                f"retry in {wait} s.",
                "rate_limit_exceeded",
                headers={**headers, "retry-after": str(wait)},
            )
        bucket.tokens -= 1
        headers["x-requests-limit-remaining"] = str(int(bucket.tokens))
