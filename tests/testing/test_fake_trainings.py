"""Prompt-tuning trainings: validation, the polled state machine, metrics, cancel, list."""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Any

import httpx
import pytest

from granite_tuner.testing import FakeModel, FakeWatsonx

from .workflow import (
    SCOPE,
    VERSION,
    create_training,
    error_code,
    error_message,
    get_training,
    http_client,
    training_body,
    upload_asset,
)

pytestmark = pytest.mark.anyio


async def post_training(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/ml/v4/trainings", params={"version": VERSION}, json=body)


async def test_create_answers_201_queued_with_server_defaults(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    asset_id, _, _ = await upload_asset(client)
    body = training_body(asset_id)
    for optional in ("learning_rate", "batch_size", "init_method", "verbalizer"):
        del body["prompt_tuning"][optional]

    response = await post_training(client, body)

    assert response.status_code == 201
    created = response.json()
    metadata, entity = created["metadata"], created["entity"]
    assert metadata["name"] == "grooming"
    assert metadata["project_id"] == "p-1"
    assert metadata["tags"] == ["prompt_tuning", "team.grooming"]
    assert metadata["href"] == f"/ml/v4/trainings/{metadata['id']}"
    assert metadata["id"] == metadata["id"].lower()
    assert entity["status"]["state"] == "queued"
    assert entity["auto_update_model"] is True
    assert entity["results_reference"]["location"]["path"] == "default_tuning_output"
    assert entity["prompt_tuning"]["learning_rate"] == 0.3
    assert entity["prompt_tuning"]["batch_size"] == 16
    assert entity["prompt_tuning"]["init_method"] == "random"
    assert entity["prompt_tuning"]["verbalizer"] == "Input: {{input}} Output:"
    assert entity["prompt_tuning"]["tuning_type"] == "prompt_tuning"
    assert "model_id" not in entity
    assert fake.trainings[metadata["id"]].state == "queued"


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("num_epochs", 0, ["num_epochs", "[1, 50]"]),
        ("num_epochs", 51, ["num_epochs", "[1, 50]"]),
        ("num_epochs", 2.5, ["num_epochs", "int"]),
        ("learning_rate", 0.001, ["learning_rate", "[0.01, 0.5]"]),
        ("learning_rate", 0.6, ["learning_rate", "[0.01, 0.5]"]),
        ("batch_size", 17, ["batch_size", "[1, 16]"]),
        ("accumulate_steps", 129, ["accumulate_steps", "[1, 128]"]),
        ("max_input_tokens", 257, ["max_input_tokens", "[1, 256]"]),
        ("max_output_tokens", 0, ["max_output_tokens", "[1, 128]"]),
        ("batch_size", True, ["batch_size", "int"]),
        ("task_id", "translation", ["task_id", "translation"]),
        ("tuning_type", "lora", ["tuning_type"]),
        ("init_method", "zeros", ["init_method"]),
        ("init_method", "text", ["init_text"]),
        ("verbalizer", "no placeholder", ["verbalizer", "{{input}}"]),
        ("epochs", 3, ["epochs"]),
    ],
)
async def test_parameters_out_of_range_are_a_400_naming_the_field(
    client: httpx.AsyncClient, field: str, value: object, words: list[str]
) -> None:
    asset_id, _, _ = await upload_asset(client)
    response = await post_training(client, training_body(asset_id, **{field: value}))
    assert response.status_code == 400
    for word in words:
        assert word in error_message(response)


@pytest.mark.parametrize(
    "model_id", ["ibm/granite-3-8b-instruct", "ibm/no-such-model", "ibm/withdrawn"]
)
async def test_base_model_must_be_tunable_and_not_withdrawn(
    fake: FakeWatsonx, client: httpx.AsyncClient, model_id: str
) -> None:
    fake.models.append(
        FakeModel("ibm/withdrawn", lifecycle={"available": "2020-01-01", "withdrawn": "2021-01-01"})
    )
    asset_id, _, _ = await upload_asset(client)
    response = await post_training(
        client, training_body(asset_id, base_model={"model_id": model_id})
    )
    assert response.status_code == 400
    assert error_code(response) == "model_not_supported"
    assert model_id in error_message(response)


