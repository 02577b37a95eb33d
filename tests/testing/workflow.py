"""Steps of the watsonx workflow spoken in plain httpx, shared by the fake's tests."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from granite_tuner.testing import FakeWatsonx

VERSION = "2025-02-20"
SCOPE = {"version": VERSION, "project_id": "p-1"}
BASE_MODEL = "ibm/granite-13b-instruct-v2"
TRAINING_DATA = b'{"input": "great grooming", "output": "1"}\n{"input": "late", "output": "0"}\n'


# One client SSL context for all tests: httpx builds a new one (~25 ms) for every client
# otherwise. The tests talk plain HTTP unless they say otherwise.
_SSL = ssl.create_default_context()


def http_client(**kwargs: Any) -> httpx.AsyncClient:
    """A plain httpx client (no token) that is cheap to create."""
    kwargs.setdefault("verify", _SSL)
    return httpx.AsyncClient(**kwargs)


def error_code(response: httpx.Response) -> str:
    """The first ``errors[].code`` of a watsonx error body (checking its shape on the way)."""
    body = response.json()
    assert body["status_code"] == response.status_code
    assert body["trace"] == response.headers["x-global-transaction-id"]
    code: str = body["errors"][0]["code"]
    return code


def error_message(response: httpx.Response) -> str:
    message: str = response.json()["errors"][0]["message"]
    return message


async def upload_asset(
    client: httpx.AsyncClient, data: bytes = TRAINING_DATA, *, complete: bool = True
) -> tuple[str, str, str]:
    """The 4-step upload of protocol §5; returns (asset_id, attachment_id, url1)."""
    created = await client.post(
        "/v2/assets",
        params=SCOPE,
        json={
            "metadata": {"name": "train.jsonl", "asset_type": "data_asset"},
            "entity": {"data_asset": {"mime_type": "application/octet-stream"}},
        },
    )
    assert created.status_code == 201, created.text
    asset_id: str = created.json()["metadata"]["asset_id"]
    attachment = await client.post(
        f"/v2/assets/{asset_id}/attachments",
        params=SCOPE,
        json={"asset_type": "data_asset", "name": "train.jsonl", "mime": "application/json"},
    )
    assert attachment.status_code == 201, attachment.text
    attachment_id: str = attachment.json()["attachment_id"]
    url1: str = attachment.json()["url1"]
    async with http_client() as bare:  # no Authorization, as for a pre-signed URL
        uploaded = await bare.put(url1, content=data)
    assert uploaded.status_code == 200
    if complete:
        done = await client.post(
            f"/v2/assets/{asset_id}/attachments/{attachment_id}/complete", params=SCOPE
        )
        assert done.status_code == 200, done.text
    return asset_id, attachment_id, url1


def training_body(asset_id: str, **prompt_tuning: Any) -> dict[str, Any]:
    """A training request as ``PromptTuner.run()`` sends it (protocol §7.1)."""
    parameters: dict[str, Any] = {
        "base_model": {"model_id": BASE_MODEL},
        "task_id": "classification",
        "num_epochs": 3,
        "learning_rate": 0.3,
        "batch_size": 8,
        "accumulate_steps": 16,
        "max_input_tokens": 128,
        "max_output_tokens": 2,
        "init_method": "random",
        "verbalizer": "Input: {{input}} Output:",
    }
    parameters.update(prompt_tuning)
    return {
        "training_data_references": [
            {"type": "data_asset", "location": {"href": f"/v2/assets/{asset_id}", "id": asset_id}}
        ],
        "results_reference": {"type": "container", "location": {"path": "default_tuning_output"}},
        "tags": ["prompt_tuning", "team.grooming"],
        "prompt_tuning": parameters,
        "auto_update_model": True,
        "name": "grooming",
        "description": "test run",
        "project_id": "p-1",
    }


async def create_training(client: httpx.AsyncClient, asset_id: str, **prompt_tuning: Any) -> str:
    response = await client.post(
        "/ml/v4/trainings",
        params={"version": VERSION},
        json=training_body(asset_id, **prompt_tuning),
    )
    assert response.status_code == 201, response.text
    training_id: str = response.json()["metadata"]["id"]
    return training_id


async def get_training(client: httpx.AsyncClient, training_id: str) -> dict[str, Any]:
    response = await client.get(f"/ml/v4/trainings/{training_id}", params=SCOPE)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def tuned_model(client: httpx.AsyncClient, fake: FakeWatsonx) -> str:
    """Upload, train to completion; the tuned model's id."""
    asset_id, _, _ = await upload_asset(client)
    training_id = await create_training(client, asset_id)
    for _ in range(fake.training_polls):
        details = await get_training(client, training_id)
    assert details["entity"]["status"]["state"] == "completed"
    model_id: str = details["entity"]["model_id"]
    return model_id


async def create_deployment(
    client: httpx.AsyncClient, model_id: str, serving_name: str | None = None
) -> httpx.Response:
    online: dict[str, Any] = {"parameters": {"serving_name": serving_name}} if serving_name else {}
    return await client.post(
        "/ml/v4/deployments",
        params=SCOPE,
        json={
            "name": "grooming-deployment",
            "online": online,
            "asset": {"id": model_id},
            "tags": ["grooming"],
            "project_id": "p-1",
        },
    )


async def ready_deployment(
    client: httpx.AsyncClient, fake: FakeWatsonx, serving_name: str | None = None
) -> str:
    """A deployment of a freshly tuned model, polled until ready; its id."""
    created = await create_deployment(client, await tuned_model(client, fake), serving_name)
    assert created.status_code == 202, created.text
    deployment_id: str = created.json()["metadata"]["id"]
    for _ in range(fake.deployment_polls):
        response = await client.get(f"/ml/v4/deployments/{deployment_id}", params=SCOPE)
    assert response.json()["entity"]["status"]["state"] == "ready"
    return deployment_id
