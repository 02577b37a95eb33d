"""The one retry policy, read as a table: (what happened, what is known) -> what to do next.

`decide` is pure, so every row runs without a network; `run_with_retries` is then driven with
scripted failures to show that the loop carries a create's history (it may have landed, it
timed out) from one attempt's decision to the next.
"""

from __future__ import annotations

from typing import Any

import pytest

from granite_tuner import RetryPolicy
from granite_tuner._retry import (
    Attempt,
    AttemptNotes,
    decide,
    is_passing_failure,
    look_up_before_resend,
    run_with_retries,
)
from granite_tuner.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    RateLimitError,
    ServerError,
    UnexpectedResponseError,
)

# No jitter: backoff(n) is exactly min(8, 1 * 2**(n-1)).
POLICY = RetryPolicy(max_attempts=5, initial_backoff=1.0, max_backoff=8.0, jitter=0.0)


def status(cls: type[APIStatusError], code: int, retry_after: float | None = None) -> APIError:
    return cls(f"HTTP {code}", status_code=code, retry_after=retry_after)


def refused() -> APIError:  # nothing reached the server
    return APIConnectionError("could not connect")


def dropped() -> APIError:  # sent, then the connection broke
    return APIConnectionError("broke", may_have_been_processed=True)


def read_timeout() -> APIError:
    return APITimeoutError("no answer in time", may_have_been_processed=True)


def connect_timeout() -> APIError:
    return APITimeoutError("could not connect in time")


def bad_certificate() -> APIError:
    return APIConnectionError("certificate", transient=False)


def broken_body() -> APIError:
    return UnexpectedResponseError("HTTP 200 without the promised body", status_code=200)


READ: dict[str, Any] = {"repeatable": True}
CREATE: dict[str, Any] = {"repeatable": False, "can_look_up": True}
BLIND_CREATE: dict[str, Any] = {"repeatable": False}  # a POST with no lookup