async def test_a_deprecated_model_can_still_be_tuned(client: httpx.AsyncClient) -> None:
    asset_id, _, _ = await upload_asset(client)
    response = await post_training(
        client, training_body(asset_id, base_model={"model_id": "google/flan-t5-xl"})
    )
    assert response.status_code == 201


async def test_training_data_must_be_a_completed_asset(client: httpx.AsyncClient) -> None:
    half_made, _, _ = await upload_asset(client, complete=False)
    for asset_id in (half_made, "00000000-0000-4000-8000-000000000000"):
        response = await post_training(client, training_body(asset_id))
        assert response.status_code == 400
        assert error_code(response) == "invalid_training_data"
        assert asset_id in error_message(response)


async def test_training_data_reference_by_href_only(client: httpx.AsyncClient) -> None:
    asset_id, _, _ = await upload_asset(client)
    body = training_body(asset_id)
    body["training_data_references"][0]["location"] = {
        "href": f"/v2/assets/{asset_id}?project_id=p-1"
    }
    assert (await post_training(client, body)).status_code == 201


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"project_id": None}, 400),
        ({"project_id": "other"}, 403),
        ({"name": None}, 400),
        ({"training_data_references": []}, 400),
        ({"prompt_tuning": None}, 400),
        ({"auto_update_model": "yes"}, 400),
    ],
)
async def test_invalid_bodies(
    client: httpx.AsyncClient, change: dict[str, object], status: int
) -> None:
    asset_id, _, _ = await upload_asset(client)
    body = training_body(asset_id)
    for key, value in change.items():
        if value is None:
            del body[key]
        else:
            body[key] = value
    response = await post_training(client, body)
    assert response.status_code == status


async def test_scope_only_in_the_query_is_not_enough(client: httpx.AsyncClient) -> None:
    asset_id, _, _ = await upload_asset(client)
    body = training_body(asset_id)
    del body["project_id"]
    response = await client.post("/ml/v4/trainings", params=SCOPE, json=body)
    assert response.status_code == 400
    assert error_code(response) == "missing_scope"


