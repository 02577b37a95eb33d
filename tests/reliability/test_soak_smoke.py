"""The soak benchmark's core, small: a few hundred generations under the same fault mix.

`benchmarks/soak.py` runs 10,000; this runs enough for every fault kind to hit, so CI walks
the soak's code path and holds its promises: nothing lost, nothing twice, every failure typed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from benchmarks.soak import SoakSettings, fault_rules, run_soak

from granite_tuner import RetryPolicy
from granite_tuner.testing import FakeWatsonx, ServerHandle

pytestmark = pytest.mark.anyio

REQUESTS = 250


@pytest.fixture
def fake() -> FakeWatsonx:
    return FakeWatsonx(seed=11)


@pytest.fixture
def server(fake: FakeWatsonx) -> Iterator[ServerHandle]:
    with fake.serve(tls=True) as handle:
        yield handle


def test_the_rules_give_the_stated_rates() -> None:
    """The fake takes the first rule whose draw hits, so each rule's probability is its share
    of what the rules before it let through; multiplied out, the shares come back."""
    let_through = 1.0
    effective = []
    for rule in fault_rules(SoakSettings().mix):
        effective.append(let_through * rule.probability)
        let_through *= 1 - rule.probability
    assert effective == pytest.approx([0.10, 0.02, 0.005, 0.005, 0.01])


async def test_a_small_soak_loses_nothing_and_types_every_failure(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    # Two attempts per item, so that some items do fail and their recording is exercised.
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.05)
    settings = SoakSettings(requests=REQUESTS, retry=retry)
    result = await run_soak(fake, server, settings)

    assert result.lost == []
    assert result.duplicates == []
    assert result.objects_created == 0
    assert result.untyped.total() == 0
    assert result.completed + result.failed.total() == REQUESTS
    assert set(result.failed) <= {
        "RateLimitError",
        "ServerError",
        "APIConnectionError",
        "APITimeoutError",
    }
    # Every attempt an item counted is one the fake saw, and retries did happen.
    assert result.attempts == result.generation_requests_seen
    assert result.retries > 0
    assert result.injected["429"] > 0
