"""Create-once across the caller's own retries, names, ids and arguments checked first.

Each test reproduces one way an earlier version could start a second paid training, hit the
wrong resource or leave something behind, on the fake watsonx.ai over real HTTPS sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from granite_tuner import (
    APITimeoutError,
    ConfigurationError,
    Deployment,
    DeploymentTimeoutError,
    RetryPolicy,
    RunNotFoundError,
    Tuner,
    WatsonxClient,
)
from granite_tuner.testing import FakeWatsonx, Fault, ServerHandle
from tests.fakes import TRAINING_JSONL, completed_model_id, watsonx_client

pytestmark = pytest.mark.anyio

BASE_MODEL = "ibm/granite-13b-instruct-v2"
QUICK = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.05, jitter=0)
FAST_POLLS = (0.01, 0.05)
#: The client gives up on an answer after SHORT_TIMEOUT; the fake answers the create later.
SHORT_TIMEOUT = 0.3
LATE_ANSWER = 0.8


@pytest.fixture
def training_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_bytes(TRAINING_JSONL)
    return path


def impatient_client(fake: FakeWatsonx, server: ServerHandle) -> WatsonxClient:
    """A client whose read timeout is shorter than the fake's answer to a delayed create."""
    return WatsonxClient(
        url=server.url,
        api_key="create-once-test-key-123",
        iam_url=server.url + "/identity/token",
        project_id=fake.project_id,
        verify=str(server.ca_cert_path),
        retry=QUICK,
        timeout=SHORT_TIMEOUT,
    )


async def until(condition: Callable[[], bool]) -> None:
    """Wait for state that lives in the server's thread (the late create landing)."""
    with anyio.fail_after(10):
        while True:  # polled: the state lives in the server's thread, not in an Event
            if condition():
                return
            await anyio.sleep(0.01)


def tuner(client: WatsonxClient, data: Path, **options: Any) -> Tuner:
    options.setdefault("poll_interval", FAST_POLLS)
    return Tuner(
        client, base_model=BASE_MODEL, training_data=data, task="classification", **options
    )


# --- 1. a caller's retry never starts a second training or deployment ------------------------


async def test_running_a_tuner_again_after_a_lost_create_answer_finds_the_first_training(
    fake: FakeWatsonx, server: ServerHandle, training_file: Path
) -> None:
    fake.faults.add(Fault("delay", method="POST", path="^/ml/v4/trainings$", delay=LATE_ANSWER))
    async with impatient_client(fake, server) as client:
        run = tuner(client, training_file)
        with pytest.raises(APITimeoutError) as caught:
            await run.run()
        assert caught.value.request_tag == run.request_tag
        assert f"Tuner.attach(client, tag={run.request_tag!r})" in str(caught.value)
        await until(lambda: len(fake.trainings) == 1)

        result = await run.run()

    assert list(fake.trainings) == [result.run_id]
    assert len(fake.assets) == 1  # the data was not uploaded twice either


async def test_a_lost_create_is_found_by_its_tag_from_a_fresh_tuner(
    fake: FakeWatsonx, server: ServerHandle, training_file: Path
) -> None:
    fake.faults.add(Fault("delay", method="POST", path="^/ml/v4/trainings$", delay=LATE_ANSWER))
    async with impatient_client(fake, server) as client:
        with pytest.raises(APITimeoutError) as caught:
            await tuner(client, training_file).run()
        tag = caught.value.request_tag
        assert tag is not None
        await until(lambda: len(fake.trainings) == 1)

        result = await Tuner.attach(client, tag=tag, poll_interval=FAST_POLLS).run()

    assert list(fake.trainings) == [result.run_id]