# (row id, error, attempt number, what is known, expected action, delay, resend)
ROWS: list[tuple[str, APIError, int, dict[str, Any], str, float, bool]] = [
    # Reads and other repeatable requests: every passing failure is retried.
    ("read 503 backs off", status(ServerError, 503), 1, READ, "retry", 1.0, True),
    ("read 503 third retry doubles", status(ServerError, 503), 3, READ, "retry", 4.0, True),
    ("backoff is capped", status(ServerError, 502), 4, READ, "retry", 8.0, True),
    ("read 503 Retry-After wins", status(ServerError, 503, 2.5), 1, READ, "retry", 2.5, True),
    ("read 429 Retry-After", status(RateLimitError, 429, 7.0), 2, READ, "retry", 7.0, True),
    ("Retry-After over cap", status(RateLimitError, 429, 61.0), 1, READ, "give_up", 0.0, True),
    ("Retry-After at cap", status(RateLimitError, 429, 60.0), 1, READ, "retry", 60.0, True),
    ("501 is not retried", status(ServerError, 501), 1, READ, "give_up", 0.0, True),
    ("400 is final", status(BadRequestError, 400), 1, READ, "give_up", 0.0, True),
    ("404 is final", status(NotFoundError, 404), 1, READ, "give_up", 0.0, True),
    ("409 is final", status(ConflictError, 409), 1, READ, "give_up", 0.0, True),
    ("connection refused", refused(), 1, READ, "retry", 1.0, True),
    ("connection dropped", dropped(), 2, READ, "retry", 2.0, True),
    ("read timeout", read_timeout(), 1, READ, "retry", 1.0, True),
    ("broken success body", broken_body(), 1, READ, "retry", 1.0, True),
    ("bad certificate", bad_certificate(), 1, READ, "give_up", 0.0, True),
    ("budget spent", status(ServerError, 503), 5, READ, "give_up", 0.0, True),
    ("budget spent on 429", status(RateLimitError, 429, 1.0), 5, READ, "give_up", 0.0, True),
    # 401: retried once, at once, only after the rejected token was dropped.
    (
        "401 token dropped",
        status(AuthenticationError, 401),
        1,
        READ | {"token_dropped": True},
        "retry",
        0.0,
        True,
    ),
    ("401 token kept", status(AuthenticationError, 401), 1, READ, "give_up", 0.0, True),
    (
        "401 on a create",
        status(AuthenticationError, 401),
        1,
        CREATE | {"token_dropped": True},
        "retry",
        0.0,
        True,
    ),
    (
        "401 after a create landed",
        status(AuthenticationError, 401),
        2,
        CREATE | {"token_dropped": True, "landed_before": True},
        "look_up",
        0.0,
        True,
    ),
    # A failed token exchange already had its own retries.
    (
        "token exchange failed",
        status(ServerError, 503),
        1,
        READ | {"in_token_exchange": True},
        "give_up",
        0.0,
        True,
    ),
    (
        "token exchange refused",
        refused(),
        1,
        CREATE | {"in_token_exchange": True},
        "give_up",
        0.0,
        True,
    ),
    # Creates with a lookup: refused before acting -> resend; maybe acted -> look up first.
    ("create 429", status(RateLimitError, 429), 1, CREATE, "retry", 1.0, True),
    ("create refused", refused(), 1, CREATE, "retry", 1.0, True),
    ("create connect timeout", connect_timeout(), 1, CREATE, "retry", 1.0, True),
    ("create 502", status(ServerError, 502), 1, CREATE, "look_up", 1.0, True),
    ("create 503 Retry-After", status(ServerError, 503, 3.0), 1, CREATE, "look_up", 3.0, True),
    ("create dropped", dropped(), 1, CREATE, "look_up", 1.0, True),
    ("create broken body", broken_body(), 1, CREATE, "look_up", 1.0, True),
    ("create read timeout", read_timeout(), 1, CREATE, "look_up", 1.0, False),
    (
        "create 429 after landing",
        status(RateLimitError, 429),
        2,
        CREATE | {"landed_before": True},
        "look_up",
        2.0,
        True,
    ),
    (
        "connect timeout after landing",
        connect_timeout(),
        2,
        CREATE | {"landed_before": True},
        "look_up",
        2.0,
        True,
    ),
    (
        "anything after a timeout",
        refused(),
        2,
        CREATE | {"landed_before": True, "timed_out_before": True},
        "look_up",
        2.0,
        False,
    ),
    (
        "lookup timed out",
        read_timeout(),
        2,
        CREATE | {"landed_before": True, "in_lookup": True},
        "look_up",
        2.0,
        True,
    ),
    (
        "lookup 503",
        status(ServerError, 503),
        2,
        CREATE | {"landed_before": True, "in_lookup": True},
        "look_up",
        2.0,
        True,
    ),
    (
        "lookup 403",
        status(APIStatusError, 403),
        2,
        CREATE | {"landed_before": True, "in_lookup": True},
        "give_up",
        0.0,
        True,
    ),
    ("create 400", status(BadRequestError, 400), 1, CREATE, "give_up", 0.0, True),
    ("create budget spent", status(ServerError, 502), 5, CREATE, "give_up", 0.0, True),
    # Creates without a lookup: resent only when nothing can have been made.
    ("blind create 429", status(RateLimitError, 429), 1, BLIND_CREATE, "retry", 1.0, True),
    ("blind create refused", refused(), 1, BLIND_CREATE, "retry", 1.0, True),
    ("blind create 502", status(ServerError, 502), 1, BLIND_CREATE, "give_up", 0.0, True),
    ("blind create timeout", read_timeout(), 1, BLIND_CREATE, "give_up", 0.0, True),
    ("blind create broken body", broken_body(), 1, BLIND_CREATE, "give_up", 0.0, True),
]


