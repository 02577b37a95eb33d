"""Rate limiting shared by everything that calls a service: requests per second plus in-flight.

A `RateLimiter` hands out *slots*. Taking a slot waits for two things:

- a **token** from a bucket refilled at `requests_per_second` (capacity `burst`), scheduled
  first come, first served, so requests leave evenly spaced at the rate and never faster;
- a **concurrency** place. With `max_concurrency` given, at most that many requests are in
  flight. With a rate but no `max_concurrency`, the limit follows the rate:
  in-flight = rate x observed latency (plus headroom), so a slow model still gets the whole
  rate instead of the few requests a fixed pool would allow.

It adapts to what the service says. A 429 pauses every caller until its `Retry-After` has
passed (one second when it gives none) and lowers the rate a little; successes bring the rate
back up to the configured one. Without a configured rate, a 429 sets one: half the rate at
which requests left in the last seconds, which then creeps up until the next 429 (the
multiplicative-decrease, slow-increase probe TCP made familiar).
An answer carrying `x-requests-limit-remaining: 0` means the service's bucket is empty: with
a known rate our own bucket already spaces requests by one interval, and with no rate known
new requests pause briefly. One limiter is shared by every target of an evaluation (one
client, one limiter), so several targets never add up to more than the service allows.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from granite_tuner.errors import ConfigurationError

__all__ = ["LimiterStats", "RateLimiter"]

# Headroom over rate x latency, so latency jitter does not starve the rate.
_INFLIGHT_HEADROOM = 1.25
_MAX_ADAPTIVE_INFLIGHT = 256
# Weight of the newest latency in the moving average.
_LATENCY_WEIGHT = 0.2
# After a 429 the rate drops to this share of what it was, then recovers on successes.
_BACKOFF_FACTOR = 0.9
_MIN_RATE_SHARE = 0.5
_RECOVERY_PER_SUCCESS = 0.01
_DEFAULT_PAUSE = 1.0
_EMPTY_BUCKET_PAUSE = 0.25
# Without a configured rate, a 429 halves the rate at which requests left in the last seconds.
_RATE_WINDOW = 2.0
_LEARNED_BACKOFF_FACTOR = 0.5
_MAX_REMEMBERED_SENDS = 10_000
_MIN_RATE_SPAN = 0.25
_MIN_LEARNED_RATE = 0.5


@dataclass
class LimiterStats:
    """Counters for reports and benchmarks."""

    granted: int = 0
    rate_limited: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


class RateLimiter:
    """Token bucket in requests per second plus a concurrency limit, adapting to the service.

    Args:
        requests_per_second: the service's limit; None for no rate limit.
        max_concurrency: the most requests in flight; None lets the rate decide (or no limit
            when there is no rate either).
        burst: how many requests may leave at once after a quiet spell (the bucket's size).
    """

    def __init__(
        self,
        requests_per_second: float | None = None,
        *,
        max_concurrency: int | None = None,
        burst: int = 1,
    ) -> None:
        if requests_per_second is not None and not requests_per_second > 0:
            raise ConfigurationError(
                f"requests_per_second must be positive, got {requests_per_second}."
            )
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be at least 1, got {max_concurrency}.")
        if burst < 1:
            raise ConfigurationError(f"burst must be at least 1, got {burst}.")
        self.requests_per_second = requests_per_second
        self.max_concurrency = max_concurrency
        self.burst = burst
        self.stats = LimiterStats()
        self._rate = requests_per_second
        self._next_free = -math.inf  # when the next token may be handed out
        self._paused_until = -math.inf
        self._overload_until = -math.inf  # the pause of the latest 429 (not of a hint)
        self._latency: float | None = None
        self._concurrency: anyio.CapacityLimiter | None = None
        self._sent: deque[float] = deque()  # when recent requests left (rate learning)

    def __repr__(self) -> str:
        return (
            f"RateLimiter(requests_per_second={self.requests_per_second}, "
            f"max_concurrency={self.max_concurrency}, burst={self.burst})"
        )

    @property
    def current_rate(self) -> float | None:
        """The rate in force now: the configured one, lowered for a while after 429s."""
        return self._rate

    @property
    def inflight_limit(self) -> int | None:
        """How many requests may be in flight now (None: no limit)."""
        if self.max_concurrency is not None:
            return self.max_concurrency
        if self._rate is None:
            return None
        if self._latency is None:
            # Until a first answer tells the latency, the bucket alone sets the pace: a guess
            # here would hold back a slow model's first requests for a whole latency.
            return _MAX_ADAPTIVE_INFLIGHT
        wanted = math.ceil(self._rate * self._latency * _INFLIGHT_HEADROOM) + 1
        return max(1, min(_MAX_ADAPTIVE_INFLIGHT, wanted))

    def _capacity_limiter(self) -> anyio.CapacityLimiter | None:
        limit = self.inflight_limit
        if limit is None:
            return None
        if self._concurrency is None:
            # Created lazily: a CapacityLimiter belongs to the event loop that first uses it.
            self._concurrency = anyio.CapacityLimiter(limit)
        elif self._concurrency.total_tokens != limit:
            self._concurrency.total_tokens = limit
        return self._concurrency

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a concurrency place and a token; hold the place while the body runs."""
        concurrency = self._capacity_limiter()
        # A fresh borrower per slot: one task may hold several slots (nested calls).
        borrower = object()
        if concurrency is not None:
            await concurrency.acquire_on_behalf_of(borrower)
        try:
            await self._take_token()
            if self.requests_per_second is None:
                self._sent.append(anyio.current_time())
                if len(self._sent) > _MAX_REMEMBERED_SENDS:
                    self._sent.popleft()
            self.stats.granted += 1
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            started = anyio.current_time()
            try:
                yield
            finally:
                self.stats.in_flight -= 1
                self._observe_latency(anyio.current_time() - started)
        finally:
            if concurrency is not None:
                concurrency.release_on_behalf_of(borrower)

    async def _take_token(self) -> None:
        now = anyio.current_time()
        start = max(now, self._paused_until)
        if self._rate is not None:
            interval = 1.0 / self._rate
            # Unused capacity after a quiet spell is worth at most `burst` requests.
            earliest = max(self._next_free, start - (self.burst - 1) * interval)
            start = max(start, earliest)
            self._next_free = earliest + interval
        if start > now:
            await anyio.sleep(start - now)

    def _learn_rate_from_429(self, now: float) -> None:
        """No rate was given: halve the rate at which requests were recently sent."""
        while self._sent and self._sent[0] < now - _RATE_WINDOW:
            self._sent.popleft()
        span = max(_MIN_RATE_SPAN, now - self._sent[0]) if self._sent else _RATE_WINDOW
        sent_rate = len(self._sent) / span
        current = sent_rate if self._rate is None else min(self._rate, sent_rate)
        self._rate = max(_MIN_LEARNED_RATE, current * _LEARNED_BACKOFF_FACTOR)

    def _observe_latency(self, seconds: float) -> None:
        if self._latency is None:
            self._latency = seconds
        else:
            self._latency += _LATENCY_WEIGHT * (seconds - self._latency)

    def observe(
        self, *, status: int, remaining: int | None = None, retry_after: float | None = None
    ) -> None:
        """Tell the limiter how the service answered, so it can adapt."""
        now = anyio.current_time()
        if status == 429:
            self.stats.rate_limited += 1
            pause = retry_after if retry_after is not None else _DEFAULT_PAUSE
            # 429s answered during the pause of an earlier 429 belong to the same overload:
            # slow down once per overload, not once per rejected request.
            same_overload = now < self._overload_until
            self._overload_until = max(self._overload_until, now + pause)
            self._paused_until = max(self._paused_until, now + pause)
            if same_overload:
                return
            if self.requests_per_second is not None:
                assert self._rate is not None
                floor = self.requests_per_second * _MIN_RATE_SHARE
                self._rate = max(floor, self._rate * _BACKOFF_FACTOR)
            else:
                self._learn_rate_from_429(now)
            return
        if self.requests_per_second is not None:
            assert self._rate is not None
            self._rate = min(
                self.requests_per_second,
                self._rate + self.requests_per_second * _RECOVERY_PER_SUCCESS,
            )
        elif self._rate is not None:
            # A learned rate probes upwards slowly; the next 429 brings it down again.
            self._rate *= 1 + _RECOVERY_PER_SUCCESS
        elif remaining == 0:
            # No rate known, and the service's bucket is empty: let it refill a little.
            self._paused_until = max(self._paused_until, now + _EMPTY_BUCKET_PAUSE)
