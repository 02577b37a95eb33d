"""The Evaluator on watsonx.ai (the fake): tuned deployment vs base model, faults, limits."""

from __future__ import annotations

import re
from collections.abc import Iterator

import anyio
import pytest

from granite_tuner import (
    Deployment,
    Evaluator,
    Example,
    LabelledSet,
    RateLimiter,
    RetryPolicy,
    WatsonxClient,
    mcnemar_exact,
)
from granite_tuner.testing import FakeWatsonx, Fault, GenerationCall, ServerHandle
from tests.fakes import completed_model_id, watsonx_client
from tests.limiter_sim import most_in_one_second

pytestmark = pytest.mark.anyio

BASE_MODEL = "ibm/granite-13b-instruct-v2"
TEST_SET = LabelledSet(
    examples=tuple(
        Example(
            input=f"Comment: review {n} [label={n % 3 == 0:d}]\nSatisfaction:\n",
            output=str(int(n % 3 == 0)),
        )
        for n in range(30)
    ),
    source="<test>",
)
LABEL = re.compile(r"\[label=(\d)\]")


def answer(call: GenerationCall) -> str:
    """The tuned deployment knows the label; the base model always says "1"."""
    if call.deployment_id is not None:
        found = LABEL.search(call.input)
        return found.group(1) if found else "?"
    return "1."


@pytest.fixture
def fake() -> FakeWatsonx:
    return FakeWatsonx(training_polls=1, deployment_polls=1, answer=answer)


@pytest.fixture
def server(fake: FakeWatsonx) -> Iterator[ServerHandle]:
    with fake.serve(tls=True) as handle:
        yield handle


def make_client(
    fake: FakeWatsonx,
    server: ServerHandle,
    limiter: RateLimiter | None = None,
    retry: RetryPolicy | None = None,
) -> WatsonxClient:
    retry = retry or RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=10)
    return watsonx_client(fake, server, retry=retry, limiter=limiter)


async def deploy_tuned(client: WatsonxClient) -> Deployment:
    model_id = await completed_model_id(client, BASE_MODEL)
    return await Deployment.create(client, model_id, poll_interval=(0.01, 0.05))


async def test_tuned_vs_base_report(fake: FakeWatsonx, server: ServerHandle) -> None:
    async with make_client(fake, server) as client:
        tuned = await deploy_tuned(client)
        report = await Evaluator(
            client, max_concurrency=4, parameters={"max_new_tokens": 2}
        ).compare(TEST_SET, tuned=tuned, base=BASE_MODEL)
    tuned_report, base_report = report.reports["tuned"], report.reports["base"]
    assert tuned_report.metrics.accuracy == 1.0
    positives = sum(e.output == "1" for e in TEST_SET)
    assert base_report.metrics.accuracy == pytest.approx(positives / len(TEST_SET))
    assert len(tuned_report.items) == len(base_report.items) == len(TEST_SET)
    (pair,) = report.comparisons
    negatives = len(TEST_SET) - positives
    assert {pair.b, pair.c} == {negatives, 0}
    assert pair.p_value == pytest.approx(mcnemar_exact(negatives, 0))
    assert pair.p_value < 0.001
    requests = [r for r in fake.requests if r.path.endswith("/text/generation")]
    assert len(requests) == 2 * len(TEST_SET)
    assert all(r.json()["parameters"] == {"max_new_tokens": 2} for r in requests)
    markdown = report.to_markdown()
    assert "tuned" in markdown
    assert "base" in markdown


async def test_every_item_comes_back_despite_429s_503s_and_dropped_connections(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    fake.rate_limit = 40.0
    fake.rate_limit_burst = 4
    generation = r"/text/generation$"
    fake.faults.add(
        Fault(action="status", status=503, path=generation, probability=0.15, times=None)
    )
    fake.faults.add(Fault(action="drop_before", path=generation, probability=0.1, times=None))
    fake.faults.add(Fault(action="drop_after", path=generation, probability=0.05, times=None))
    async with make_client(fake, server) as client:
        report = await Evaluator(client, max_concurrency=8).evaluate(
            TEST_SET, BASE_MODEL, name="base"
        )
    assert len(report.items) == len(TEST_SET)
    assert report.metrics.counts.failed == 0
    assert report.metrics.counts.completed == len(TEST_SET)
    assert sorted(item.index for item in report.items) == list(range(len(TEST_SET)))
    statuses = [r.status for r in fake.requests if re.search(generation, r.path)]
    assert statuses.count(200) >= len(TEST_SET)
    assert any(s != 200 for s in statuses)
    assert max(item.attempts for item in report.items) > 1


async def test_an_item_that_keeps_failing_is_recorded_not_dropped(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    poisoned = TEST_SET.examples[3].input

    def broken_for_one(call: GenerationCall) -> str:
        if call.input == poisoned:
            raise RuntimeError("the model crashed")  # the fake answers 500
        return "1"

    fake.answer = broken_for_one
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.0, max_backoff=0.0)
    async with make_client(fake, server, retry=retry) as client:
        report = await Evaluator(client, max_concurrency=4).evaluate(TEST_SET, BASE_MODEL)
    assert len(report.items) == len(TEST_SET)
    (failed,) = [item for item in report.items if item.error is not None]
    assert failed.index == 3
    assert failed.error_type == "ServerError"
    assert failed.attempts == 2
    assert report.metrics.counts.failed == 1


async def test_two_evaluations_sharing_a_client_share_its_one_limiter(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    # Told 10 a second against a sliding window of 10: each evaluation alone may go that fast,
    # so only one limiter for both keeps their sum under the limit.
    fake.rate_limit = 10.0
    fake.rate_limit_mode = "sliding_window"
    limiter = RateLimiter(requests_per_second=10)
    half = LabelledSet(examples=TEST_SET.examples[:12], source="<test>")
    async with make_client(fake, server, limiter=limiter) as client:
        assert client.rate_limiter is limiter
        async with anyio.create_task_group() as tg:
            for name in ("first", "second"):
                tg.start_soon(_evaluate, client, half, name)
    generations = [r for r in fake.requests if r.path.endswith("/text/generation")]
    assert limiter.stats.granted == len(generations) >= 24  # every request took its slot
    assert most_in_one_second(limiter.sent_times()) <= 10


async def _evaluate(client: WatsonxClient, examples: LabelledSet, name: str) -> None:
    report = await Evaluator(client, max_concurrency=8).evaluate(examples, BASE_MODEL, name=name)
    assert report.metrics.counts.completed == len(examples)
