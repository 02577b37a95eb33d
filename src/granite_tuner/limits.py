"""Rate limiting shared by everything that calls a service: a send log plus an in-flight limit.

A service counts requests with an algorithm the client cannot see: a sliding window (each
request counts for one second after it arrives), a fixed window aligned to the clock's
seconds, a token bucket... One rule keeps a client under all of them: **never let more than
the limit's count of requests leave within any window a little longer than the service's**.
So a `RateLimiter` keeps a log of its own send times and lets a request leave only when the
log's last ``n`` sends all lie at least one window back, where

- ``n`` is the whole number of requests a second allows (``floor(requests_per_second)``),
- the window is one second (``n / rate`` when the rate is under one a second) **plus a
  margin** for the spread of arrival times: a request that leaves at ``t`` reaches the
  service at ``t`` plus a one-way latency that varies, and the service counts arrivals. The
  margin is learned from the spread of round trips (1 % to 5 % of the window), and widened
  for a while after a 429 that came although the log was within the limit. An answered
  request counts as arriving as much later as its round trip was longer than the fastest; one
  that opened a new connection (more in flight than ever before) as arriving up to 100 ms
  later, for the handshakes.

Requests may leave together (up to ``burst``, by default the whole ``n``), as every one of
those algorithms allows a full window's worth at once; after such a 429 the limiter halves
the bursts it sends, in case the service's bucket is smaller than a second's worth.

Told no rate, the limiter learns one (`granite_tuner._limit_learning` keeps the evidence):

- from ``x-requests-limit-rate`` when the service sends it;
- from ``x-requests-limit-remaining``: an answer saying ``r`` requests remain, to a request
  whose window held ``k`` of ours, says the limit is about ``r + k`` (the smallest figure seen
  twice is kept; it creeps up again after 30 quiet seconds). ``r`` less ours in flight since
  may also leave at once (credit), and when the service says it is full one request is sent
  early to see whether it refills faster than a window (a bucket with a small burst);
- from 429s: the requests of ours the service admitted in the second before the refused one
  is the limit the service holds us to; after that it probes one request higher, waiting twice
  as long after each probe that failed, so it settles instead of swinging.

Until the first answer comes back only two requests leave (the smallest limit watsonx.ai
plans have), so the first answers' headers tell the limit before a burst runs into it; with
nothing learned from them, the service's 429s are the only brake.

**A single 429 does not stop every caller.** It tightens the pacing once per window at most
(wider margin, smaller bursts, or a lower learned limit), and only an explicit
``Retry-After`` pauses everyone until it has passed. A tightening that did not make 429s
rarer is undone, and the share of 429s it left is remembered as the service's background
noise: 429s that do not follow the sending rate (a flaky gateway answering 15 % of calls 429)
then no longer slow anything down. A bare 429 (no ``Retry-After``, no limit headers) acts
only when it stands out from that noise.

The in-flight limit is ``max_concurrency`` when given; otherwise, with a rate known, rate x
observed latency plus headroom, so a slow model still gets the whole rate. One limiter is
shared by every target of an evaluation (one client, one limiter), so several targets never
add up to more than the service allows.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from granite_tuner._limit_learning import Learner, LimitModel
from granite_tuner.errors import ConfigurationError

__all__ = ["LimiterStats", "RateLimiter", "SentRequest"]

# Headroom over rate x latency, so latency jitter does not starve the rate.
_INFLIGHT_HEADROOM = 1.25
_MAX_ADAPTIVE_INFLIGHT = 256
# Weight of the newest latency in the moving average that sizes the in-flight limit.
_LATENCY_WEIGHT = 0.2
# The margin over the service's window: the spread of recent round trips (the second longest
# of the last `_LATENCY_SAMPLES` less the shortest), within these bounds. A request cannot reach
# the service later, relative to when it left, than its round trip is longer than the
# fastest, so that spread bounds how much closer two arrivals are than their departures.
_LATENCY_SAMPLES = 64
_MIN_MARGIN = 0.01
_MAX_LEARNED_MARGIN = 0.05
_DEFAULT_MARGIN = 0.02
# The longest Retry-After that pauses every caller (the retry policy decides for its own call).
_MAX_PAUSE = 60.0
# A request sent while more are in flight than ever before probably opens a new connection
# (TCP and TLS handshakes first), so it may arrive this much later than the others; the
# figure is then learned from how much longer such requests take. Connections idle this long
# may have been closed.
_COLD_SLACK = 0.1
_MIN_COLD_SLACK = 0.02
_MAX_COLD_SLACK = 0.5
_IDLE_CONNECTIONS_CLOSE = 5.0
# An answered request is taken to have arrived as much later than it left as its round trip
# was longer than the fastest recent one, up to this much (the rest is the model's work).
_MAX_ARRIVAL_SHIFT = 0.05
# Send times are kept this long (and at most this many), for the window and the learning.
_LOG_SECONDS = 10.0
_MAX_LOG = 20_000


@dataclass(eq=False)
class SentRequest:
    """One request the limiter let through: when it left and, once known, how it was answered.

    `RateLimiter.slot()` yields it; hand it back to `RateLimiter.observe(sent=...)` so that
    the answer is matched to the moment its request left.
    """

    at: float
    status: int | None = None
    # Seconds it may reach the service later than usual: it likely opened a new connection.
    late: float = 0.0
    # When it reached the service, as far as its round trip tells (once answered).
    arrived: float | None = None
    rtt: float | None = None
    refill_probe: bool = False  # sent early, to see whether the service refills faster

    def reached(self) -> float:
        """The latest time it may have reached the service, as far as is known."""
        return self.arrived if self.arrived is not None else self.at + self.late


@dataclass
class LimiterStats:
    """Counters for reports and benchmarks."""

    granted: int = 0
    rate_limited: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    tightened: int = 0  # times a 429 tightened the pacing
    undone: int = 0  # tightenings undone because 429s did not follow the sending rate


class _Places:
    """The in-flight limit: a counting semaphore whose size may change while it is held.

    Taking a free place does not yield to the event loop (anyio's `CapacityLimiter` yields
    twice per acquire, a cost every request paid); a place freed while others wait is handed
    to the longest waiting one, so waiting is first come, first served.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0
        self._waiting: deque[anyio.Event] = deque()

    async def take(self) -> None:
        if self.taken < self.limit and not self._waiting:
            self.taken += 1
            return
        handed = anyio.Event()
        self._waiting.append(handed)
        try:
            await handed.wait()
        except BaseException:
            if handed.is_set():
                self.give_back()  # handed a place just as the wait was cancelled: pass it on
            else:
                self._waiting.remove(handed)
            raise

    def give_back(self) -> None:
        self.taken -= 1
        self._hand_out()

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._hand_out()

    def _hand_out(self) -> None:
        while self._waiting and self.taken < self.limit:
            self.taken += 1
            self._waiting.popleft().set()


