"""The fake's rate-limit modes: each admits exactly what its algorithm says, on a test clock."""

from __future__ import annotations

import httpx
import pytest

from granite_tuner.testing import FakeWatsonx
from granite_tuner.testing._ratelimit import (
    Admission,
    FixedWindow,
    ServiceLimit,
    SlidingWindow,
    TokenBucket,
    new_admission,
)

from .test_fake_generation import generate
from .workflow import error_code


def admitted(algorithm: Admission, times: list[float]) -> str:
    """'+' for each request admitted at these times, '-' for each refused."""
    return "".join("+" if algorithm.take(t).allowed else "-" for t in times)


def test_sliding_window_counts_each_admitted_request_for_exactly_one_second() -> None:
    window = SlidingWindow(limit=3)
    # (Times are binary fractions, so that "exactly one second later" is exact.)
    assert admitted(window, [0.0, 0.125, 0.25, 0.375, 0.9375]) == "+++--"
    # The request of 0.0 stops counting at 1.0, not before; refused ones never counted.
    assert admitted(window, [1.0, 1.0625, 1.125, 1.25]) == "+-++"
    # Now 1.0, 1.125 and 1.25 count: nothing until 2.0.
    assert admitted(window, [1.5, 1.9375, 2.0]) == "--+"


def test_sliding_window_has_no_second_boundary_to_exploit() -> None:
    # Three at 0.9 and three at 1.1 pass a fixed window; a sliding window refuses the second three.
    assert admitted(SlidingWindow(limit=3), [0.9] * 3 + [1.1] * 3) == "+++---"
    assert admitted(FixedWindow(limit=3), [0.9] * 3 + [1.1] * 3) == "++++++"


def test_fixed_window_starts_afresh_at_each_whole_second() -> None:
    window = FixedWindow(limit=2)
    assert admitted(window, [10.0, 10.5, 10.999, 11.0, 11.999, 12.0]) == "++-+++"


def test_token_bucket_starts_full_and_refills_at_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, capacity=3, now=0.0)
    assert admitted(bucket, [0.0, 0.0, 0.0, 0.0]) == "+++-"
    assert admitted(bucket, [0.4, 0.5, 0.9, 1.0]) == "-+-+"  # one token per half second
    assert admitted(bucket, [10.0] * 4) == "+++-"  # never more than the capacity stored


def test_decisions_tell_what_is_left_and_when_to_come_back() -> None:
    window = SlidingWindow(limit=2)
    assert [window.take(t).remaining for t in (0.0, 0.2)] == [1, 0]
    refused = window.take(0.5)
    assert (refused.allowed, refused.remaining, refused.retry_after) == (False, 0, 1)
    fixed = FixedWindow(limit=1)
    fixed.take(3.2)
    assert fixed.take(3.9).retry_after == 1  # whole seconds, at least one
    bucket = TokenBucket(rate=0.25, capacity=1, now=0.0)
    bucket.take(0.0)
    assert bucket.take(0.0).retry_after == 4


def test_windows_admit_the_whole_requests_a_second_allows() -> None:
    assert admitted(new_admission("sliding_window", 2.5, None, 0.0), [0.0] * 3) == "++-"
    assert admitted(new_admission("fixed_window", 0.5, None, 0.0), [0.0] * 2) == "+-"
    assert admitted(new_admission("token_bucket", 2.5, None, 0.0), [0.0] * 4) == "+++-"
    with pytest.raises(ValueError, match="rate_limit_mode"):
        new_admission("leaky", 1.0, None, 0.0)  # type: ignore[arg-type]


def test_a_change_of_settings_starts_the_limit_afresh() -> None:
    limit = ServiceLimit()

    def take(mode: str, now: float) -> bool:
        return limit.take(mode, 1.0, None, monotonic=now, wall=now).allowed  # type: ignore[arg-type]

    assert [take("sliding_window", 0.0), take("sliding_window", 0.1)] == [True, False]
    assert take("fixed_window", 0.2)  # a new mode, a fresh count
    assert not take("fixed_window", 0.3)


def test_the_fixed_window_follows_the_wall_clock_and_the_others_the_monotonic_one() -> None:
    limit = ServiceLimit()
    # Monotonic time stands still; the wall clock crosses a whole second.
    assert limit.take("fixed_window", 1.0, None, monotonic=5.0, wall=100.9).allowed
    assert limit.take("fixed_window", 1.0, None, monotonic=5.0, wall=101.0).allowed
    other = ServiceLimit()
    assert other.take("sliding_window", 1.0, None, monotonic=5.0, wall=100.9).allowed
    assert not other.take("sliding_window", 1.0, None, monotonic=5.0, wall=101.0).allowed


def test_bad_mode_or_headers_are_refused_when_the_fake_is_built() -> None:
    with pytest.raises(ValueError, match="rate_limit_mode"):
        FakeWatsonx(rate_limit_mode="leaky")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate_limit_headers"):
        FakeWatsonx(rate_limit_headers="some")  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["sliding_window", "fixed_window"])
async def test_a_window_mode_answers_429_as_watsonx_does(
    fake: FakeWatsonx, client: httpx.AsyncClient, mode: str
) -> None:
    fake.rate_limit = 0.5  # one request per second; the test's requests share a second or two
    fake.rate_limit_mode = mode  # type: ignore[assignment]
    fake.rate_limit_headers = "all"
    statuses: list[int] = []
    limited: httpx.Response | None = None
    for n in range(4):  # a fixed window may start afresh once during the test, never twice
        response = await generate(client, f"x{n}")
        statuses.append(response.status_code)
        if response.status_code == 429:
            limited = response
            break
    assert statuses[0] == 200
    assert limited is not None
    assert error_code(limited) == "rate_limit_exceeded"
    assert limited.headers["x-requests-limit-remaining"] == "0"
    assert limited.headers["x-requests-limit-rate"] == "0.5"
    assert int(limited.headers["retry-after"]) >= 1


@pytest.mark.anyio
async def test_limit_headers_can_be_left_out(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    fake.rate_limit = 100.0
    fake.rate_limit_headers = "none"
    response = await generate(client, "x")
    assert response.status_code == 200
    assert not [name for name in response.headers if name.startswith("x-requests-limit")]
