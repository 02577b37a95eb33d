"""One set of protocol checks, run against both backends.

`Tuner`, `Deployment`, `Evaluator` and the CLI use nothing but `TuningBackend` and
`ServingBackend`; these checks hold both clients to what those protocols promise, through the
protocols alone: `WatsonxClient` on the fake watsonx.ai (real HTTPS on loopback) and
`LocalClient` on the tiny model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio
import pytest

from granite_tuner import (
    DeploymentNotFoundError,
    LabelledSet,
    PromptTuningParameters,
    RetryPolicy,
    RunFinishedError,
    RunNotFoundError,
    Tuner,
    TuningRun,
    UnsupportedFeatureError,
)
from granite_tuner.backends.base import Backend, ServingBackend, TuningBackend, new_request_tag
from granite_tuner.backends.local import LocalClient
from granite_tuner.testing import FakeWatsonx
from granite_tuner.validation import ValidationOptions
from tests.fakes import watsonx_client
from tests.tiny_model import review_examples

pytestmark = pytest.mark.anyio

DATA = LabelledSet(examples=tuple(review_examples(60, seed=3)))
PARAMETERS = PromptTuningParameters(
    task_id="classification", num_epochs=1, batch_size=8, learning_rate=0.1, init_method="random"
)
OpenBackend = Callable[[], AbstractAsyncContextManager[Backend]]


@asynccontextmanager
async def on_fake_watsonx() -> AsyncIterator[Backend]:
    fake = FakeWatsonx(training_polls=1, deployment_polls=1)
    with fake.serve(tls=True) as server:
        retry = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02)
        async with watsonx_client(fake, server, retry=retry) as client:
            yield client


@asynccontextmanager
async def on_local_backend(home: Path, model: Path) -> AsyncIterator[Backend]:
    async with LocalClient(str(model), home=home, precision="float32") as client:
        yield client


@pytest.fixture(params=["watsonx-fake", "local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, tiny_model_dir: Path) -> OpenBackend:
    if request.param == "local":
        return lambda: on_local_backend(tmp_path / "home", tiny_model_dir)
    return on_fake_watsonx


async def _started(client: Backend, name: str) -> tuple[str, str, TuningRun]:
    """(data ref, request tag, run) of a run started through the protocol."""
    data_ref = await client.upload_training_data(DATA, name=name)
    tag = new_request_tag()
    run = await client.start_tuning(
        name=name,
        base_model=client.default_base_model,
        data_ref=data_ref,
        parameters=PARAMETERS,
        request_tag=tag,
    )
    return data_ref, tag, run


async def _finished(client: Backend, run_id: str) -> TuningRun:
    with anyio.fail_after(120):
        while True:
            run = await client.get_tuning_run(run_id)
            if run.is_finished:
                return run
            await anyio.sleep(0.02)


async def test_both_seams_are_implemented_and_the_default_model_can_be_tuned(
    backend: OpenBackend,
) -> None:
    async with backend() as client:
        assert isinstance(client, TuningBackend)
        assert isinstance(client, ServingBackend)
        assert client.backend_name in ("watsonx", "local")
        assert isinstance(client.default_base_model, str)
        assert client.default_base_model
        tunable = [m.model_id for m in await client.tunable_models()]
        assert client.default_base_model in tunable
        assert isinstance(client.supports_validation, bool)
        assert isinstance(client.supports_checkpoints, bool)


async def test_a_run_is_found_by_id_listing_tag_and_name_then_canceled_and_deleted(
    backend: OpenBackend,
) -> None:
    async with backend() as client:
        data_ref, tag, run = await _started(client, "protocol-run")
        assert run.name == "protocol-run"
        assert run.state in ("queued", "pending", "running")

        read = await client.get_tuning_run(run.id)
        assert (read.id, read.name, read.base_model) == (
            run.id,
            "protocol-run",
            client.default_base_model,
        )
        listed = {r.id: r for r in await client.list_tuning_runs()}
        assert run.id in listed
        assert listed[run.id].data_refs == (data_ref,)
        by_tag = await client.find_tuning_run_by_tag(tag)
        assert by_tag is not None
        assert by_tag.id == run.id
        assert await client.find_tuning_run_by_tag(new_request_tag()) is None
        assert [r.id for r in await client.find_tuning_runs("protocol-run")] == [run.id]

        await client.cancel_tuning_run(run.id)
        assert (await _finished(client, run.id)).state in ("canceled", "completed")
        await client.delete_tuning_run(run.id)
        with pytest.raises(RunNotFoundError):
            await client.get_tuning_run(run.id)
        assert run.id not in {r.id for r in await client.list_tuning_runs()}
        await client.delete_training_data(data_ref)


async def test_a_completed_run_is_deployed_listed_read_and_deleted(backend: OpenBackend) -> None:
    async with backend() as client:
        _, _, run = await _started(client, "protocol-deploy")
        done = await _finished(client, run.id)
        assert done.state == "completed"
        assert done.model_id is not None
        if client.supports_checkpoints:
            kept = await client.list_checkpoints(run.id)
            assert kept
            assert kept[-1].model_id.startswith(run.id)
            with pytest.raises(RunFinishedError):
                await client.resume_tuning(run.id)
        else:
            with pytest.raises(UnsupportedFeatureError, match="keeps no checkpoints"):
                await client.list_checkpoints(run.id)
            with pytest.raises(UnsupportedFeatureError, match="keeps no checkpoints"):
                await client.resume_tuning(run.id)

        tag = new_request_tag()
        info = await client.deploy(
            done.model_id, name="protocol-deployment", serving_name=None, request_tag=tag
        )
        assert info.state in ("initializing", "ready")
        assert info.id in {d.id for d in await client.list_deployments()}
        found = await client.find_deployment_by_tag(tag)
        assert found is not None
        assert found.id == info.id
        with anyio.fail_after(60):
            while not (current := await client.get_deployment(info.id)).is_ready:
                assert not current.has_failed, current.failure_message
                await anyio.sleep(0.02)
        assert current.name == "protocol-deployment"

        await client.delete_deployment(info.id)
        with pytest.raises(DeploymentNotFoundError):
            await client.get_deployment(info.id)
        assert info.id not in {d.id for d in await client.list_deployments()}


async def test_unknown_ids_raise_the_protocols_not_found_errors(backend: OpenBackend) -> None:
    async with backend() as client:
        with pytest.raises(RunNotFoundError):
            await client.get_tuning_run("no-such-run")
        with pytest.raises(DeploymentNotFoundError):
            await client.get_deployment("no-such-deployment")


async def test_validation_is_refused_exactly_where_the_backend_says_it_cannot_validate(
    backend: OpenBackend,
) -> None:
    async with backend() as client:
        data_ref = await client.upload_training_data(DATA, name="protocol-validation")
        start = client.start_tuning(
            name="protocol-validation",
            base_model=client.default_base_model,
            data_ref=data_ref,
            parameters=PARAMETERS,
            validation=ValidationOptions(split=0.2),
        )
        if client.supports_validation:
            run = await start
            await client.cancel_tuning_run(run.id)
        else:
            with pytest.raises(UnsupportedFeatureError, match="validation_split"):
                await start
            assert await client.list_tuning_runs() == []


async def test_the_tuner_refuses_validation_before_uploading_to_a_backend_that_cannot() -> None:
    fake = FakeWatsonx(training_polls=1, deployment_polls=1)
    with fake.serve(tls=True) as server:
        retry = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02)
        async with watsonx_client(fake, server, retry=retry) as client:
            assert not client.supports_validation
            tuner = Tuner(
                client,
                base_model=client.default_base_model,
                training_data=DATA,
                parameters=PARAMETERS,
                validation_split=0.2,
            )
            with pytest.raises(UnsupportedFeatureError, match="validation_split"):
                await tuner.run()
    assert not fake.assets
    assert not fake.trainings
