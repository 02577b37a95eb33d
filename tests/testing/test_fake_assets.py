"""Data assets: the four-step upload, download, search, deletion, and half-made assets."""

from __future__ import annotations

import httpx
import pytest

from granite_tuner.testing import FakeWatsonx

from .workflow import SCOPE, TRAINING_DATA, error_code, http_client, upload_asset

pytestmark = pytest.mark.anyio


async def test_the_four_step_upload(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    asset_id, attachment_id, url1 = await upload_asset(client)

    assert url1.startswith(str(client.base_url).rstrip("/") + "/_fake_cos/")
    asset = fake.assets[asset_id]
    assert asset.completed
    assert asset.data == TRAINING_DATA
    assert asset.container.id == "p-1"
    assert [a.id for a in asset.attachments] == [attachment_id]


async def test_create_response_has_what_the_official_sdk_requires(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v2/assets",
        params={**SCOPE, "duplicate_action": "IGNORE"},
        json={
            "metadata": {"name": "x.json", "description": "", "asset_type": "data_asset",
                         "origin_country": "us", "asset_category": "USER"},
            "entity": {"data_asset": {"mime_type": "application/json"}},
        },
    )  # fmt: skip
    assert response.status_code == 201
    body = response.json()
    metadata = body["metadata"]
    assert metadata["asset_type"] == "data_asset"
    assert metadata["project_id"] == "p-1"
    assert metadata["created_at"].endswith("Z")
    assert metadata["usage"]["last_updated_at"]
    assert body["href"] == f"/v2/assets/{metadata['asset_id']}?project_id=p-1"
    assert body["entity"] == {"data_asset": {"mime_type": "application/json"}}


async def test_asset_and_attachment_details_and_download(client: httpx.AsyncClient) -> None:
    asset_id, attachment_id, _ = await upload_asset(client)

    details = await client.get(f"/v2/assets/{asset_id}", params=SCOPE)
    attachment = await client.get(
        f"/v2/assets/{asset_id}/attachments/{attachment_id}", params=SCOPE
    )
    async with http_client() as bare:
        download = await bare.get(attachment.json()["url"])

    assert details.json()["attachments"][0]["id"] == attachment_id
    assert details.json()["metadata"]["size"] == len(TRAINING_DATA)
    assert "connection_id" not in attachment.json()
    assert attachment.json()["complete"] is True
    assert download.status_code == 200
    assert download.content == TRAINING_DATA


async def test_a_half_made_asset_is_listed_but_cannot_be_trained_on(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    asset_id, _, _ = await upload_asset(client, complete=False)
    assert asset_id in fake.assets
    assert not fake.assets[asset_id].completed
    assert fake.assets[asset_id].data is None


async def test_completing_without_an_upload_is_a_400(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/v2/assets", params=SCOPE, json={"metadata": {"name": "a"}, "entity": {}}
    )
    asset_id = created.json()["metadata"]["asset_id"]
    attachment = await client.post(f"/v2/assets/{asset_id}/attachments", params=SCOPE, json={})
    attachment_id = attachment.json()["attachment_id"]
    done = await client.post(
        f"/v2/assets/{asset_id}/attachments/{attachment_id}/complete", params=SCOPE
    )
    assert done.status_code == 400
    assert error_code(done) == "upload_missing"


async def test_the_upload_url_needs_its_signature(client: httpx.AsyncClient) -> None:
    _, _, url1 = await upload_asset(client)
    forged = url1.split("?")[0] + "?signature=0000"
    async with http_client() as bare:
        assert (await bare.put(forged, content=b"x")).status_code == 403
        assert (await bare.get(forged)).status_code == 403


async def test_delete_removes_the_asset(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    asset_id, _, _ = await upload_asset(client)
    deleted = await client.delete(
        f"/v2/assets/{asset_id}", params={**SCOPE, "purge_on_delete": "true"}
    )
    again = await client.get(f"/v2/assets/{asset_id}", params=SCOPE)
    assert deleted.status_code == 204
    assert again.status_code == 404
    assert fake.assets == {}


async def test_an_asset_is_invisible_from_another_scope(client: httpx.AsyncClient) -> None:
    asset_id, _, _ = await upload_asset(client)
    response = await client.get(f"/v2/assets/{asset_id}", params={"space_id": "s-1"})
    assert response.status_code == 404


async def test_duplicate_action_reject(client: httpx.AsyncClient) -> None:
    await upload_asset(client)
    response = await client.post(
        "/v2/assets",
        params={**SCOPE, "duplicate_action": "REJECT"},
        json={"metadata": {"name": "train.jsonl", "asset_type": "data_asset"}},
    )
    assert response.status_code == 409


@pytest.mark.parametrize(
    "body", [{}, {"metadata": {"name": ""}}, {"metadata": {"name": "a", "asset_type": "folder"}}]
)
async def test_invalid_asset_bodies(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    response = await client.post("/v2/assets", params=SCOPE, json=body)
    assert response.status_code == 400


async def test_a_body_that_is_not_json_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/assets", params=SCOPE, content=b"{nope")
    assert response.status_code == 400
    assert error_code(response) == "json_parse_error"


async def test_search_by_exact_name(client: httpx.AsyncClient) -> None:
    wanted, _, _ = await upload_asset(client)
    other = await client.post(
        "/v2/assets", params=SCOPE, json={"metadata": {"name": "other.jsonl"}}
    )

    by_name = await client.post(
        "/v2/asset_types/data_asset/search",
        params=SCOPE,
        json={"query": "asset.name:train.jsonl", "limit": 10},
    )
    everything = await client.post(
        "/v2/asset_types/data_asset/search", params=SCOPE, json={"query": "*:*"}
    )
    limited = await client.post(
        "/v2/asset_types/data_asset/search", params=SCOPE, json={"query": "*:*", "limit": 1}
    )

    assert by_name.json()["total_rows"] == 1
    assert by_name.json()["results"][0]["metadata"]["asset_id"] == wanted
    assert everything.json()["total_rows"] == 2
    assert other.json()["metadata"]["asset_id"] in {
        r["metadata"]["asset_id"] for r in everything.json()["results"]
    }
    assert len(limited.json()["results"]) == 1
    assert limited.json()["total_rows"] == 2


async def test_search_rejects_queries_it_does_not_understand(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v2/asset_types/data_asset/search", params=SCOPE, json={"query": "asset.size>3"}
    )
    assert response.status_code == 400
