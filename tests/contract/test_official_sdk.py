"""Contract test: IBM's official ``ibm-watsonx-ai`` SDK drives the fake through the workflow.

If IBM's own client accepts the fake for the whole prompt-tuning workflow (protocol §12) --
API-key exchange, project lookup, data-asset upload, training, summary, deployment, generation
against the deployment and the base model, clean-up -- then the fake speaks the protocol, and
tests of our own client against the fake mean something.

The SDK is synchronous and sleeps 5 s between status polls, so this test takes ~15 s.
"""

from __future__ import annotations

import json
import statistics
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from granite_tuner.testing import (
    FakeWatsonx,
    GenerationCall,
    RecordedRequest,
    ServerHandle,
    default_answer,
)

pytestmark = pytest.mark.contract

API_KEY = "contract-test-api-key"
PROJECT = "p-contract"
BASE_MODEL = "ibm/granite-13b-instruct-v2"
SDK_VERSION_PARAM = "2026-10-14"  # ibm_watsonx_ai/utils/API_VERSION_PARAM in 1.8.1
NUM_EPOCHS = 3
PROMPTS = [f"Review {n}: the groomer was {'great' if n % 2 else 'late'}." for n in range(5)]


@pytest.fixture
def fake() -> FakeWatsonx:
    # A tight rate limit, so that the SDK's own 429 handling (retry on
    # x-requests-limit-remaining: 0) is exercised against the fake.
    return FakeWatsonx(
        project_id=PROJECT,
        api_keys=[API_KEY],
        training_polls=2,
        deployment_polls=1,
        metrics_per_epoch=3,
        rate_limit=2.0,
        rate_limit_burst=1,
    )


@pytest.fixture
def server(fake: FakeWatsonx) -> Iterator[ServerHandle]:
    with fake.serve(tls=True) as handle:
        yield handle


