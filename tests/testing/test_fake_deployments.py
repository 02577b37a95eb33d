"""Deployments of tuned models: validation, the polled state machine, serving names, list."""

from __future__ import annotations

import httpx
import pytest

from granite_tuner.testing import FakeWatsonx

from .workflow import SCOPE, create_deployment, error_code, ready_deployment, tuned_model

pytestmark = pytest.mark.anyio


async def test_create_answers_202_initializing_then_ready_on_the_nth_get(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    fake.deployment_polls = 2
    model_id = await tuned_model(client, fake)

    created = await create_deployment(client, model_id, serving_name="grooming_v1")
    deployment_id = created.json()["metadata"]["id"]
    first = await client.get(f"/ml/v4/deployments/{deployment_id}", params=SCOPE)
    listed = await client.get("/ml/v4/deployments", params=SCOPE)  # a list is not a poll
    second = await client.get(f"/ml/v4/deployments/{deployment_id}", params=SCOPE)

    assert created.status_code == 202
    assert created.json()["entity"]["status"]["state"] == "initializing"
    assert len(deployment_id) == 36
    assert deployment_id == deployment_id.lower()
    assert first.json()["entity"]["status"]["state"] == "initializing"
    assert listed.json()["resources"][0]["entity"]["status"]["state"] == "initializing"
    entity = second.json()["entity"]
    assert entity["status"]["state"] == "ready"
    assert entity["base_model_id"] == "ibm/granite-13b-instruct-v2"
    assert entity["asset"] == {"id": model_id}
    assert entity["online"] == {"parameters": {"serving_name": "grooming_v1"}}
    urls = [inference["url"] for inference in entity["status"]["inference"]]
    assert urls[0] == f"{client.base_url}/ml/v1/deployments/{deployment_id}/text/generation"
    assert urls[1].endswith("/ml/v1/deployments/grooming_v1/text/generation")
    assert fake.deployments[deployment_id].state == "ready"


async def test_failed_outcome(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    fake.deployment_outcome = "failed"
    created = await create_deployment(client, await tuned_model(client, fake))
    deployment_id = created.json()["metadata"]["id"]

    status = (await client.get(f"/ml/v4/deployments/{deployment_id}", params=SCOPE)).json()[
        "entity"
    ]["status"]

    assert status["state"] == "failed"
    assert status["failure"]["errors"][0]["code"] == "deployment_failed"
    assert status["failure"]["errors"][0]["message"]
    assert "inference" not in status


async def test_the_asset_must_be_a_tuned_model(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    fake.training_polls = 10**9
    response = await create_deployment(client, "00000000-0000-4000-8000-000000000000")
    assert response.status_code == 404
    assert error_code(response) == "model_not_found"


@pytest.mark.parametrize("serving_name", ["Upper", "with-dash", "x" * 37, ""])
async def test_serving_name_must_match_the_pattern(
    fake: FakeWatsonx, client: httpx.AsyncClient, serving_name: str
) -> None:
    model_id = await tuned_model(client, fake)
    response = await client.post(
        "/ml/v4/deployments",
        params=SCOPE,
        json={
            "name": "d",
            "online": {"parameters": {"serving_name": serving_name}},
            "asset": {"id": model_id},
            "project_id": "p-1",
        },
    )
    assert response.status_code == 400
    assert error_code(response) == "invalid_serving_name"


async def test_serving_names_are_unique_and_can_be_checked(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    model_id = await tuned_model(client, fake)
    assert (await create_deployment(client, model_id, "taken_name")).status_code == 202

    duplicate = await create_deployment(client, model_id, "taken_name")
    taken = await client.get(
        "/ml/v4/deployments",
        params={"version": SCOPE["version"], "serving_name": "taken_name", "conflict": "true"},
    )
    free = await client.get(
        "/ml/v4/deployments",
        params={"version": SCOPE["version"], "serving_name": "free_name", "conflict": "true"},
    )

    assert duplicate.status_code == 409
    assert taken.status_code == 409
    assert error_code(taken) == "serving_name_not_unique"
    assert free.status_code == 204


@pytest.mark.parametrize(
    ("body_change", "status"),
    [
        ({"online": None}, 400),
        ({"name": None}, 400),
        ({"asset": None}, 400),
        ({"project_id": None}, 400),
        ({"project_id": "other"}, 403),
    ],
)
async def test_invalid_bodies(
    fake: FakeWatsonx, client: httpx.AsyncClient, body_change: dict[str, object], status: int
) -> None:
    body: dict[str, object] = {
        "name": "d",
        "online": {},
        "asset": {"id": await tuned_model(client, fake)},
        "project_id": "p-1",
    }
    for key, value in body_change.items():
        if value is None:
            del body[key]
        else:
            body[key] = value
    response = await client.post(
        "/ml/v4/deployments", params={"version": SCOPE["version"]}, json=body
    )
    assert response.status_code == status


async def test_query_and_body_scope_must_agree(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    model_id = await tuned_model(client, fake)
    response = await client.post(
        "/ml/v4/deployments",
        params={"version": SCOPE["version"], "space_id": "s-1"},
        json={"name": "d", "online": {}, "asset": {"id": model_id}, "project_id": "p-1"},
    )
    assert response.status_code == 400


async def test_list_filters_and_delete(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    first = await ready_deployment(client, fake, serving_name="first")
    second = await ready_deployment(client, fake)

    async def listed(**params: str) -> list[str]:
        response = await client.get("/ml/v4/deployments", params={**SCOPE, **params})
        return [r["metadata"]["id"] for r in response.json()["resources"]]

    assert await listed() == [second, first]
    assert await listed(serving_name="first") == [first]
    assert await listed(**{"tag.value": "grooming"}) == [second, first]
    assert await listed(**{"tag.value": "other"}) == []
    assert await listed(name="grooming-deployment", limit="1") == [second]

    deleted = await client.delete(f"/ml/v4/deployments/{first}", params=SCOPE)
    gone = await client.get(f"/ml/v4/deployments/{first}", params=SCOPE)
    assert deleted.status_code == 204
    assert "content-length" not in deleted.headers
    assert gone.status_code == 404
    assert error_code(gone) == "deployment_not_found"
    assert set(fake.deployments) == {second}
