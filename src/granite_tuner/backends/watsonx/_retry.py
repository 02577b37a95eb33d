"""The one retry policy for every watsonx.ai call (built on tenacity).

What is retried: connection failures, timeouts, 429 and the 5xx statuses of
`RetryPolicy.retry_statuses`. How long to wait: the service's `Retry-After` (seconds,
milliseconds via `retry-after-ms`, or an HTTP date) when it sends one, else capped
exponential backoff with jitter. A `Retry-After` longer than `max_retry_after` is not
waited out: the error is raised at once, so a caller is never silently parked for an hour.

Whether an error may be retried at all is decided where the request is known (the
transport sets `APIError.retryable`): a create that may have reached the server is never
repeated blindly.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from granite_tuner._secrets import get_logger
from granite_tuner.errors import APIError, ConfigurationError

__all__ = ["RetryPolicy", "parse_retry_after", "run_with_retries"]

logger = get_logger("granite_tuner.watsonx")

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
) -> T:
    """Call `attempt` until it returns, raises a non-retryable error, or the budget is spent.

    The last error is re-raised as it is (a typed `APIError`), never wrapped.
    """

    def should_retry(exc: BaseException) -> bool:
        if not isinstance(exc, APIError) or not exc.retryable:
            return False
        retry_after = getattr(exc, "retry_after", None)
        return retry_after is None or retry_after <= policy.max_retry_after

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        immediate = getattr(exc, "retry_immediately", False)
        if immediate:
            return 0.0
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float):
            return float(retry_after)
        return policy.backoff(state.attempt_number)

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        logger.info(
            "%s failed (%s); retry %d of %d in %.2f s",
            description,
            exc,
            state.attempt_number,
            policy.max_attempts - 1,
            delay,
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=wait,
        retry=retry_if_exception(should_retry),
        sleep=anyio.sleep,
        before_sleep=log_retry,
        reraise=True,
    )
    return await retrying(attempt)