async def test_attaching_by_a_tag_no_create_carried_says_there_is_no_such_run(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    async with watsonx_client(fake, server, retry=QUICK) as client:
        with pytest.raises(RunNotFoundError, match="request tag"):
            await Tuner.attach(client, tag="granite-tuner.request." + "0" * 32).run()
        with pytest.raises(ConfigurationError, match="request tag"):
            Tuner.attach(client, tag="../trainings")


async def test_a_create_cancelled_in_flight_is_found_by_the_next_run(
    fake: FakeWatsonx, server: ServerHandle, training_file: Path
) -> None:
    fake.faults.add(Fault("delay", method="POST", path="^/ml/v4/trainings$", delay=0.3))
    async with watsonx_client(fake, server, retry=QUICK) as client:
        run = tuner(client, training_file, cancel_on_exit=False)
        with anyio.move_on_after(0.1) as scope:
            await run.run()
        assert scope.cancelled_caught
        assert run.run_id is None
        await until(lambda: len(fake.trainings) == 1)

        result = await run.run()

    assert list(fake.trainings) == [result.run_id]


async def test_creating_a_deployment_again_after_a_lost_answer_finds_the_first_one(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    async with watsonx_client(fake, server, retry=QUICK) as setup:
        model_id = await completed_model_id(setup, BASE_MODEL)
    fake.faults.add(Fault("delay", method="POST", path="^/ml/v4/deployments$", delay=LATE_ANSWER))
    async with impatient_client(fake, server) as client:
        with pytest.raises(APITimeoutError) as caught:
            await Deployment.create(client, model_id, name="reviews", poll_interval=FAST_POLLS)
        assert caught.value.request_tag is not None
        assert "Deployment.create again" in str(caught.value)
        await until(lambda: len(fake.deployments) == 1)

        deployment = await Deployment.create(
            client, model_id, name="reviews", poll_interval=FAST_POLLS
        )

    assert list(fake.deployments) == [deployment.id]


async def test_a_deployment_create_with_other_arguments_is_a_new_deployment(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    async with watsonx_client(fake, server, retry=QUICK) as client:
        model_id = await completed_model_id(client, BASE_MODEL)
        first = await Deployment.create(client, model_id, name="a", poll_interval=FAST_POLLS)
        second = await Deployment.create(client, model_id, name="a", poll_interval=FAST_POLLS)
        third = await Deployment.create(client, model_id, name="b", poll_interval=FAST_POLLS)
    # Completed creates leave nothing uncertain: asking again deploys again, as asked.
    assert len({first.id, second.id, third.id}) == 3


# --- 2. names are never cut --------------------------------------------------------------------


async def test_a_name_of_100_characters_is_stored_whole_and_found_again(
    fake: FakeWatsonx, server: ServerHandle, training_file: Path
) -> None:
    name = "n" * 100
    async with watsonx_client(fake, server, retry=QUICK) as client:
        started = await tuner(client, training_file, name=name).run()
        again = await Tuner.attach(client, name=name, poll_interval=FAST_POLLS).run()
        resumed = await tuner(client, training_file, name=name, resume=True).run()
    assert started.name == name
    assert again.run_id == resumed.run_id == started.run_id
    assert len(fake.trainings) == 1


@pytest.mark.parametrize(
    ("name", "message"),
    [("n" * 101, "at most 100"), ("\n", "non-empty"), ("a\nb", "control"), (" a", "spaces")],
)
async def test_a_name_the_service_cannot_store_is_refused_before_anything_is_sent(
    fake: FakeWatsonx, server: ServerHandle, training_file: Path, name: str, message: str
) -> None:
    async with watsonx_client(fake, server, retry=QUICK) as client:
        with pytest.raises(ConfigurationError, match=message):
            await tuner(client, training_file, name=name).run()
        with pytest.raises(ConfigurationError, match=message):
            await client.trainings.create(
                name=name, base_model=BASE_MODEL, task_id="classification", data_asset_id="a1"
            )
    assert fake.requests == []


async def test_identical_training_data_under_another_run_name_is_uploaded_once(
    fake: FakeWatsonx, server: ServerHandle, training_file: Path
) -> None:
    async with watsonx_client(fake, server, retry=QUICK) as client:
        first = await tuner(client, training_file, name="first").run()
        second = await tuner(client, training_file, name="second").run()
    assert first.data_ref == second.data_ref
    assert len(fake.assets) == 1


# --- 3. ids cannot reach another resource -------------------------------------------------------


BAD_IDS = ["../deployments/{deployment}", "..", "a/b", "x?hard_delete=true", "", "a b", "%2e%2e"]


@pytest.mark.parametrize("bad_id", BAD_IDS)
async def test_an_id_that_is_not_one_path_segment_is_refused_before_anything_is_sent(
    fake: FakeWatsonx, server: ServerHandle, bad_id: str
) -> None:
    async with watsonx_client(fake, server, retry=QUICK) as client:
        model_id = await completed_model_id(client, BASE_MODEL)
        deployment = await Deployment.create(client, model_id, poll_interval=FAST_POLLS)
        asset_id = next(iter(fake.assets))
        bad = bad_id.format(deployment=deployment.id)
        sent = len(fake.requests)

        attached = Tuner.attach(client, run_id=bad)
        with pytest.raises(ConfigurationError, match="not a valid id"):
            await attached.cancel()
        with pytest.raises(ConfigurationError, match="not a valid id"):
            await attached.delete()
        with pytest.raises(ConfigurationError, match="not a valid id"):
            await client.get_tuning_run(bad)
        with pytest.raises(ConfigurationError, match="not a valid id"):
            await Deployment.attach(client, bad)
        with pytest.raises(ConfigurationError, match="not a valid id"):
            await client.delete_deployment(bad)
        with pytest.raises(ConfigurationError, match="not a valid id"):
            await client.delete_training_data(bad)

    assert len(fake.requests) == sent
    assert deployment.id in fake.deployments
    assert asset_id in fake.assets


# --- 5. arguments first --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": -5},
        {"timeout": 0},
        {"timeout": float("nan")},
        {"poll_interval": (-1, -1)},
        {"poll_interval": (0, 0)},
        {"poll_interval": (5, 1)},
        {"poll_interval": (1, float("inf"))},
        {"poll_interval": 3},
        {"serving_name": "Not Valid"},
    ],
)
async def test_deployment_arguments_are_checked_before_anything_is_created(
    fake: FakeWatsonx, server: ServerHandle, options: dict[str, Any]
) -> None:
    async with watsonx_client(fake, server, retry=QUICK) as client:
        model_id = await completed_model_id(client, BASE_MODEL)
        sent = len(fake.requests)
        with pytest.raises(ConfigurationError):
            await Deployment.create(client, model_id, delete_on_exit=True, **options)
    assert len(fake.requests) == sent
    assert fake.deployments == {}


async def test_a_failure_after_the_create_honours_delete_on_exit(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    fake.deployment_polls = 1000  # never ready
    async with watsonx_client(fake, server, retry=QUICK) as client:
        model_id = await completed_model_id(client, BASE_MODEL)
        with pytest.raises(DeploymentTimeoutError):
            await Deployment.create(
                client, model_id, timeout=0.2, poll_interval=FAST_POLLS, delete_on_exit=True
            )
        with pytest.raises(DeploymentTimeoutError):
            await Deployment.create(
                client, model_id, timeout=0.2, poll_interval=FAST_POLLS, delete_on_exit=False
            )
    assert len(fake.deployments) == 1  # the one without delete_on_exit is left, as promised


@pytest.mark.parametrize("options", [{"timeout": -1}, {"poll_interval": (0, 0)}])
async def test_tuner_arguments_are_checked_before_anything_is_sent(
    fake: FakeWatsonx, server: ServerHandle, training_file: Path, options: dict[str, Any]
) -> None:
    async with watsonx_client(fake, server, retry=QUICK) as client:
        with pytest.raises(ConfigurationError):
            tuner(client, training_file, **options)
    assert fake.requests == []
