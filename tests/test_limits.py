"""RateLimiter: its send log, in-flight limit and reactions, checked on its state, not on timings.

The async tests run on asyncio and trio. Whole evaluations against each of the fake's
rate-limit algorithms run in `tests/limiter_sim.py`'s simulation, on a clock of its own.
"""

from __future__ import annotations

import anyio
import pytest

from granite_tuner import ConfigurationError, RateLimiter
from granite_tuner._limit_learning import INITIAL_ALLOWANCE
from granite_tuner.testing._ratelimit import new_admission
from tests.limiter_sim import START, Service, Simulation, most_in_one_second

pytestmark = pytest.mark.anyio

MODES = ["token_bucket", "sliding_window", "fixed_window"]


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


async def test_told_a_rate_no_second_of_the_send_log_holds_more_than_it() -> None:
    limiter = RateLimiter(requests_per_second=20)

    async def caller() -> None:
        for _ in range(2):
            async with limiter.slot() as sent:
                await anyio.lowlevel.checkpoint()
            limiter.observe(status=200, sent=sent)

    async with anyio.create_task_group() as tg:
        for _ in range(15):
            tg.start_soon(caller)
    times = limiter.sent_times()
    assert len(times) == 30
    assert most_in_one_second(times) == 20  # a whole second's worth at once, never more


async def test_a_fractional_rate_allows_its_whole_requests_per_second() -> None:
    limiter = RateLimiter(requests_per_second=40.5, max_concurrency=50)
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(_one_slot, limiter)
    assert most_in_one_second(limiter.sent_times()) == 40


async def _one_slot(limiter: RateLimiter) -> None:
    async with limiter.slot() as sent:
        pass
    limiter.observe(status=200, sent=sent)


async def test_a_retry_after_pauses_every_caller_until_it_has_passed() -> None:
    limiter = RateLimiter(requests_per_second=1000)
    async with limiter.slot() as sent:
        pass
    refused_at = anyio.current_time()
    limiter.observe(status=429, retry_after=0.3, remaining=0, sent=sent)
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(_one_slot, limiter)
    later = limiter.sent_times()[1:]
    assert len(later) == 3
    assert min(later) >= refused_at + 0.3


async def test_a_429_without_retry_after_pauses_nobody() -> None:
    limiter = RateLimiter(requests_per_second=10)
    async with limiter.slot() as sent:
        pass
    limiter.observe(status=429, remaining=0, sent=sent)
    now = anyio.current_time()
    assert limiter._earliest(now) <= now  # the next request may leave at once
    assert limiter.stats.rate_limited == 1
    assert limiter.stats.tightened == 1  # ...but the pacing is a little tighter


async def test_not_told_only_two_leave_before_the_first_answer() -> None:
    limiter = RateLimiter()
    release = anyio.Event()
    entered = 0

    async def call() -> None:
        nonlocal entered
        async with limiter.slot() as sent:
            entered += 1
            await release.wait()
        limiter.observe(status=200, sent=sent)

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(call)
        while entered < INITIAL_ALLOWANCE:
            await anyio.lowlevel.checkpoint()
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert entered == INITIAL_ALLOWANCE
        release.set()  # answers without limit headers: nothing learned, no limit
    assert entered == 6
    assert limiter.current_rate is None


async def test_a_cancelled_wait_leaves_nothing_held() -> None:
    limiter = RateLimiter(requests_per_second=1, max_concurrency=1)
    async with limiter.slot() as sent:
        pass
    limiter.observe(status=200, sent=sent)
    with anyio.move_on_after(0.05):
        async with limiter.slot():
            pytest.fail("the second request of the second must wait")
    assert limiter.stats.in_flight == 0
    assert limiter.stats.granted == 1


