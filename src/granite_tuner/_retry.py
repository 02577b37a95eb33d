"""The one retry policy: from what happened on an attempt to what to do next, in one function.

`decide(policy, attempt)` is pure: given the policy and an `Attempt` (its number, the typed
error it ended with, and what is known about the request: can it be sent again as is? is
there a lookup for the object it creates? did an earlier attempt of this create maybe land,
or time out? was a rejected token just dropped?), it returns a `RetryDecision`:

- `retry` after `delay` seconds (the service's `Retry-After` when it sent one, else capped
  exponential backoff with jitter; at once after a dropped token);
- `look_up` the object first, because a create may have reached the service; then send it
  again only if `resend` (a create that timed out may still be running there, where a
  lookup cannot see it yet: it is only looked up again, never resent);
- `give_up`: the error goes to the caller as it is.

What is retried: connection failures that never reached the server, timeouts, 429 and the 5xx
statuses of `RetryPolicy.retry_statuses`, a 2xx with a broken body, and a 401 once after the
token was dropped. A failure that may have been acted on is retried only for a request that
may be repeated, and looked up for a create that has a lookup; any other create gives up. A
`Retry-After` longer than `max_retry_after` is not waited out. A failed token exchange is final
for the request that needed it (the exchange has its own retries).

`run_with_retries` is the one loop that applies the decisions (the transport, the IAM exchange
and uploads use it); `is_passing_failure` says when a waiting loop reads again, and
`look_up_before_resend` when a caller's create-once must look its object up first. Errors
carry facts (status, `retry_after`, `may_have_been_processed`, `transient`), never retry flags.
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
    GraniteTunerError,
    RateLimitError,
    ServerError,
    UnexpectedResponseError,
)

__all__ = [
    "Attempt",
    "AttemptNotes",
    "RetryDecision",
    "RetryPolicy",
    "decide",
    "is_passing_failure",
    "look_up_before_resend",
    "parse_retry_after",
    "run_with_retries",
]

logger = get_logger("granite_tuner.watsonx")

T = TypeVar("T")


class RetryPolicy(BaseModel):
    """How hard to try before giving up on one request."""

    model_config = ConfigDict(defer_build=True, frozen=True)

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
    landed_before: bool = False
    """An earlier attempt of this create may have made the object."""
    timed_out_before: bool = False
    """An earlier attempt of this create timed out: it may still be running there."""
    token_dropped: bool = False
    """A 401 made the client drop the token it sent; the next attempt fetches a fresh one."""
    in_token_exchange: bool = False
    """The attempt failed while getting a token (the exchange has already retried)."""
    in_lookup: bool = False
    """The attempt failed while looking the object up, before anything was sent again."""


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
    if attempt.in_token_exchange or attempt.number >= policy.max_attempts:
        return GIVE_UP
    outcome = _classify(policy, attempt)
    if outcome is None:
        return GIVE_UP
    acted, retry_after = outcome
    if attempt.token_dropped:
        delay = 0.0
    elif retry_after is not None:
        delay = retry_after
    else:
        delay = policy.backoff(attempt.number)
    if attempt.repeatable:
        return RetryDecision("retry", delay)
    landed = attempt.landed_before or (acted and not attempt.in_lookup)
    if not landed:  # refused before it was acted on: sending it again makes nothing twice
        return RetryDecision("retry", delay)
    if not attempt.can_look_up:
        return GIVE_UP
    error = attempt.error
    timed_out = attempt.timed_out_before or (
        isinstance(error, APITimeoutError)
        and error.may_have_been_processed
        and not attempt.in_lookup
    )
    return RetryDecision("look_up", delay, resend=not timed_out)


def _classify(policy: RetryPolicy, attempt: Attempt) -> tuple[bool, float | None] | None:
    """None for a failure trying again cannot fix; else (may the service have acted on the
    request?, the wait the service asked for)."""
    error = attempt.error
    if isinstance(error, AuthenticationError):
        return (False, None) if attempt.token_dropped else None
    if isinstance(error, APIStatusError):
        if error.status_code not in policy.retry_statuses:
            return None
        if error.retry_after is not None and error.retry_after > policy.max_retry_after:
            return None  # never park a caller silently for longer than allowed
        return error.status_code != 429, error.retry_after  # a 429 was never acted on
    if isinstance(error, UnexpectedResponseError):
        return True, None  # a success status: the service did act
    if isinstance(error, APIConnectionError) and error.transient:
        return error.may_have_been_processed, None
    return None


def is_passing_failure(error: BaseException) -> bool:
    """Whether a status read that failed after its retries says nothing about the object, so
    a waiting loop reads again at its next poll: no answer (unless it cannot change, such as
    an unverifiable certificate), a server failure, a rate limit, a broken success body."""
    if isinstance(error, APIConnectionError):
        return error.transient
    return isinstance(error, ServerError | RateLimitError | UnexpectedResponseError)


def look_up_before_resend(error: BaseException) -> bool:
    """Whether a create that failed with `error` (after its retries) may have made the object,
    so a caller's next try must look it up by its request tag before sending it again.

    Only a refusal (a 4xx other than 408, 409 and 429 that no earlier attempt could have
    overtaken) or a failure before anything was sent (this package's own non-API errors)
    means nothing was made."""
    if isinstance(error, APIStatusError):
        refused = 400 <= error.status_code < 500 and error.status_code not in (408, 409, 429)
        return not refused or error.may_have_been_processed
    return not (isinstance(error, GraniteTunerError) and not isinstance(error, APIError))


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


@dataclass
class AttemptNotes:
    """What the sender noticed during one attempt besides its error (fresh for each attempt)."""

    token_dropped: bool = False
    in_token_exchange: bool = False


async def run_with_retries(
    policy: RetryPolicy,
    attempt: Callable[[AttemptNotes], Awaitable[T]],
    *,
    description: str,
    repeatable: bool = True,
    look_up: Callable[[], Awaitable[T | None]] | None = None,
) -> T:
    """Call `attempt` until it returns or `decide` gives up; the last error is re-raised as it
    is (a typed `APIError`), marked `may_have_been_processed` when an earlier attempt may have
    made the object. With `look_up`, a create that may have landed is looked up before it is
    sent again, and what the lookup finds is the answer."""
    number = 0
    decision: RetryDecision | None = None
    landed = False
    # The error that ruled resending out (a create's timeout): raised again after each lookup
    # that finds nothing, so the next decision is "look up again", never "send".
    held: APIError | None = None
    while True:
        number += 1
        notes = AttemptNotes()
        in_lookup = False
        try:
            if look_up is not None and decision is not None and decision.action == "look_up":
                in_lookup = True
                found = await look_up()
                in_lookup = False
                if found is not None:
                    logger.info(
                        "%s: the earlier attempt had succeeded; using its result", description
                    )
                    return found
                if held is not None:
                    raise held
            return await attempt(notes)
        except APIError as error:
            decision = decide(
                policy,
                Attempt(
                    number=number,
                    error=error,
                    repeatable=repeatable,
                    can_look_up=look_up is not None,
                    landed_before=landed,
                    timed_out_before=held is not None,
                    token_dropped=notes.token_dropped,
                    in_token_exchange=notes.in_token_exchange,
                    in_lookup=in_lookup,
                ),
            )
            if decision.action == "look_up":
                landed = True
                if not decision.resend and held is None:
                    held = error
            if decision.action == "give_up":
                if landed:
                    error.may_have_been_processed = True
                raise
            logger.info(
                "%s failed (%s); retry %d of %d in %.2f s",
                description,
                error,
                number,
                policy.max_attempts - 1,
                decision.delay,
            )
        await anyio.sleep(decision.delay)
