"""Projects, spaces, scoping, the version parameter, routing, and the model catalogue."""

from __future__ import annotations

import httpx
import pytest

from granite_tuner.testing import FakeModel, FakeWatsonx

from .workflow import SCOPE, VERSION, error_code, error_message, http_client

pytestmark = pytest.mark.anyio


async def test_project_details_as_the_official_sdk_reads_them(client: httpx.AsyncClient) -> None:
    plain = await client.get("/v2/projects/p-1")
    with_credentials = await client.get(
        "/v2/projects/p-1", params={"include": "everything,credentials"}
    )

    assert plain.status_code == 200
    assert plain.headers["content-type"] == "application/json"
    storage = plain.json()["entity"]["storage"]
    assert storage["type"] == "bmcos_object_storage"
    assert "credentials" not in storage["properties"]
    assert "compute" not in plain.json()["entity"]
    credentials = with_credentials.json()["entity"]["storage"]["properties"]["credentials"]
    assert set(credentials["editor"]) == {"access_key_id", "secret_access_key"}


async def test_space_details(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/spaces/s-1")
    assert response.status_code == 200
    assert response.json()["metadata"]["id"] == "s-1"
    assert response.json()["entity"]["storage"]["type"] == "bmcos_object_storage"


@pytest.mark.parametrize("path", ["/v2/projects/other", "/v2/spaces/other"])
async def test_unknown_project_or_space_is_forbidden(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 403
    assert error_code(response) == "forbidden"


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"version": VERSION, "project_id": "other"}, 403, "forbidden"),
        ({"version": VERSION, "space_id": "other"}, 403, "forbidden"),
        ({"version": VERSION}, 400, "missing_scope"),
        ({"version": VERSION, "project_id": "p-1", "space_id": "s-1"}, 400, "invalid_request"),
        ({"project_id": "p-1"}, 400, "missing_version"),
        ({"version": "yesterday", "project_id": "p-1"}, 400, "invalid_version"),
    ],
)
async def test_ml_requests_need_a_version_and_a_known_scope(
    client: httpx.AsyncClient, params: dict[str, str], status: int, code: str
) -> None:
    response = await client.get("/ml/v4/trainings", params=params)
    assert response.status_code == status
    assert error_code(response) == code


async def test_a_space_scope_works_and_sees_only_its_own_objects(
    client: httpx.AsyncClient,
) -> None:
    in_space = await client.get("/ml/v4/trainings", params={"version": VERSION, "space_id": "s-1"})
    assert in_space.status_code == 200
    assert in_space.json()["resources"] == []


async def test_platform_endpoints_take_version_optionally(client: httpx.AsyncClient) -> None:
    without = await client.get("/v2/assets/nope", params={"project_id": "p-1"})
    assert without.status_code == 404
    assert error_code(without) == "asset_not_found"


async def test_unknown_paths_and_methods(client: httpx.AsyncClient) -> None:
    missing = await client.get("/ml/v4/nothing", params=SCOPE)
    wrong_method = await client.put("/ml/v4/trainings", params=SCOPE)
    assert (missing.status_code, error_code(missing)) == (404, "not_found")
    assert (wrong_method.status_code, error_code(wrong_method)) == (405, "method_not_allowed")


async def test_every_response_has_a_fresh_trace_id(client: httpx.AsyncClient) -> None:
    first = await client.get("/v2/projects/p-1")
    second = await client.get("/v2/projects/p-1")
    assert first.headers["x-global-transaction-id"] != second.headers["x-global-transaction-id"]


async def test_fine_tunings_and_prompt_templates_are_not_found(client: httpx.AsyncClient) -> None:
    fine = await client.get("/ml/v1/fine_tunings", params={**SCOPE, "limit": "1"})
    prompt = await client.get("/wx/v1/prompts/x", params={"project_id": "p-1", "prompt_id": "x"})
    assert fine.status_code == 404
    assert prompt.status_code == 404


async def test_tunable_model_filter_as_the_official_sdk_sends_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/ml/v1/foundation_model_specs",
        params={
            **SCOPE,
            "filters": "function_prompt_tune_trainable,!lifecycle_withdrawn:and",
            "limit": "200",
        },
    )
    assert response.status_code == 200
    resources = response.json()["resources"]
    assert [spec["model_id"] for spec in resources] == [
        "ibm/granite-13b-instruct-v2",
        "google/flan-t5-xl",
    ]
    granite = resources[0]
    assert {"id": "prompt_tune_trainable"} in granite["functions"]
    assert {"id": "text_generation"} in granite["functions"]
    assert granite["lifecycle"][0]["id"] == "available"
    assert granite["label"]
    assert granite["provider"] == "IBM"
    flan_states = [entry["id"] for entry in resources[1]["lifecycle"]]
    assert flan_states == ["available", "deprecated"]
    assert "next" not in response.json()