def test_in_flight_follows_rate_times_latency_when_no_concurrency_is_given() -> None:
    limiter = RateLimiter(requests_per_second=8.0)
    assert limiter.inflight_limit == 256  # before any latency is known, the pacing paces
    limiter._observe_latency(1.5)
    assert limiter.inflight_limit == 16  # ceil(8 / 1.02 x 1.5 x 1.25) + 1
    limiter._observe_latency(0.1)
    assert limiter.inflight_limit is not None
    assert limiter.inflight_limit < 16
    assert RateLimiter(requests_per_second=8.0, max_concurrency=2).inflight_limit == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requests_per_second": 0}, "requests_per_second"),
        ({"requests_per_second": float("inf")}, "requests_per_second"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"burst": 0}, "burst"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


# --- whole evaluations, simulated -------------------------------------------------------------


def simulate(
    mode: str, *, told: bool, rate: float = 8.0, latency: float = 0.15, workers: int = 8
) -> tuple[Simulation, float]:
    service = Service(new_admission(mode, rate, None, START), rate=rate, latency=latency)  # type: ignore[arg-type]
    limiter = RateLimiter(requests_per_second=rate) if told else RateLimiter()
    simulation = Simulation(limiter, service, items=200, workers=workers)
    outcome = simulation.run()
    return simulation, outcome.share_of(rate)


@pytest.mark.parametrize("mode", MODES)
def test_told_the_rate_it_holds_every_algorithms_limit(mode: str) -> None:
    simulation, share = simulate(mode, told=True)
    outcome = simulation.outcome
    assert (outcome.lost, outcome.rate_limited) == (0, 0)
    assert most_in_one_second(outcome.sends) <= 8
    assert share >= 0.95


@pytest.mark.parametrize("mode", MODES)
def test_not_told_it_learns_every_algorithms_limit_and_holds_it(mode: str) -> None:
    simulation, share = simulate(mode, told=False)
    outcome = simulation.outcome
    assert outcome.lost == 0
    assert outcome.share_429 <= 0.03
    assert share >= 0.90
    assert simulation.limiter.current_rate == pytest.approx(8.0, rel=0.1)


@pytest.mark.parametrize("mode", MODES)
def test_a_slow_model_gets_the_whole_rate(mode: str) -> None:
    for told, least in ((True, 0.95), (False, 0.90)):
        simulation, share = simulate(mode, told=told, latency=1.5, workers=16)
        assert simulation.outcome.lost == 0
        assert share >= least


def test_without_limit_headers_429s_teach_the_limit() -> None:
    service = Service(new_admission("sliding_window", 8.0, None, START), rate=8.0)
    service.remaining_header = False
    limiter = RateLimiter()
    outcome = Simulation(limiter, service, items=200, workers=8).run()
    assert outcome.lost == 0
    assert outcome.share_of(8.0) >= 0.80
    assert outcome.share_429 <= 0.10
    assert limiter.current_rate is not None
    assert limiter.current_rate <= 8.0


def test_a_service_that_states_its_rate_is_held_to_it() -> None:
    service = Service(new_admission("sliding_window", 8.0, None, START), rate=8.0)
    service.rate_header = True
    limiter = RateLimiter()
    outcome = Simulation(limiter, service, items=200, workers=8).run()
    assert (outcome.lost, outcome.rate_limited) == (0, 0)
    assert limiter._learner.rate_header == 8.0


def test_random_429s_that_do_not_follow_the_rate_do_not_slow_it_down() -> None:
    # No limit at all; 15 % of calls answered a bare 429 whatever the pace.
    service = Service(None, latency=0.003, random_429=0.15)
    limiter = RateLimiter()
    outcome = Simulation(limiter, service, items=400, workers=8).run()
    assert outcome.lost == 0
    assert limiter.stats.undone >= 1  # a tightening was tried, and undone
    assert limiter._learner.noise > 0.05  # ...and the background share remembered
    # Requests hardly ever waited for the pacing (the retries' backoff is the retry policy's).
    assert outcome.waited / outcome.requests < 0.01