@pytest.mark.parametrize(
    ("error", "number", "known", "action", "delay", "resend"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_decision_table(
    error: APIError, number: int, known: dict[str, Any], action: str, delay: float, resend: bool
) -> None:
    decision = decide(POLICY, Attempt(number=number, error=error, **known))
    assert (decision.action, decision.delay, decision.resend) == (action, delay, resend)


def test_jitter_only_shortens_the_backoff() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=8.0, jitter=0.5)
    attempt = Attempt(number=2, error=status(ServerError, 503), repeatable=True)
    delays = {decide(policy, attempt).delay for _ in range(50)}
    assert all(1.0 <= d <= 2.0 for d in delays)


def test_custom_retry_statuses_are_the_policy_s_answer() -> None:
    policy = RetryPolicy(retry_statuses=frozenset({408}), jitter=0.0, initial_backoff=1.0)
    timeout_status = status(APIStatusError, 408)
    assert decide(policy, Attempt(1, timeout_status, repeatable=True)).action == "retry"
    assert decide(policy, Attempt(1, status(ServerError, 503), repeatable=True)).action == "give_up"
    # A 408 may have been acted on: a create looks itself up first.
    assert decide(policy, Attempt(1, timeout_status, **CREATE)).action == "look_up"


@pytest.mark.parametrize(
    ("error", "passing"),
    [
        (refused(), True),
        (read_timeout(), True),
        (status(ServerError, 503), True),
        (status(ServerError, 501), True),
        (status(RateLimitError, 429, 3600.0), True),
        (broken_body(), True),
        (bad_certificate(), False),
        (status(NotFoundError, 404), False),
        (status(AuthenticationError, 401), False),
        (ConfigurationError("bad"), False),
        (ValueError("not ours"), False),
    ],
)
def test_which_failed_reads_a_wait_outlives(error: BaseException, passing: bool) -> None:
    assert is_passing_failure(error) is passing


def processed(error: APIError) -> APIError:
    error.may_have_been_processed = True
    return error


@pytest.mark.parametrize(
    ("error", "look_up"),
    [
        (status(BadRequestError, 400), False),
        (status(AuthenticationError, 401), False),
        (status(APIStatusError, 403), False),
        (status(NotFoundError, 404), False),
        (ConfigurationError("bad argument"), False),
        (processed(status(BadRequestError, 400)), True),  # an earlier attempt may have landed
        (status(APIStatusError, 408), True),
        (status(ConflictError, 409), True),
        (status(RateLimitError, 429), True),
        (status(ServerError, 502), True),
        (refused(), True),
        (read_timeout(), True),
        (broken_body(), True),
        (RuntimeError("unknown"), True),
    ],
)
def test_when_a_callers_create_once_looks_up_first(error: BaseException, look_up: bool) -> None:
    assert look_up_before_resend(error) is look_up


# --- the loop that applies the decisions ------------------------------------------------------

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.0, max_backoff=0.0)


class Script:
    """An attempt that fails as scripted, and a lookup that finds the object on a given try."""

    def __init__(self, failures: list[APIError], found_on_lookup: int | None = None) -> None:
        self.failures = failures
        self.found_on_lookup = found_on_lookup
        self.sent = 0
        self.lookups = 0

    async def attempt(self, notes: AttemptNotes) -> str:
        self.sent += 1
        if self.failures:
            raise self.failures.pop(0)
        return "created"

    async def look_up(self) -> str | None:
        self.lookups += 1
        return "found" if self.lookups == self.found_on_lookup else None


@pytest.mark.anyio
async def test_a_create_that_may_have_landed_is_looked_up_before_it_is_resent() -> None:
    script = Script([status(ServerError, 502), status(RateLimitError, 429)])
    result = await run_with_retries(
        FAST, script.attempt, description="create", repeatable=False, look_up=script.look_up
    )
    # 502 -> look up (nothing) and resend -> 429 -> look up again (landing is remembered).
    assert (result, script.sent, script.lookups) == ("created", 3, 2)


@pytest.mark.anyio
async def test_a_create_that_timed_out_is_only_looked_up_then_its_timeout_raised() -> None:
    timeout = read_timeout()
    script = Script([timeout])
    with pytest.raises(APITimeoutError) as caught:
        await run_with_retries(
            FAST, script.attempt, description="create", repeatable=False, look_up=script.look_up
        )
    assert caught.value is timeout
    assert (script.sent, script.lookups) == (1, 3)


@pytest.mark.anyio
async def test_what_the_lookup_finds_is_the_answer() -> None:
    script = Script([dropped()], found_on_lookup=1)
    result = await run_with_retries(
        FAST, script.attempt, description="create", repeatable=False, look_up=script.look_up
    )
    assert (result, script.sent, script.lookups) == ("found", 1, 1)


@pytest.mark.anyio
async def test_a_final_error_after_a_possible_landing_says_so() -> None:
    refusal = status(BadRequestError, 400)
    script = Script([status(ServerError, 502), refusal])
    with pytest.raises(BadRequestError) as caught:
        await run_with_retries(
            FAST, script.attempt, description="create", repeatable=False, look_up=script.look_up
        )
    assert caught.value is refusal
    assert caught.value.may_have_been_processed  # so create-once looks it up before resending
    assert look_up_before_resend(caught.value)


@pytest.mark.anyio
async def test_a_failed_token_exchange_ends_the_request() -> None:
    calls = 0

    async def attempt(notes: AttemptNotes) -> str:
        nonlocal calls
        calls += 1
        notes.in_token_exchange = True
        raise status(ServerError, 503)

    with pytest.raises(ServerError):
        await run_with_retries(FAST, attempt, description="read")
    assert calls == 1
