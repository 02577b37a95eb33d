"""RateLimiter: pacing, in-flight limits and adaptation, checked on its state, not on timings."""

from __future__ import annotations

import anyio
import pytest

from granite_tuner import ConfigurationError, RateLimiter

pytestmark = pytest.mark.anyio


async def test_max_concurrency_bounds_the_requests_in_flight() -> None:
    limiter = RateLimiter(max_concurrency=3)
    release = anyio.Event()
    entered = 0

    async def call() -> None:
        nonlocal entered
        async with limiter.slot():
            entered += 1
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(call)
        while entered < 3:
            await anyio.lowlevel.checkpoint()
        for _ in range(20):  # give the other seven every chance to get in
            await anyio.lowlevel.checkpoint()
        assert entered == 3
        assert limiter.stats.in_flight == 3
        release.set()
    assert entered == 10
    assert limiter.stats.max_in_flight == 3
    assert limiter.stats.in_flight == 0


async def test_tokens_are_spaced_at_the_rate() -> None:
    limiter = RateLimiter(requests_per_second=1000.0)
    first = anyio.current_time()
    for _ in range(5):
        async with limiter.slot():
            pass
    # Each token moves the next one at least 1/rate later: 5 tokens, 5 ms after the first.
    assert limiter.stats.granted == 5
    assert limiter._next_free >= first + 5 / 1000.0 - 1e-9


def test_in_flight_follows_rate_times_latency_when_no_concurrency_is_given() -> None:
    limiter = RateLimiter(requests_per_second=8.0)
    assert limiter.inflight_limit == 256  # before any latency is known, the bucket paces
    limiter._observe_latency(1.5)
    assert limiter.inflight_limit == 16  # ceil(8 x 1.5 x 1.25) + 1
    limiter._observe_latency(0.1)
    assert limiter.inflight_limit is not None
    assert limiter.inflight_limit < 16
    assert RateLimiter(requests_per_second=8.0, max_concurrency=2).inflight_limit == 2
    assert RateLimiter().inflight_limit is None


async def test_a_429_pauses_everyone_and_slows_down_once_per_overload() -> None:
    limiter = RateLimiter(requests_per_second=10.0)
    now = anyio.current_time()
    limiter.observe(status=429, retry_after=2.0)
    assert limiter._paused_until >= now + 2.0
    assert limiter.current_rate == pytest.approx(9.0)
    for _ in range(5):  # the rest of the same burst of 429s
        limiter.observe(status=429, retry_after=2.0)
    assert limiter.current_rate == pytest.approx(9.0)
    assert limiter.stats.rate_limited == 6
    for _ in range(50):
        limiter.observe(status=200)
    assert limiter.current_rate == pytest.approx(10.0)  # recovered, never above the limit


async def test_without_a_rate_a_429_teaches_one_even_after_an_empty_bucket_hint() -> None:
    limiter = RateLimiter()
    for _ in range(20):
        async with limiter.slot():
            pass
    limiter.observe(status=200, remaining=0)  # a hint: pauses briefly, must not block learning
    assert limiter.current_rate is None
    limiter.observe(status=429, retry_after=1.0)
    learned = limiter.current_rate
    assert learned is not None
    # 20 requests within the minimum span of 0.25 s -> 80/s sent, halved.
    assert learned == pytest.approx(40.0)
    limiter.observe(status=200)
    assert limiter.current_rate is not None
    assert limiter.current_rate > learned


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requests_per_second": 0}, "requests_per_second"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"burst": 0}, "burst"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RateLimiter(**kwargs)  # type: ignore[arg-type]