GRANITE, FLAN, GRANITE_3 = "granite-13b-instruct-v2", "flan-t5-xl", "granite-3-8b-instruct"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (None, {GRANITE, FLAN, GRANITE_3, "old"}),
        ("!lifecycle_withdrawn", {GRANITE, FLAN, GRANITE_3}),
        ("lifecycle_deprecated", {FLAN}),
        ("provider_google,modelid_ibm/granite-3-8b-instruct", {FLAN, GRANITE_3}),
        ("function_prompt_tune_trainable,provider_IBM:and", {GRANITE, "old"}),
        ("function_prompt_tune_trainable,provider_IBM:or", {GRANITE, "old", FLAN, GRANITE_3}),
        ("task_classification,!function_prompt_tune_trainable:and", {GRANITE_3}),
    ],
)
async def test_model_spec_filters(
    fake: FakeWatsonx, client: httpx.AsyncClient, filters: str | None, expected: set[str]
) -> None:
    fake.models.append(
        FakeModel("ibm/old", lifecycle={"available": "2020-01-01", "withdrawn": "2021-01-01"})
    )
    params = {"version": VERSION} | ({"filters": filters} if filters else {})
    response = await client.get("/ml/v1/foundation_model_specs", params=params)
    assert {spec["model_id"].split("/")[1] for spec in response.json()["resources"]} == expected


async def test_an_unknown_filter_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/ml/v1/foundation_model_specs", params={"version": VERSION, "filters": "colour_blue"}
    )
    assert response.status_code == 400
    assert "colour_blue" in error_message(response)


async def test_model_specs_pagination_follows_next_href(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    fake.models = [FakeModel(f"ibm/model-{n}") for n in range(5)]
    seen: list[str] = []
    response = await client.get(
        "/ml/v1/foundation_model_specs", params={"version": VERSION, "limit": "2"}
    )
    pages = 1
    while "next" in response.json():
        seen += [spec["model_id"] for spec in response.json()["resources"]]
        next_href = response.json()["next"]["href"]
        assert next_href.startswith("http")
        assert "version=" in next_href
        response = await client.get(next_href)
        pages += 1
    seen += [spec["model_id"] for spec in response.json()["resources"]]
    assert seen == [f"ibm/model-{n}" for n in range(5)]
    assert pages == 3
    assert response.json()["total_count"] == 5


@pytest.mark.parametrize("limit", ["0", "201", "many"])
async def test_limit_out_of_range_is_a_400(client: httpx.AsyncClient, limit: str) -> None:
    response = await client.get(
        "/ml/v1/foundation_model_specs", params={"version": VERSION, "limit": limit}
    )
    assert response.status_code == 400


async def test_tasks_list_matches_the_official_enum(client: httpx.AsyncClient) -> None:
    response = await client.get("/ml/v1/foundation_model_tasks", params={"version": "2023-09-30"})
    tasks = {task["task_id"]: task["label"] for task in response.json()["resources"]}
    enum_names = {label.upper().replace(" ", "_").replace("-", "_") for label in tasks.values()}
    assert set(tasks) == {
        "question_answering",
        "summarization",
        "retrieval_augmented_generation",
        "classification",
        "generation",
        "code",
        "extraction",
    }
    assert "CODE_GENERATION_AND_CONVERSION" in enum_names
    assert "CLASSIFICATION" in enum_names


async def test_the_app_also_runs_in_process_without_a_server(fake: FakeWatsonx) -> None:
    transport = httpx.ASGITransport(app=fake.app)
    headers = {"Authorization": f"Bearer {fake.issue_token()}"}
    async with http_client(
        transport=transport, base_url="https://fake.test", headers=headers
    ) as http:
        response = await http.get("/ml/v1/foundation_model_specs", params={"version": VERSION})
    assert response.status_code == 200
    assert response.json()["first"]["href"].startswith("https://fake.test/")


async def test_https_with_the_test_ca(fake: FakeWatsonx) -> None:
    with fake.serve(tls=True) as server:
        assert server.url.startswith("https://")
        async with http_client(verify=server.client_ssl_context()) as http:
            response = await http.get(
                server.url + "/v2/projects/p-1",
                headers={"Authorization": f"Bearer {fake.issue_token()}"},
            )
    assert response.status_code == 200
    assert response.json()["entity"]["storage"]["properties"]["endpoint_url"].startswith(server.url)
