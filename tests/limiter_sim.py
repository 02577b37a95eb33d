"""A discrete-event simulation of a client, its `RateLimiter` and a rate-limited service.

The limiter runs on the simulation's clock (no event loop, no sleeping), so a whole evaluation
against each of the fake's rate-limit algorithms takes milliseconds and comes out the same on
every run. It plays what `WatsonxClient` + `Evaluator` do: ``workers`` items in progress, each
taking a limiter slot (an in-flight place, then its turn to leave) per attempt, reporting the
answer with `observe`, and retrying a 429 as the package's one retry policy decides
(`granite_tuner._retry.decide`: after its ``Retry-After``, or a backoff whose jitter comes from
the simulation's seeded generator), up to ``max_attempts``. Requests reach the service after
a one-way delay with some jitter.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from granite_tuner._retry import Attempt, RetryPolicy, decide
from granite_tuner.errors import RateLimitError
from granite_tuner.limits import RateLimiter, SentRequest
from granite_tuner.testing._ratelimit import Admission

START = 1000.3  # not a whole second, so fixed windows do not line up with the start


@dataclass
class Service:
    """The service's side: its algorithm (None: no limit), headers, and random faults."""

    admission: Admission | None
    rate: float = 0.0
    latency: float = 0.15
    one_way: float = 0.002
    jitter: float = 0.003  # mean of the exponential extra delay on the way in
    remaining_header: bool = True
    rate_header: bool = False
    retry_after: bool = True
    random_429: float = 0.0  # share of requests answered a bare 429 whatever the rate


@dataclass
class Outcome:
    seconds: float
    completed: int
    lost: int
    requests: int
    rate_limited: int
    waited: float = 0.0  # seconds requests spent waiting for the pacing, all together
    sends: list[float] = field(default_factory=list)
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (time, status)

    @property
    def share_429(self) -> float:
        return self.rate_limited / self.requests if self.requests else 0.0

    def share_of(self, rate: float) -> float:
        return self.completed / self.seconds / rate


@dataclass
class _Item:
    index: int
    attempts: int = 0
    queued: float = 0.0


class Simulation:
    """Runs ``items`` through ``limiter`` against ``service`` with ``workers`` in parallel."""

    def __init__(
        self,
        limiter: RateLimiter,
        service: Service,
        *,
        items: int,
        workers: int,
        seed: int = 0,
        max_attempts: int = 6,
    ) -> None:
        self.limiter = limiter
        self.service = service
        self.now = START
        limiter._clock = lambda: self.now
        self._rng = random.Random(seed)
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._todo = deque(_Item(n) for n in range(items))
        self._workers = workers
        # The policy's own jitter would draw from the global generator: the simulation draws
        # it from its seeded one instead, so that a run comes out the same every time.
        self._policy = RetryPolicy(max_attempts=max_attempts, jitter=0.0)
        self._jitter = RetryPolicy().jitter
        self._places = 0  # in-flight places held (waiting for the turn, or in flight)
        self._want_place: deque[_Item] = deque()
        self._want_turn: deque[_Item] = deque()
        self._wake_at: float | None = None
        self.outcome = Outcome(0.0, 0, 0, 0, 0)

    def run(self) -> Outcome:
        for _ in range(self._workers):
            self._next_item()
        while self._events:
            when, _, action = heapq.heappop(self._events)
            self.now = max(self.now, when)
            action()
        return self.outcome

    def _at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._order), action))

    # --- the client ---------------------------------------------------------------------------

    def _next_item(self) -> None:
        if self._todo:
            self._ask(self._todo.popleft())

    def _ask(self, item: _Item) -> None:
        self._want_place.append(item)
        self._grant()

    def _grant(self) -> None:
        limit = self.limiter.inflight_limit
        while self._want_place and (limit is None or self._places < limit):
            self._places += 1
            item = self._want_place.popleft()
            item.queued = self.now
            self._want_turn.append(item)
        while self._want_turn:
            earliest = self.limiter._earliest(self.now)
            if earliest > self.now:
                self.limiter._learner.note_held_back(self.now)
                if self._wake_at is None or earliest < self._wake_at:
                    self._wake_at = earliest
                    self._at(earliest, self._woken)
                return
            self._send(self._want_turn.popleft(), self.limiter._record(self.now))

    def _woken(self) -> None:
        self._wake_at = None
        self._grant()

    def _send(self, item: _Item, sent: SentRequest) -> None:
        item.attempts += 1
        self.outcome.waited += self.now - item.queued
        self.outcome.requests += 1
        self.outcome.sends.append(self.now)
        delay = self.service.one_way + self._rng.expovariate(1 / self.service.jitter)
        self._at(self.now + delay, lambda: self._arrive(item, sent))

    # --- the service --------------------------------------------------------------------------

    def _arrive(self, item: _Item, sent: SentRequest) -> None:
        service = self.service
        headers: dict[str, float] = {}
        status = 200
        if service.random_429 and self._rng.random() < service.random_429:
            status = 429
        elif service.admission is not None:
            decision = service.admission.take(self.now)
            if service.remaining_header:
                headers["remaining"] = decision.remaining
            if service.rate_header:
                headers["rate"] = service.rate
            if not decision.allowed:
                status = 429
                if service.retry_after:
                    headers["retry_after"] = decision.retry_after
        self.outcome.arrivals.append((self.now, status))
        work = service.latency if status == 200 else 0.001
        back = self.now + work + service.one_way
        self._at(back, lambda: self._answer(item, sent, status, headers))

    def _answer(
        self, item: _Item, sent: SentRequest, status: int, headers: dict[str, float]
    ) -> None:
        self.limiter._finished(sent, self.now)
        remaining = headers.get("remaining")
        self.limiter.observe(
            status=status,
            remaining=None if remaining is None else int(remaining),
            retry_after=headers.get("retry_after"),
            limit_rate=headers.get("rate"),
            sent=sent,
        )
        self._places -= 1
        if status == 200:
            self.outcome.completed += 1
            self.outcome.seconds = self.now - START
            self._next_item()
        else:
            self.outcome.rate_limited += 1
            retry_after = headers.get("retry_after")
            refused = RateLimitError("429", status_code=429, retry_after=retry_after)
            decision = decide(
                self._policy, Attempt(number=item.attempts, error=refused, repeatable=True)
            )
            if decision.action == "give_up":
                self.outcome.lost += 1
                self._next_item()
            else:
                wait = decision.delay
                if retry_after is None:
                    wait *= 1 - self._jitter * self._rng.random()
                self._at(self.now + wait, lambda: self._ask(item))
        self._grant()


def most_in_one_second(times: list[float]) -> int:
    """The most of ``times`` within any half-open one-second window."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, time in enumerate(ordered):
        while ordered[start] <= time - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most
