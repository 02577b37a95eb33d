"""Deployment and generation on the fake watsonx.ai: ready, failure, timeout, delete, limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from functools import partial

import anyio
import pytest

from granite_tuner import (
    ConfigurationError,
    Deployment,
    DeploymentFailedError,
    DeploymentTimeoutError,
    GenerationParameters,
    InvalidParametersError,
    RateLimiter,
    RetryPolicy,
    TuningResult,
    WatsonxClient,
)
from granite_tuner.backends.base import SERVING_NAME_PATTERN
from granite_tuner.deployment import make_serving_name
from granite_tuner.testing import FakeWatsonx, ServerHandle
from granite_tuner.testing._ratelimit import RateLimitMode
from tests.fakes import completed_model_id, watsonx_client
from tests.limiter_sim import most_in_one_second

pytestmark = pytest.mark.anyio

BASE_MODEL = "ibm/granite-13b-instruct-v2"
FAST_POLL = (0.01, 0.05)


@pytest.fixture
def fake() -> FakeWatsonx:
    return FakeWatsonx(training_polls=1, deployment_polls=2)


@pytest.fixture
def server(fake: FakeWatsonx) -> Iterator[ServerHandle]:
    with fake.serve(tls=True) as handle:
        yield handle


def make_client(
    fake: FakeWatsonx, server: ServerHandle, limiter: RateLimiter | None = None
) -> WatsonxClient:
    retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=8)
    return watsonx_client(fake, server, retry=retry, limiter=limiter)


@pytest.fixture
async def client(fake: FakeWatsonx, server: ServerHandle) -> AsyncIterator[WatsonxClient]:
    async with make_client(fake, server) as client:
        yield client


async def tuned_model(client: WatsonxClient) -> str:
    return await completed_model_id(client, BASE_MODEL)


async def test_create_waits_until_ready_then_generates_and_deletes(
    fake: FakeWatsonx, client: WatsonxClient
) -> None:
    model_id = await tuned_model(client)
    deployment = await Deployment.create(client, model_id, poll_interval=FAST_POLL)
    assert deployment.state == "ready"
    assert deployment.model_id == model_id
    assert deployment.serving_name is not None
    assert SERVING_NAME_PATTERN.fullmatch(deployment.serving_name)
    result = await deployment.generate(
        "Comment: great\nSatisfaction:\n", GenerationParameters(max_new_tokens=2)
    )
    assert result.text in {"0", "1"}
    assert result.generated_token_count is not None
    await deployment.delete()
    assert not fake.deployments


async def test_a_tuning_result_deploys_and_async_with_deletes_when_asked(
    fake: FakeWatsonx, client: WatsonxClient
) -> None:
    model_id = await tuned_model(client)
    result = TuningResult(
        run_id="r-1", name="reviews", backend="watsonx", state="completed", model_id=model_id
    )
    async with await Deployment.create(
        client, result, delete_on_exit=True, poll_interval=FAST_POLL
    ) as tuned:
        assert tuned.id in fake.deployments
        assert fake.deployments[tuned.id].serving_name == tuned.serving_name
    assert not fake.deployments

    async with await Deployment.create(client, result, poll_interval=FAST_POLL) as kept:
        pass
    assert kept.id in fake.deployments


async def test_reattach_by_id(fake: FakeWatsonx, client: WatsonxClient) -> None:
    model_id = await tuned_model(client)
    created = await Deployment.create(client, model_id, wait=False)
    attached = await Deployment.attach(client, created.id, timeout=10)
    assert attached.state == "ready"
    assert fake.count("POST", "^/ml/v4/deployments$") == 1


async def test_a_failed_deployment_raises_with_the_service_message_and_is_removed(
    fake: FakeWatsonx, client: WatsonxClient
) -> None:
    fake.deployment_outcome = "failed"
    model_id = await tuned_model(client)
    with pytest.raises(DeploymentFailedError) as info:
        await Deployment.create(client, model_id, poll_interval=FAST_POLL)
    assert info.value.deployment_id is not None
    assert "failed" in str(info.value)
    assert not fake.deployments


async def test_the_timeout_is_a_typed_error_and_the_deployment_is_kept(
    fake: FakeWatsonx, client: WatsonxClient
) -> None:
    fake.deployment_polls = 10**9
    model_id = await tuned_model(client)
    with pytest.raises(DeploymentTimeoutError) as info:
        await Deployment.create(client, model_id, timeout=0.2, poll_interval=FAST_POLL)
    assert isinstance(info.value, TimeoutError)
    assert info.value.deployment_id in fake.deployments
    assert info.value.deployment_id is not None
    assert info.value.deployment_id in str(info.value)


async def test_serving_names_are_checked_before_anything_is_created(
    fake: FakeWatsonx, client: WatsonxClient
) -> None:
    model_id = await tuned_model(client)
    with pytest.raises(ConfigurationError, match="lower-case"):
        await Deployment.create(client, model_id, serving_name="Bad Name!")
    taken = await Deployment.create(
        client, model_id, serving_name="reviews_pt", poll_interval=FAST_POLL
    )
    with pytest.raises(ConfigurationError, match="already used"):
        await Deployment.create(client, model_id, serving_name="reviews_pt")
    assert list(fake.deployments) == [taken.id]


def test_generated_serving_names_are_valid_and_distinct() -> None:
    names = {make_serving_name("Grooming Reviews (tuned) — v2!") for _ in range(100)}
    assert len(names) == 100
    assert all(SERVING_NAME_PATTERN.fullmatch(n) for n in names)
    assert all(SERVING_NAME_PATTERN.fullmatch(make_serving_name(h)) for h in ["", "___", "x" * 80])


async def test_bad_generation_parameters_are_refused_before_sending(
    fake: FakeWatsonx, client: WatsonxClient
) -> None:
    with pytest.raises(InvalidParametersError, match="max_new_token"):
        await client.generate("x", model_id=BASE_MODEL, parameters={"max_new_token": 3})
    with pytest.raises(InvalidParametersError, match="temperature"):
        await client.generate("x", model_id=BASE_MODEL, parameters={"temperature": 9.0})
    assert fake.count("POST", "generation") == 0


async def test_generation_parameters_reach_the_service(
    fake: FakeWatsonx, client: WatsonxClient
) -> None:
    params = GenerationParameters(
        decoding_method="greedy", max_new_tokens=3, stop_sequences=("\n",), random_seed=7
    )
    result = await client.generate("Comment: nice\n", model_id=BASE_MODEL, parameters=params)
    assert result.model_id == BASE_MODEL
    (request,) = [r for r in fake.requests if r.path == "/ml/v1/text/generation"]
    assert request.json()["parameters"] == {
        "decoding_method": "greedy",
        "max_new_tokens": 3,
        "stop_sequences": ["\n"],
        "random_seed": 7,
    }


@pytest.mark.parametrize("mode", ["token_bucket", "sliding_window", "fixed_window"])
async def test_a_client_rate_limit_keeps_generation_under_the_service_limit(
    fake: FakeWatsonx, server: ServerHandle, mode: RateLimitMode
) -> None:
    fake.rate_limit = 20.0
    fake.rate_limit_mode = mode
    limiter = RateLimiter(requests_per_second=20.0, max_concurrency=8)
    async with make_client(fake, server, limiter) as client, anyio.create_task_group() as tg:
        for n in range(30):
            tg.start_soon(partial(client.generate, f"prompt {n}", model_id=BASE_MODEL))
    statuses = [r.status for r in fake.requests if r.path == "/ml/v1/text/generation"]
    assert statuses.count(200) == 30
    # No "429 not in statuses": the service counts arrivals, which a loaded machine can bunch
    # closer than the margin; what the limiter guarantees is its own send log, checked below.
    assert limiter.stats.rate_limited == statuses.count(429)
    assert limiter.stats.max_in_flight <= 8
    assert most_in_one_second(limiter.sent_times()) <= 20


async def test_without_a_configured_rate_429s_are_absorbed_and_nothing_is_lost(
    fake: FakeWatsonx, client: WatsonxClient
) -> None:
    fake.rate_limit = 50.0
    fake.rate_limit_burst = 2
    answers: list[str] = []

    async def ask(n: int) -> None:
        answers.append((await client.generate(f"prompt {n}", model_id=BASE_MODEL)).text)

    async with anyio.create_task_group() as tg:
        for n in range(30):
            tg.start_soon(ask, n)
    assert len(answers) == 30
    statuses = [r.status for r in fake.requests if r.path == "/ml/v1/text/generation"]
    assert statuses.count(200) == 30
    assert client.rate_limiter.stats.rate_limited == statuses.count(429)