@pytest.fixture
def training_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    lines = [
        json.dumps({"input": f"Example {n}: the dog looked {'great' if n % 2 else 'bad'}.",
                    "output": str(n % 2)})
        for n in range(60)
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_official_sdk_runs_the_whole_workflow(
    fake: FakeWatsonx, server: ServerHandle, training_file: Path
) -> None:
    # Imported here: the SDK takes seconds to import, which other test runs need not pay.
    from ibm_watsonx_ai import Credentials
    from ibm_watsonx_ai.experiment import TuneExperiment
    from ibm_watsonx_ai.foundation_models import ModelInference
    from ibm_watsonx_ai.helpers import DataConnection

    credentials = Credentials(
        url=server.url,
        platform_url=server.url,
        api_key=API_KEY,
        auth_url=server.url + "/identity/token",
        verify=server.ca_cert_path,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK warns about deprecations of its own
        experiment = TuneExperiment(credentials, project_id=PROJECT)
        client = experiment.client

        asset = client.data_assets.create(name="grooming-train.jsonl", file_path=str(training_file))
        asset_id = client.data_assets.get_id(asset)
        assert fake.assets[asset_id].data == training_file.read_bytes()

        tuner = experiment.prompt_tuner(
            name="contract prompt tuning",
            task_id="classification",
            base_model=BASE_MODEL,
            accumulate_steps=16,
            batch_size=8,
            init_method="text",
            init_text="Classify the review as satisfied (1) or unsatisfied (0).",
            learning_rate=0.3,
            max_input_tokens=128,
            max_output_tokens=2,
            num_epochs=NUM_EPOCHS,
            verbalizer="Review: {{input}} Satisfied:",
            auto_update_model=True,
        )
        details = tuner.run(
            training_data_references=[DataConnection(data_asset_id=asset_id)],
            background_mode=False,
        )
        training_id = details["metadata"]["id"]
        assert tuner.get_run_status() == "completed"

        summary = tuner.summary()
        training = fake.trainings[training_id]
        last_epoch = [
            entry["ml_metrics"]["loss"]
            for entry in training.metrics
            if entry["ml_metrics"]["epoch"] == NUM_EPOCHS - 1
        ]
        assert summary["loss"].iloc[0] == pytest.approx(statistics.mean(last_epoch))
        assert summary["Base model"].iloc[0] == BASE_MODEL
        assert summary["Epochs"].iloc[0] == NUM_EPOCHS

        model_id = tuner.get_model_id()
        assert model_id == training.model_id

        deployment = client.deployments.create(
            model_id,
            meta_props={
                client.deployments.ConfigurationMetaNames.NAME: "contract-deployment",
                client.deployments.ConfigurationMetaNames.ONLINE: {},
                client.deployments.ConfigurationMetaNames.SERVING_NAME: "contract_dep",
            },
        )
        deployment_id = client.deployments.get_id(deployment)
        assert fake.deployments[deployment_id].state == "ready"
        assert fake.deployments[deployment_id].serving_name == "contract_dep"

        tuned = ModelInference(deployment_id=deployment_id, api_client=client)
        answers = tuned.generate(
            prompt=PROMPTS,
            params={"decoding_method": "greedy", "max_new_tokens": 2},
            concurrency_limit=5,
        )
        assert [a["results"][0]["generated_text"] for a in answers] == [
            _default_answer(p) for p in PROMPTS
        ]

        base = ModelInference(model_id=BASE_MODEL, api_client=client)
        text = base.generate_text(prompt=PROMPTS[0], params={"max_new_tokens": 2})
        assert text == _default_answer(PROMPTS[0])

        client.deployments.delete(deployment_id)
        tuner.cancel_run(hard_delete=True)
        client.data_assets.delete(asset_id)

    assert fake.deployments == {}
    assert fake.trainings == {}
    assert fake.assets == {}
    _assert_request_sequence(fake, asset_id, training_id, deployment_id, model_id)


def _default_answer(prompt: str) -> str:
    return default_answer(GenerationCall(prompt, None, None, {}))


def _collapse(requests: list[RecordedRequest]) -> list[tuple[str, str, dict[str, str]]]:
    """(method, path, query) of each request, runs of identical ones (polls, retries) as one."""
    keys: list[tuple[str, str, dict[str, str]]] = []
    for r in requests:
        key = (r.method, r.path, {name: values[0] for name, values in r.query.items()})
        if not keys or keys[-1] != key:
            keys.append(key)
    return keys


def _assert_request_sequence(
    fake: FakeWatsonx, asset_id: str, training_id: str, deployment_id: str, model_id: str
) -> None:
    """The SDK's requests are those that protocol §12 observed, in that order."""
    requests = fake.requests
    attachment_id = next(r.path.rsplit("/", 1)[1] for r in requests if r.method == "PUT")
    scoped = {"version": SDK_VERSION_PARAM, "project_id": PROJECT}
    versioned = {"version": SDK_VERSION_PARAM}
    tunable_specs = {
        **scoped,
        "filters": "function_prompt_tune_trainable,!lifecycle_withdrawn:and",
        "limit": "200",
    }
    available_specs = {**scoped, "filters": "!lifecycle_withdrawn", "limit": "200"}
    put = next(r for r in requests if r.method == "PUT")
    assert _collapse(requests) == [
        ("POST", "/identity/token", {}),
        ("GET", f"/v2/projects/{PROJECT}", {}),
        ("GET", "/ml/v1/fine_tunings", scoped),
        ("POST", "/v2/assets", scoped),
        ("POST", f"/v2/assets/{asset_id}/attachments", scoped),
        ("PUT", f"/_fake_cos/{asset_id}/{attachment_id}", {"signature": put.query["signature"][0]}),
        ("POST", f"/v2/assets/{asset_id}/attachments/{attachment_id}/complete", scoped),
        ("GET", "/ml/v1/foundation_model_specs", tunable_specs),
        ("GET", f"/v2/assets/{asset_id}", scoped),
        ("GET", f"/v2/assets/{asset_id}/attachments/{attachment_id}", scoped),
        ("GET", f"/v2/projects/{PROJECT}", {"include": "everything,credentials"}),
        ("POST", "/ml/v4/trainings", versioned),
        ("GET", f"/ml/v4/trainings/{training_id}", scoped),
        ("GET", f"/wx/v1/prompts/{model_id}", {"project_id": PROJECT, "prompt_id": model_id}),
        ("POST", "/ml/v4/deployments", scoped),
        ("GET", f"/ml/v4/deployments/{deployment_id}", scoped),
        ("GET", "/ml/v1/foundation_model_specs", available_specs),
        ("POST", f"/ml/v1/deployments/{deployment_id}/text/generation", versioned),
        ("GET", "/ml/v1/foundation_model_specs", available_specs),
        ("POST", "/ml/v1/text/generation", versioned),
        ("DELETE", f"/ml/v4/deployments/{deployment_id}", scoped),
        ("DELETE", f"/ml/v4/trainings/{training_id}", {**scoped, "hard_delete": "true"}),
        ("DELETE", f"/v2/assets/{asset_id}", scoped),
    ]

    # Authentication: one API-key exchange; a bearer token on everything but IAM and upload.
    assert fake.iam_exchanges == 1
    assert "authorization" not in put.headers
    assert put.body.startswith(b'{"input": ')
    for r in requests:
        if r.path not in ("/identity/token", put.path):
            assert r.headers["authorization"].startswith("Bearer "), r.path

    # Scope in the body where §2 says so.
    (training_post,) = [r for r in requests if r.method == "POST" and r.path == "/ml/v4/trainings"]
    assert training_post.json()["project_id"] == PROJECT
    assert training_post.json()["prompt_tuning"]["num_epochs"] == NUM_EPOCHS
    for r in requests:
        if r.path == "/ml/v1/text/generation":
            assert r.json()["project_id"] == PROJECT
            assert r.json()["model_id"] == BASE_MODEL
        elif r.path.endswith("/text/generation"):
            assert "project_id" not in r.json()
            assert "space_id" not in r.json()

    # Generation: every prompt answered once; the SDK retried the 429s of the rate limit.
    generations = [r for r in requests if r.path.startswith("/ml/v1/deployments/")]
    assert sorted(r.json()["input"] for r in generations if r.status == 200) == sorted(PROMPTS)
    assert {r.status for r in generations} <= {200, 429}
    assert any(r.status == 429 for r in generations)