async def test_state_machine_reveals_metrics_then_completes(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    fake.training_polls = 3
    fake.metrics_per_epoch = 2
    asset_id, _, _ = await upload_asset(client)
    training_id = await create_training(client, asset_id, num_epochs=3)

    first = (await get_training(client, training_id))["entity"]
    second = (await get_training(client, training_id))["entity"]
    listed = await client.get("/ml/v4/trainings", params=SCOPE)  # a list is not a poll
    third = (await get_training(client, training_id))["entity"]
    fourth = (await get_training(client, training_id))["entity"]

    assert [e["status"]["state"] for e in (first, second, third, fourth)] == [
        "running", "running", "completed", "completed",
    ]  # fmt: skip
    assert listed.json()["resources"][0]["entity"]["status"]["state"] == "running"
    assert [len(e["status"]["metrics"]) for e in (first, second, third)] == [2, 4, 6]
    assert first["status"]["message"]["level"] == "info"
    assert first["status"]["running_at"]
    assert "completed_at" not in second["status"]
    assert third["status"]["completed_at"]
    assert third == fourth
    assert third["model_id"] == fake.trainings[training_id].model_id
    assert third["auto_update_model"] is True
    assert third["results_reference"]["location"]["model_request_path"]
    entry = third["status"]["metrics"][0]
    assert set(entry) == {"iteration", "timestamp", "ml_metrics"}  # no metrics_location
    dt.datetime.strptime(entry["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")
    assert [m["ml_metrics"]["epoch"] for m in third["status"]["metrics"]] == [0, 0, 1, 1, 2, 2]


async def test_losses_are_deterministic_and_fall_by_epoch() -> None:
    async def losses(fake: FakeWatsonx) -> list[list[float]]:
        with fake.serve() as server:
            headers = {"Authorization": f"Bearer {fake.issue_token()}"}
            async with http_client(base_url=server.url, headers=headers) as other:
                asset, _, _ = await upload_asset(other)
                training_id = await create_training(other, asset, num_epochs=10)
                for _ in range(fake.training_polls):
                    await get_training(other, training_id)
        by_epoch: list[list[float]] = [[] for _ in range(10)]
        for entry in fake.trainings[training_id].metrics:
            by_epoch[entry["ml_metrics"]["epoch"]].append(entry["ml_metrics"]["loss"])
        return by_epoch

    first = await losses(FakeWatsonx(seed=7, metrics_per_epoch=3))
    again = await losses(FakeWatsonx(seed=7, metrics_per_epoch=3))
    other_seed = await losses(FakeWatsonx(seed=8, metrics_per_epoch=3))

    assert first == again
    assert first != other_seed
    means = [statistics.mean(epoch) for epoch in first]
    assert means == sorted(means, reverse=True)
    assert all(len(epoch) == 3 for epoch in first)


async def test_failed_outcome(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    fake.training_outcome = "failed"
    fake.training_polls = 1
    asset_id, _, _ = await upload_asset(client)
    training_id = await create_training(client, asset_id)

    status = (await get_training(client, training_id))["entity"]["status"]

    assert status["state"] == "failed"
    assert status["failure"]["errors"][0]["message"] == "Training failed: out of memory"
    assert status["failure"]["trace"]
    assert status["message"]["level"] == "error"
    assert "model_id" not in (await get_training(client, training_id))["entity"]


async def test_cancel_then_hard_delete(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    fake.training_polls = 10**9
    asset_id, _, _ = await upload_asset(client)
    training_id = await create_training(client, asset_id)
    assert (await get_training(client, training_id))["entity"]["status"]["state"] == "running"

    cancel = await client.delete(f"/ml/v4/trainings/{training_id}", params=SCOPE)
    state = (await get_training(client, training_id))["entity"]["status"]["state"]
    cancel_again = await client.delete(f"/ml/v4/trainings/{training_id}", params=SCOPE)
    hard = await client.delete(
        f"/ml/v4/trainings/{training_id}", params={**SCOPE, "hard_delete": "true"}
    )
    gone = await client.get(f"/ml/v4/trainings/{training_id}", params=SCOPE)

    assert cancel.status_code == 204
    assert state == "canceled"
    assert cancel_again.status_code == 400
    assert "Job already completed with state canceled" in error_message(cancel_again)
    assert hard.status_code == 204
    assert gone.status_code == 404
    assert error_code(gone) == "training_not_found"
    assert fake.trainings == {}


async def test_cancelling_a_completed_training_is_the_sdk_tolerated_400(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    fake.training_polls = 1
    asset_id, _, _ = await upload_asset(client)
    training_id = await create_training(client, asset_id)
    await get_training(client, training_id)

    response = await client.delete(f"/ml/v4/trainings/{training_id}", params=SCOPE)

    assert response.status_code == 400
    assert "Job already completed with state completed" in response.text


async def test_a_training_is_invisible_from_another_scope(client: httpx.AsyncClient) -> None:
    asset_id, _, _ = await upload_asset(client)
    training_id = await create_training(client, asset_id)
    response = await client.get(
        f"/ml/v4/trainings/{training_id}", params={"version": VERSION, "space_id": "s-1"}
    )
    assert response.status_code == 404


async def test_list_filters_and_pagination(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    fake.training_polls = 1
    asset_id, _, _ = await upload_asset(client)
    ids = [await create_training(client, asset_id) for _ in range(5)]
    await get_training(client, ids[0])  # completes the oldest

    async def listed(**params: str) -> list[str]:
        found: list[str] = []
        response = await client.get("/ml/v4/trainings", params={**SCOPE, **params})
        while True:
            assert response.status_code == 200, response.text
            found += [r["metadata"]["id"] for r in response.json()["resources"]]
            if "next" not in response.json():
                return found
            response = await client.get(response.json()["next"]["href"])

    assert await listed() == ids[::-1]  # newest first
    assert await listed(limit="2") == ids[::-1]
    assert await listed(state="completed") == [ids[0]]
    assert await listed(state="queued", limit="1") == ids[:0:-1]
    assert await listed(**{"tag.value": "team.grooming"}) == ids[::-1]
    assert await listed(**{"tag.value": "nope"}) == []
    assert await listed(type="prompt_tuning") == ids[::-1]
    assert await listed(type="fine_tuning") == []
