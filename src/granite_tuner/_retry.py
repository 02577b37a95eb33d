"""The one retry policy: from what happened on an attempt to what to do next, in one function.

`decide(policy, attempt)` is pure: given the policy, the attempt's number, the typed error it
ended with and what is known about the request (can it be sent again as is? is there a lookup
for the object it creates? was a rejected token just dropped?), it returns a `RetryDecision`:

- `retry` after `delay` seconds (the service's `Retry-After` when it sent one, else capped
  exponential backoff with jitter);
- `look_up` the object first, because a create may have reached the service; then send it
  again only if `resend` (a create that timed out may still be running there: it is only
  looked up again, never resent);
- `give_up`: the error goes to the caller as it is.

What is retried: connection failures that never reached the server, timeouts, 429 and the 5xx
statuses of `RetryPolicy.retry_statuses`, a 2xx with a broken body, and a 401 once after the
token was dropped. A `Retry-After` longer than `max_retry_after` is not waited out. A failed
token exchange is final for the request that needed it (the exchange has its own retries).

The transport, the IAM exchange and the pollers all ask this module; errors carry facts
(status, `retry_after`, `may_have_been_processed`, `transient`), never retry flags.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from granite_tuner._secrets import get_logger
from granite_tuner.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    UnexpectedResponseError,
)

__all__ = [
    "Attempt",
    "RetryDecision",
    "RetryPolicy",
    "decide",
    "is_passing_failure",
    "parse_retry_after",
    "run_with_retries",
]

logger = get_logger("granite_tuner.retry")

T = TypeVar("T")


class RetryPolicy(BaseModel):
    """How hard to try before giving up on one request."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(
        default=6, ge=1, le=50, description="Attempts per request, first included."
    )
    initial_backoff: float = Field(
        default=0.5, ge=0, allow_inf_nan=False, description="Seconds before the first retry."
    )
    max_backoff: float = Field(
        default=8.0, ge=0, allow_inf_nan=False, description="Cap on one backoff, in seconds."
    )
    jitter: float = Field(
        default=0.25, ge=0, le=1, description="Each backoff is randomised by up to this fraction."
    )
    max_retry_after: float = Field(
        default=60.0,
        ge=0,
        allow_inf_nan=False,
        description="Longest Retry-After waited out, in seconds.",
    )
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504, 520})

    if not TYPE_CHECKING:  # type checkers keep the fields' own signature

        def __init__(self, **values: Any) -> None:
            """Bad values raise `ConfigurationError` (this package's tree), not pydantic's."""
            try:
                super().__init__(**values)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(part) for part in e['loc']) or 'value'}: {e['msg']}"
                    for e in exc.errors()
                )
                raise ConfigurationError(f"RetryPolicy: {problems}.") from None

    def backoff(self, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1 = the first retry)."""
        base = min(self.max_backoff, self.initial_backoff * 2.0 ** (retry_number - 1))
        return base * (1 - self.jitter * random.random())  # noqa: S311 - jitter, not crypto


@dataclass(frozen=True)
class Attempt:
    """What happened on one attempt of one request, and what is known about the request."""

    number: int
    """1 for the first attempt."""
    error: APIError
    repeatable: bool
    """The request may be sent again as it is (a read, a PUT or DELETE, or marked so)."""
    can_look_up: bool = False
    """A create with a lookup: when it may have landed, the object is looked up first."""
    token_dropped: bool = False
    """A 401 made the client drop the token it sent; the next attempt fetches a fresh one."""
    in_token_exchange: bool = False
    """The attempt failed while getting a token (the exchange has already retried)."""


@dataclass(frozen=True)
class RetryDecision:
    """What to do after a failed attempt."""

    action: Literal["retry", "look_up", "give_up"]
    delay: float = 0.0
    resend: bool = True
    """For `look_up`: send again if the lookup finds nothing (False after a timeout)."""


GIVE_UP = RetryDecision("give_up")


def decide(policy: RetryPolicy, attempt: Attempt) -> RetryDecision:
    """The next step after `attempt` failed; pure, so it can be read (and tested) as a table."""
    error = attempt.error
    if attempt.in_token_exchange or attempt.number >= policy.max_attempts:
        return GIVE_UP
    if isinstance(error, AuthenticationError):
        return RetryDecision("retry") if attempt.token_dropped else GIVE_UP
    if isinstance(error, APIStatusError):
        if error.status_code not in policy.retry_statuses:
            return GIVE_UP
        if error.retry_after is not None and error.retry_after > policy.max_retry_after:
            return GIVE_UP  # never park a caller silently for longer than allowed
        delay = error.retry_after if error.retry_after is not None else None
        if error.status_code == 429:  # refused before it was acted on: always safe to resend
            return RetryDecision("retry", _delay(policy, attempt, delay))
        return _after_possible_processing(policy, attempt, delay)
    if isinstance(error, UnexpectedResponseError):  # a success status: the server acted
        return _after_possible_processing(policy, attempt, None)
    if isinstance(error, APIConnectionError):
        if not error.transient:
            return GIVE_UP
        if not error.may_have_been_processed:
            return RetryDecision("retry", _delay(policy, attempt, None))
        return _after_possible_processing(policy, attempt, None)
    return GIVE_UP


def _after_possible_processing(
    policy: RetryPolicy, attempt: Attempt, retry_after: float | None
) -> RetryDecision:
    """The request may have been acted on: resend only what is safe, look creates up."""
    delay = _delay(policy, attempt, retry_after)
    if attempt.repeatable:
        return RetryDecision("retry", delay)
    if attempt.can_look_up:
        timed_out = isinstance(attempt.error, APITimeoutError)
        return RetryDecision("look_up", delay, resend=not timed_out)
    return GIVE_UP


def _delay(policy: RetryPolicy, attempt: Attempt, retry_after: float | None) -> float:
    if attempt.token_dropped:
        return 0.0
    return retry_after if retry_after is not None else policy.backoff(attempt.number)


def is_passing_failure(error: BaseException) -> bool:
    """Whether a read that failed after its retries is worth trying again later (a waiting
    loop goes on): the same failures `decide` would retry for a read."""
    if not isinstance(error, APIError):
        return False
    unlimited = RetryPolicy(max_attempts=50, max_retry_after=1e9)
    return decide(unlimited, Attempt(number=1, error=error, repeatable=True)).action == "retry"


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the service asks us to wait, from `retry-after-ms` or `Retry-After`."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


async def run_with_retries(
    policy: RetryPolicy,
    attempt: Callable[[], Awaitable[T]],
    *,
    description: str,
    repeatable: bool = True,
) -> T:
    """Call `attempt` until it returns or `decide` gives up; the last error is re-raised as it
    is (a typed `APIError`). For requests with no lookup (reads, uploads, token exchanges)."""
    number = 0
    while True:
        number += 1
        try:
            return await attempt()
        except APIError as error:
            decision = decide(policy, Attempt(number=number, error=error, repeatable=repeatable))
            if decision.action != "retry":
                raise
            log_retry(description, error, number, policy, decision.delay)
        await anyio.sleep(decision.delay)


def log_retry(
    description: str, error: APIError, number: int, policy: RetryPolicy, delay: float
) -> None:
    logger.info(
        "%s failed (%s); retry %d of %d in %.2f s",
        description,
        error,
        number,
        policy.max_attempts - 1,
        delay,
    )
