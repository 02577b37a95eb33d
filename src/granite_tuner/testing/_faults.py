"""Injected faults: the network and service failures a reliable client has to survive.

A test adds `Fault` rules to ``fake.faults``; for every request the app asks
`FaultSet.pick` which rule (if any) hits it. Rules are tried in the order they were
added and at most one hits a request. A rule matches a request by method and a regex searched in
the path; of the matching requests it lets the first ``after`` through, then hits up to
``times`` of them (each with chance ``probability``, drawn from an RNG seeded by the fake's
``seed`` so runs repeat).
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

FaultAction = Literal[
    "status",
    "drop_before",
    "drop_after",
    "delay",
    "malformed",
    "truncated",
    "slow_body",
    "expire_token",
]


@dataclass
class Fault:
    """One fault rule.

    Actions:

    - ``status``: answer ``status`` with a watsonx error body (and ``Retry-After:
      retry_after`` when given) without handling the request.
    - ``drop_before``: close the connection without handling the request (no response).
    - ``drop_after``: handle the request fully (state changes happen!), then close the
      connection without sending the response.
    - ``delay``: sleep ``delay`` seconds, then handle the request normally.
    - ``malformed``: handle the request, then answer 200 with a body that is not valid JSON.
    - ``truncated``: handle the request, send the headers with the full ``Content-Length`` but
      only half of the body, then close the connection.
    - ``slow_body``: handle the request, then send the body in 4 chunks with ``delay`` seconds
      before each.
    - ``expire_token``: treat the request's bearer token as expired (401
      ``authentication_token_expired``); the token keeps working for other requests.
    """

    action: FaultAction
    method: str | None = None
    path: str | None = None
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    times: int | None = 1
    probability: float = 1.0
    after: int = 0
    hits: int = 0

    def __post_init__(self) -> None:
        if self.action not in get_args(FaultAction):
            raise ValueError(f"unknown fault action {self.action!r}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if self.delay < 0 or self.after < 0 or (self.times is not None and self.times < 0):
            raise ValueError("delay, after and times must not be negative")
        if self.path is not None:
            re.compile(self.path)  # a bad regex fails here, not on the server thread

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule is about this request (ignoring ``after``/``times``)."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path is None or re.search(self.path, path) is not None


class FaultSet:
    """The fake's fault rules; thread-safe (requests arrive on the server thread)."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[tuple[Fault, list[int]]] = []  # (rule, [matching requests seen])
        self._rng = random.Random(seed)  # noqa: S311 - seeded so test runs repeat

    def add(self, fault: Fault) -> Fault:
        """Add a rule; it applies to requests that arrive from now on. Returns the rule."""
        with self._lock:
            self._rules.append((fault, [0]))
        return fault

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._rules)

    def __iter__(self) -> Iterator[Fault]:
        """Iterate over a snapshot of the rules."""
        with self._lock:
            return iter([rule for rule, _ in self._rules])

    def pick(self, method: str, path: str) -> Fault | None:
        """The rule that hits this request, if any; counts it in the rule's ``hits``."""
        chosen: Fault | None = None
        with self._lock:
            for rule, seen in self._rules:
                if not rule.matches(method, path):
                    continue
                seen[0] += 1
                if chosen is not None or seen[0] <= rule.after:
                    continue
                if rule.times is not None and rule.hits >= rule.times:
                    continue
                if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                    continue
                rule.hits += 1
                chosen = rule
        return chosen
