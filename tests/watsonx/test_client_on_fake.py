"""WatsonxClient against the fake watsonx.ai server over real HTTPS sockets on loopback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import anyio
import pytest

from granite_tuner import (
    APIConnectionError,
    BadRequestError,
    GraniteTunerError,
    PermissionDeniedError,
    RetryPolicy,
    ServerError,
    WatsonxClient,
)
from granite_tuner.testing import FakeWatsonx, Fault
from granite_tuner.testing._server import ServerHandle

pytestmark = pytest.mark.anyio

API_KEY = "fake-api-key-RECOGNISABLE-123456"
BASE_MODEL = "ibm/granite-13b-instruct-v2"
TRAINING_DATA = (
    b'{"input": "Comment: Lovely groomer!\\nSatisfaction:\\n", "output": "1"}\n'
    b'{"input": "Comment: They lost my dog.\\nSatisfaction:\\n", "output": "0"}\n'
)
PARAMETERS = {"num_epochs": 3, "learning_rate": 0.3, "batch_size": 8, "verbalizer": "{{input}}"}
QUICK = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)


@pytest.fixture
def fake() -> FakeWatsonx:
    return FakeWatsonx(training_polls=2, deployment_polls=1)


@pytest.fixture
def server(fake: FakeWatsonx) -> Iterator[ServerHandle]:
    with fake.serve(tls=True) as handle:
        yield handle


def make_client(
    fake: FakeWatsonx, server: ServerHandle, *, project_id: str | None = None
) -> WatsonxClient:
    return WatsonxClient(
        url=server.url,
        api_key=API_KEY,
        iam_url=server.url + "/identity/token",
        project_id=project_id or fake.project_id,
        verify=server.ca_cert_path,
        retry=QUICK,
    )


async def upload_and_train(client: WatsonxClient) -> tuple[str, str]:
    asset = await client.assets.upload(TRAINING_DATA, name="train.jsonl")
    training = await client.trainings.create(
        name="reviews",
        base_model=BASE_MODEL,
        task_id="classification",
        data_asset_id=asset.id,
        parameters=PARAMETERS,
    )
    return asset.id, training.id


async def test_whole_workflow_leaves_nothing_behind(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    async with make_client(fake, server) as client:
        tunable = await client.foundation_models.list(prompt_tunable=True)
        assert BASE_MODEL in [m.model_id for m in tunable]

        asset_id, training_id = await upload_and_train(client)
        assert fake.assets[asset_id]
        training = await client.trainings.get(training_id)
        while not training.is_finished:
            training = await client.trainings.get(training_id)
        assert training.state == "completed"
        assert training.model_id is not None
        assert {m.epoch for m in training.metrics} == {0, 1, 2}

        deployment = await client.deployments.create(
            model_id=training.model_id, name="reviews-pt", serving_name="reviews_pt"
        )
        while not deployment.is_ready:
            deployment = await client.deployments.get(deployment.id)
        tuned = await client.generation.generate("Comment: great\n", deployment_id=deployment.id)
        base = await client.generation.generate("Comment: great\n", model_id=BASE_MODEL)
        assert tuned.text.strip() in {"0", "1"}
        assert base.text.strip() in {"0", "1"}

        await client.deployments.delete(deployment.id)
        await client.trainings.delete(training_id)
        await client.assets.delete(asset_id)
    assert not fake.deployments
    assert not fake.trainings
    assert not fake.assets


async def test_fifty_concurrent_calls_with_an_expired_token_make_one_iam_request(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    async with make_client(fake, server) as client:
        await client.foundation_models.list()
        assert fake.count("POST", "^/identity/token$") == 1
        fake.expire_tokens()

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(partial(client.generation.generate, "hello", model_id=BASE_MODEL))
    assert fake.count("POST", "^/identity/token$") == 2
    rejected = [r for r in fake.requests if r.status == 401]
    assert 1 <= len(rejected) <= 50


async def test_retry_after_is_waited_out_then_the_call_succeeds(
    fake: FakeWatsonx, server: ServerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="granite_tuner")
    fake.faults.add(
        Fault(action="status", status=429, retry_after="2", path="/ml/v1/text/generation")
    )
    async with make_client(fake, server) as client:
        result = await client.generation.generate("hello", model_id=BASE_MODEL)
    assert result.text
    attempts = [r for r in fake.requests if r.path == "/ml/v1/text/generation"]
    assert [r.status for r in attempts] == [429, 200]
    assert attempts[1].received_at - attempts[0].received_at >= 2.0
    assert any("in 2.00 s" in record.getMessage() for record in caplog.records)


async def test_a_training_whose_create_answer_is_lost_exists_once(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    fault = fake.faults.add(Fault(action="drop_after", method="POST", path="^/ml/v4/trainings$"))
    async with make_client(fake, server) as client:
        _, training_id = await upload_and_train(client)
    assert fault.hits == 1
    assert list(fake.trainings) == [training_id]
    assert fake.count("POST", "^/ml/v4/trainings$") == 1


async def test_a_deployment_whose_create_answer_is_lost_exists_once(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    async with make_client(fake, server) as client:
        _, training_id = await upload_and_train(client)
        training = await client.trainings.get(training_id)
        while not training.is_finished:
            training = await client.trainings.get(training_id)
        assert training.model_id is not None
        fake.faults.add(Fault(action="drop_after", method="POST", path="^/ml/v4/deployments$"))
        deployment = await client.deployments.create(model_id=training.model_id, name="d")
    assert list(fake.deployments) == [deployment.id]


async def test_an_asset_whose_create_answer_is_lost_exists_once(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    fake.faults.add(Fault(action="drop_after", method="POST", path="^/v2/assets$"))
    async with make_client(fake, server) as client:
        asset = await client.assets.upload(TRAINING_DATA, name="train.jsonl")
    assert list(fake.assets) == [asset.id]


async def test_a_failed_upload_step_deletes_the_half_made_asset(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    fake.faults.add(Fault(action="status", status=500, method="PUT", times=None))
    async with make_client(fake, server) as client:
        with pytest.raises(ServerError):
            await client.assets.upload(TRAINING_DATA, name="train.jsonl")
    assert fake.count("POST", "^/v2/assets$") == 1
    assert not fake.assets


async def test_transient_faults_on_reads_are_retried(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    for action in ("drop_before", "malformed", "truncated"):
        fake.faults.add(Fault(action=action, method="GET", path="^/ml/v1/foundation_model_specs$"))
    fake.faults.add(Fault(action="status", status=503, path="^/ml/v1/foundation_model_specs$"))
    async with make_client(fake, server) as client:
        models = await client.foundation_models.list()
    assert models
    assert fake.count("GET", "^/ml/v1/foundation_model_specs$") == 5


async def test_an_iam_outage_is_retried(fake: FakeWatsonx, server: ServerHandle) -> None:
    fake.faults.add(Fault(action="status", status=503, path="^/identity/token$", times=2))
    async with make_client(fake, server) as client:
        await client.foundation_models.list()
    assert fake.count("POST", "^/identity/token$") == 3


async def test_an_unknown_project_is_a_permission_error(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    async with make_client(fake, server, project_id="someone-elses") as client:
        with pytest.raises(PermissionDeniedError) as info:
            await client.trainings.list()
    assert info.value.status_code == 403
    assert info.value.trace


async def test_the_service_refusal_of_a_parameter_is_passed_on(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    async with make_client(fake, server) as client:
        asset = await client.assets.upload(TRAINING_DATA, name="train.jsonl")
        with pytest.raises(BadRequestError) as info:
            await client.trainings.create(
                name="bad",
                base_model=BASE_MODEL,
                task_id="classification",
                data_asset_id=asset.id,
                parameters={"num_epochs": 500},
            )
    assert "num_epochs" in str(info.value)
    assert not fake.trainings


async def test_tls_verification_stays_on(fake: FakeWatsonx, server: ServerHandle) -> None:
    client = WatsonxClient(
        url=server.url, token=fake.issue_token(), project_id=fake.project_id, retry=QUICK
    )
    async with client:
        with pytest.raises(APIConnectionError, match="certificate could not be verified"):
            await client.trainings.list()
    assert fake.requests == []


async def test_secrets_never_reach_logs_errors_or_reprs(
    fake: FakeWatsonx, server: ServerHandle, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, httpx, httpcore
    errors: list[GraniteTunerError] = []
    fake.faults.add(Fault(action="status", status=503, path="/ml/v1/text/generation", times=None))
    async with make_client(fake, server) as client:
        _asset_id, training_id = await upload_and_train(client)
        fake.expire_tokens()
        await client.trainings.get(training_id)
        for call in (
            client.trainings.get("no-such-training"),
            client.generation.generate("x", model_id=BASE_MODEL),
        ):
            try:
                await call
            except GraniteTunerError as exc:
                errors.append(exc)
        texts = [repr(client), repr(client.auth), repr(client.settings), str(client.settings)]
    async with WatsonxClient(
        url=server.url,
        api_key="wrong-key-ALSO-RECOGNISABLE-999",
        iam_url=server.url + "/identity/token",
        project_id=fake.project_id,
        verify=server.ca_cert_path,
    ) as bad_client:
        fake.api_keys = [API_KEY]
        try:
            await bad_client.trainings.list()
        except GraniteTunerError as exc:
            errors.append(exc)
    assert len(errors) == 3

    tokens = {
        r.headers["authorization"].split(" ", 1)[1]
        for r in fake.requests
        if r.headers.get("authorization", "").startswith("Bearer ")
    }
    assert len(tokens) >= 2
    secrets = {API_KEY, "wrong-key-ALSO-RECOGNISABLE-999", *tokens}
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [str(getattr(e, "url", "")) for e in errors]
    for text in texts:
        for secret in secrets:
            assert secret not in text
