"""One piece of user code, run unchanged on watsonx.ai (the fake) and on the local backend.

`tune_deploy_compare` is what an application writes: tune, draw the curve, deploy, compare
tuned and base, clean up. Only the client it is handed differs between the two cases, which is
the promise of the backend seam: changing the client is the only change in user code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from granite_tuner import (
    ComparisonReport,
    Deployment,
    DeploymentNotFoundError,
    EpochCompleted,
    Evaluator,
    LabelledSet,
    PromptTuningParameters,
    RetryPolicy,
    RunFinished,
    Tuner,
    TuningEvent,
    TuningResult,
)
from granite_tuner.backends.base import ServingBackend, TuningBackend
from granite_tuner.backends.local import LocalClient
from granite_tuner.testing import FakeWatsonx
from tests.fakes import watsonx_client
from tests.tiny_model import review_examples

pytestmark = pytest.mark.anyio

TRAIN = LabelledSet(examples=tuple(review_examples(60, seed=1)))
TEST = LabelledSet(examples=tuple(review_examples(16, seed=2)))
PARAMETERS = PromptTuningParameters(
    task_id="classification", num_epochs=2, batch_size=8, learning_rate=0.1, init_method="random"
)


class Client(TuningBackend, ServingBackend, Protocol):
    """Both seams at once, as `WatsonxClient` and `LocalClient` provide them."""


@dataclass
class Outcome:
    result: TuningResult
    report: ComparisonReport
    curve: Path
    events: list[TuningEvent]
    deployment_id: str


async def tune_deploy_compare(client: Client, base_model: str, out: Path) -> Outcome:
    """The user code: nothing in it knows which backend `client` talks to."""
    events: list[TuningEvent] = []
    result = await Tuner(
        client,
        base_model=base_model,
        training_data=TRAIN,
        parameters=PARAMETERS,
        name="same-code",
        poll_interval=(0.01, 0.05),
        on_event=events.append,
    ).run()
    curve = result.plot_learning_curve(out / "curve.png")
    async with await Deployment.create(
        client, result, poll_interval=(0.01, 0.05), delete_on_exit=True
    ) as tuned:
        report = await Evaluator(
            client, max_concurrency=4, parameters={"decoding_method": "greedy", "max_new_tokens": 2}
        ).compare(TEST, tuned=tuned, base=base_model, baseline="base")
    return Outcome(result, report, curve, events, tuned.id)


@asynccontextmanager
async def on_fake_watsonx(tmp_path: Path) -> AsyncIterator[tuple[Client, str]]:
    fake = FakeWatsonx(training_polls=1, deployment_polls=1)
    with fake.serve(tls=True) as server:
        retry = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)
        async with watsonx_client(fake, server, retry=retry) as client:
            yield client, "ibm/granite-13b-instruct-v2"


@asynccontextmanager
async def on_local_backend(tmp_path: Path, model: Path) -> AsyncIterator[tuple[Client, str]]:
    async with LocalClient(str(model), home=tmp_path / "home") as client:
        yield client, str(model)


@pytest.fixture(params=["watsonx-fake", "local"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path
) -> Callable[[], AbstractAsyncContextManager[tuple[Client, str]]]:
    if request.param == "local":
        return lambda: on_local_backend(tmp_path, tiny_model_dir)
    return lambda: on_fake_watsonx(tmp_path)


async def test_the_same_workflow_runs_on_either_backend(
    backend: Callable[[], AbstractAsyncContextManager[tuple[Client, str]]], tmp_path: Path
) -> None:
    async with backend() as (client, base_model):
        outcome = await tune_deploy_compare(client, base_model, tmp_path)

        # The deployment was deleted on leaving its `async with`.
        with pytest.raises(DeploymentNotFoundError):
            await client.get_deployment(outcome.deployment_id)

    result = outcome.result
    assert result.succeeded
    assert result.backend == client.backend_name
    assert len(result.loss_per_epoch) == PARAMETERS.num_epochs
    assert outcome.curve.stat().st_size > 0
    assert isinstance(outcome.events[-1], RunFinished)
    epochs = [event.epoch for event in outcome.events if isinstance(event, EpochCompleted)]
    assert epochs == list(range(PARAMETERS.num_epochs))

    assert set(outcome.report.reports) == {"tuned", "base"}
    for report in outcome.report.reports.values():
        # Every test item was answered by the target, none lost, none failed.
        assert [item.index for item in report.items] == list(range(len(TEST.examples)))
        assert report.metrics.counts.completed == len(TEST.examples)
        assert all(item.output is not None and not item.failed for item in report.items)
    (comparison,) = outcome.report.comparisons
    assert (comparison.baseline, comparison.target) == ("base", "tuned")
    assert 0.0 <= comparison.p_value <= 1.0