@dataclass
class _Primitives:
    """anyio objects, made on first use: they belong to the event loop that first uses them."""

    turn: anyio.Lock | None = None
    changed: anyio.Event | None = None
    places: _Places | None = None
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_SAMPLES))


class RateLimiter:
    """Keeps a client's requests within a service's rate limit, whatever algorithm it counts with.

    Args:
        requests_per_second: the service's limit; None to learn it from the service's answers.
        max_concurrency: the most requests in flight; None lets the rate decide (or no limit
            when no rate is known either).
        burst: the most requests that leave together; None allows a whole window's worth
            (what every common algorithm admits). 1 spaces requests evenly, for a service
            whose bucket holds a single request.
    """

    def __init__(
        self,
        requests_per_second: float | None = None,
        *,
        max_concurrency: int | None = None,
        burst: int | None = None,
    ) -> None:
        if requests_per_second is not None and not (
            math.isfinite(requests_per_second) and requests_per_second > 0
        ):
            raise ConfigurationError(
                f"requests_per_second must be a positive number, got {requests_per_second}."
            )
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be at least 1, got {max_concurrency}.")
        if burst is not None and burst < 1:
            raise ConfigurationError(f"burst must be at least 1 (or None), got {burst}.")
        self.requests_per_second = requests_per_second
        self.max_concurrency = max_concurrency
        self.burst = burst
        self.stats = LimiterStats()
        self._learner = Learner(requests_per_second)
        self._log: deque[SentRequest] = deque()
        self._answered = 0  # slots finished; the first one ends the initial allowance
        self._next_spaced = -math.inf  # when the next request may leave, by burst spacing
        self._paused_until = -math.inf  # a Retry-After pauses every caller until then
        # Not told the rate: requests the service said it has room for now (its latest
        # x-requests-limit-remaining, less ours that may since have taken some of it).
        self._credit = 0
        self._refill_probe_at: float | None = None  # one request may leave then, early
        self._latency: float | None = None
        self._spread: float | None = None
        self._connections = 0  # how many requests were in flight at most (connections open)
        self._cold_slack = _COLD_SLACK
        self._unreported: SentRequest | None = None  # finished, its answer not yet observed
        self._prims = _Primitives()
        self._clock = anyio.current_time  # tests drive the limiter with a clock of their own

    def __repr__(self) -> str:
        return (
            f"RateLimiter(requests_per_second={self.requests_per_second}, "
            f"max_concurrency={self.max_concurrency}, burst={self.burst})"
        )

    # --- what is in force now -------------------------------------------------------------

    def _model(self) -> LimitModel | None:
        return self._learner.model(initial=self._answered == 0)

    def _window(self, model: LimitModel) -> float:
        return model.period * (1.0 + self._margin())

    def _margin(self) -> float:
        spread = _DEFAULT_MARGIN if self._spread is None else self._spread
        learned = min(_MAX_LEARNED_MARGIN, max(_MIN_MARGIN, spread))
        return learned + self._learner.extra_margin

    @property
    def current_rate(self) -> float | None:
        """Requests per second the pacing allows now (None: no limit known)."""
        model = self._model()
        return None if model is None else model.count / self._window(model)

    @property
    def inflight_limit(self) -> int | None:
        """How many requests may be in flight now (None: no limit)."""
        if self.max_concurrency is not None:
            return self.max_concurrency
        rate = self.current_rate
        if rate is None:
            return None
        if self._latency is None:
            # Until a first answer tells the latency, the pacing alone sets the pace: a guess
            # here would hold back a slow model's first requests for a whole latency.
            return _MAX_ADAPTIVE_INFLIGHT
        wanted = math.ceil(rate * self._latency * _INFLIGHT_HEADROOM) + 1
        return max(1, min(_MAX_ADAPTIVE_INFLIGHT, wanted))

    def sent_times(self) -> list[float]:
        """When the recent requests left (``anyio.current_time()``), oldest first."""
        return [sent.at for sent in self._log]

    # --- taking a slot ----------------------------------------------------------------------

    def _places(self) -> _Places | None:
        limit = self.inflight_limit
        if limit is None:
            return None
        if self._prims.places is None:
            self._prims.places = _Places(limit)
        elif self._prims.places.limit != limit:
            self._prims.places.resize(limit)
        return self._prims.places

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[SentRequest]:
        """Wait for an in-flight place and for the pacing; hold the place while the body runs.

        Yields the `SentRequest`, to hand to `observe` with the answer.
        """
        places = self._places()
        if places is not None:
            await places.take()
        try:
            sent = await self._leave()
            failed = True
            try:
                yield sent
                failed = False
            finally:
                self._finished(sent, self._clock(), failed=failed)
        finally:
            if places is not None:
                places.give_back()

    def _finished(self, sent: SentRequest, now: float, *, failed: bool = False) -> None:
        """A request's answer came back: free its place, learn its latency. One that `failed`
        (the body raised: no answer, a timeout, a cancellation) says nothing about the
        service's latency and only frees its place."""
        self.stats.in_flight -= 1
        if failed:
            return
        self._answered += 1
        sent.rtt = now - sent.at
        if self._prims.latencies:
            # Longer than the fastest recent round trip: it may have arrived that much later.
            cap = max(_MAX_ARRIVAL_SHIFT, sent.late)
            sent.arrived = sent.at + min(cap, max(0.0, sent.rtt - min(self._prims.latencies)))
        # Its latency counts once `observe` says it was a success (a 429 comes back at once);
        # a slot that nobody reports on counts when the next one finishes or leaves.
        self._take_latency()
        self._unreported = sent

    def _take_latency(self, status: int | None = None) -> None:
        sent, self._unreported = self._unreported, None
        if sent is not None and sent.rtt is not None and (status is None or status < 300):
            self._observe_latency(sent.rtt, cold=sent.late > 0)

    async def _leave(self) -> SentRequest:
        """Wait, first come first served, until the pacing lets one more request leave."""
        if self._prims.turn is None:
            self._prims.turn = anyio.Lock()
        if not self._prims.turn.locked():  # nobody waits for their turn
            now = self._clock()
            if self._earliest(now) <= now:
                return self._record(now)
        async with self._prims.turn:
            while True:
                now = self._clock()
                at = self._earliest(now)
                if at <= now:
                    break
                self._learner.note_held_back(now)
                if self._prims.changed is None:
                    self._prims.changed = anyio.Event()
                with anyio.move_on_after(at - now):
                    await self._prims.changed.wait()  # what is known changed: look again
            return self._record(now)

    def _earliest(self, now: float) -> float:
        """The earliest time the next request may leave."""
        at = max(now, self._paused_until)
        model = self._model()
        if model is None or self._credit > 0:
            return at
        window = self._window(model)
        if len(self._log) >= model.count:
            at = max(at, self._nth_latest_arrival(model.count, now - window) + window)
        burst = self._learner.burst_now(self.burst, model.count)
        gap = window / model.count
        at = max(at, self._next_spaced - (burst - 1) * gap)
        if self._refill_probe_at is not None:
            at = min(at, max(now, self._paused_until, self._refill_probe_at))
        return at

    def _nth_latest_arrival(self, n: int, since: float) -> float:
        """The n-th latest time one of our requests may have reached the service.

        A request's send time, later by its `late` figure, or by how much longer than the
        fastest its round trip took (once answered)."""
        times: list[float] = []
        for sent in reversed(self._log):
            if sent.at < since - _MAX_COLD_SLACK and len(times) >= n:
                break
            times.append(sent.reached())
        return heapq.nlargest(n, times)[-1]

    def _record(self, now: float) -> SentRequest:
        """Let one request leave now (a finished slot nobody reported on counts first)."""
        self._take_latency()
        self.stats.granted += 1
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        model = self._model()
        if model is not None:
            self._next_spaced = max(self._next_spaced, now) + self._window(model) / model.count
        if not self._log or now - self._log[-1].at > _IDLE_CONNECTIONS_CLOSE:
            self._connections = self.stats.in_flight - 1
        self._credit = max(0, self._credit - 1)
        sent = SentRequest(now)
        if self._refill_probe_at is not None and now >= self._refill_probe_at:
            sent.refill_probe, self._refill_probe_at = True, None
        if self.stats.in_flight > self._connections:
            self._connections = self.stats.in_flight
            sent.late = self._cold_slack
        self._log.append(sent)
        keep_after = now - max(_LOG_SECONDS, 2 * (self._latency or 0.0))
        while self._log and (self._log[0].at < keep_after or len(self._log) > _MAX_LOG):
            self._log.popleft()
        return sent

    def _observe_latency(self, seconds: float, *, cold: bool = False) -> None:
        samples = self._prims.latencies
        if cold:
            if len(samples) >= 4:  # how much longer than usual a new connection took
                extra = seconds - sorted(samples)[len(samples) // 2]
                self._cold_slack = min(_MAX_COLD_SLACK, max(_MIN_COLD_SLACK, 1.5 * extra))
            return  # a handshake is no part of the usual latency
        if self._latency is None:
            self._latency = seconds
        else:
            self._latency += _LATENCY_WEIGHT * (seconds - self._latency)
        samples.append(seconds)
        if len(samples) >= 4:
            # The second longest (one odd hiccup does not set the margin) less the shortest:
            # how much later than a fast one a slow request may reach the service.
            ordered = sorted(samples)
            self._spread = ordered[-2] - ordered[0]

    # --- what the service said --------------------------------------------------------------

    def _admitted_between(self, low: float, high: float, skip: SentRequest | None) -> int:
        """Our requests that left in (low, high] and were not refused (unanswered count)."""
        count = 0
        for sent in reversed(self._log):
            if sent.at > high:
                continue
            if sent.at <= low:
                break
            if sent is not skip and sent.status != 429:
                count += 1
        return count

    def _taken_since(self, sent: SentRequest) -> int:
        """Ours that may have taken room the service had when ``sent`` reached it: those in
        flight now, and those sent after it and admitted."""
        taken = self.stats.in_flight
        for other in reversed(self._log):
            if other.at <= sent.at:
                break
            if other.status is not None and other.status != 429:
                taken += 1
        return taken

    def _history(self, now: float) -> float:
        """Seconds the log reaches back (for a young limiter, less than a window)."""
        return now - self._log[0].at if self._log else 0.0

    def observe(
        self,
        *,
        status: int,
        remaining: int | None = None,
        retry_after: float | None = None,
        limit_rate: float | None = None,
        sent: SentRequest | None = None,
    ) -> None:
        """Tell the limiter how the service answered, so it can adapt.

        Args:
            status: the HTTP status.
            remaining: ``x-requests-limit-remaining``, when the service sent it.
            retry_after: the service's ``Retry-After`` in seconds (for a 429).
            limit_rate: ``x-requests-limit-rate`` (requests per second), when sent.
            sent: what `slot()` yielded for this request (default: the latest request).
        """
        now = self._clock()
        if sent is None and self._log:
            sent = self._log[-1]
        if sent is not None and sent is self._unreported:
            self._take_latency(status)
        sent_at = now
        if sent is not None:
            sent.status = status
            sent_at = sent.at
        learner = self._learner
        learner.on_answer(sent_at, status)
        if sent is not None and sent.refill_probe:
            learner.on_refill_probe(now, admitted=status < 300, model=self._model())
        if limit_rate is not None and limit_rate > 0 and math.isfinite(limit_rate):
            learner.rate_header = limit_rate
        model = self._model()
        window = self._window(model) if model is not None else 1.0 + self._margin()
        if status == 429:
            self.stats.rate_limited += 1
            self._credit = 0
            if retry_after is not None:
                self._paused_until = max(self._paused_until, now + min(retry_after, _MAX_PAUSE))
            learned_before = learner.learned
            tightened = learner.on_rate_limited(
                now,
                # Counted generously (a window, plus the lateness of a new connection): what
                # left a little earlier may still have counted where the service looked.
                admitted=self._admitted_between(
                    sent_at - window - self._cold_slack, sent_at, skip=sent
                ),
                young=self._history(sent_at) < 1.0,
                says_empty=remaining == 0,
                explained=retry_after is not None or remaining is not None,
                in_burst=self._in_burst(sent, model, window),
                history=self._history(now),
                model=model,
                window=window,
            )
            self.stats.tightened += tightened
            if learner.learned != learned_before:
                self._next_spaced = -math.inf  # a new count: the old spacing no longer applies
        else:
            if remaining is not None and sent is not None and 200 <= status < 300:
                # Ours that the service counted with it: those that left within our window
                # before it (the pacing kept the ones before that out of the service's), and
                # those that left together with it and may have arrived first.
                together = max(_MIN_MARGIN, self._spread or 0.0)
                ours = self._admitted_between(sent.at - window, sent.at + together, skip=None)
                learner.on_remaining(now, remaining + ours, fresh=self._history(sent.at) < window)
                if self.requests_per_second is None:
                    self._credit = remaining - self._taken_since(sent)
                fresh = self._history(sent.at) < window
                if remaining == 0 and model is not None and learner.on_full(now, fresh=fresh):
                    # Twice the pace we hold to: a bucket refilling that fast has room by then.
                    self._refill_probe_at = now + window / model.count / 2
            learner.on_success(now, model=model, window=window)
        self.stats.undone += learner.review(now, window=window, latency=self._latency or 0.0)
        self._notify()

    def _in_burst(self, sent: SentRequest | None, model: LimitModel | None, window: float) -> bool:
        """Whether this request left right after another one (part of a burst)."""
        if sent is None or model is None:
            return False
        close = window / model.count / 4
        for other in reversed(self._log):
            if other.at < sent.at - close:
                return False
            if other is not sent and other.at < sent.at + close:
                return True
        return False

    def _notify(self) -> None:
        """Wake the caller waiting for its turn, to look at what changed."""
        if self._prims.changed is not None:
            self._prims.changed.set()
            self._prims.changed = None
