"""What the fake records and how tests read it: requests, counts, snapshots, knobs."""

from __future__ import annotations

import httpx
import pytest

from granite_tuner.testing import FakeWatsonx, Fault, ServerHandle

from .workflow import SCOPE, VERSION, create_training, http_client, upload_asset

pytestmark = pytest.mark.anyio


async def test_every_request_is_recorded_in_arrival_order(
    fake: FakeWatsonx, server: ServerHandle, client: httpx.AsyncClient
) -> None:
    fake.rate_limit, fake.rate_limit_burst = 0.01, 1
    fake.faults.add(Fault("drop_before", path="^/v2/spaces/"))
    async with http_client(base_url=server.url) as anonymous:
        await anonymous.post(
            "/identity/token",
            data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": "k"},
        )
        await anonymous.get("/v2/projects/p-1")  # no token: 401
    await upload_asset(client)
    with pytest.raises(httpx.TransportError):
        await client.get("/v2/spaces/s-1")
    for _ in range(2):
        await client.post(
            "/ml/v1/text/generation",
            params={"version": VERSION},
            json={"model_id": "ibm/granite-13b-instruct-v2", "input": "x", "project_id": "p-1"},
        )

    summary = [(r.method, r.path.split("/")[1], r.status, r.fault) for r in fake.requests]
    assert summary == [
        ("POST", "identity", 200, None),
        ("GET", "v2", 401, None),
        ("POST", "v2", 201, None),
        ("POST", "v2", 201, None),
        ("PUT", "_fake_cos", 200, None),
        ("POST", "v2", 200, None),
        ("GET", "v2", None, "drop_before"),
        ("POST", "ml", 200, None),
        ("POST", "ml", 429, None),
    ]
    times = [r.received_at for r in fake.requests]
    assert times == sorted(times)
    # An answer's time is recorded once it is ready; a dropped request has none.
    for r in fake.requests:
        if r.status is None:
            assert r.answered_at is None
        else:
            assert r.answered_at is not None
            assert r.answered_at >= r.received_at


async def test_a_recorded_request_keeps_headers_query_and_body(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    await client.post(
        "/v2/assets",
        params={**SCOPE, "duplicate_action": "IGNORE"},
        json={"metadata": {"name": "n"}},
        headers={"X-Custom": "Yes"},
    )
    (recorded,) = fake.requests
    assert recorded.method == "POST"
    assert recorded.path == "/v2/assets"
    assert recorded.query == {
        "version": [VERSION],
        "project_id": ["p-1"],
        "duplicate_action": ["IGNORE"],
    }
    assert recorded.headers["x-custom"] == "Yes"
    assert recorded.headers["authorization"].startswith("Bearer ")
    assert recorded.json() == {"metadata": {"name": "n"}}
    assert recorded.body == b'{"metadata":{"name":"n"}}'


async def test_upload_bytes_are_recorded(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    await upload_asset(client, data=b"\x00raw bytes")
    (put,) = [r for r in fake.requests if r.method == "PUT"]
    assert put.body == b"\x00raw bytes"
    assert "authorization" not in put.headers


async def test_count(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    asset_id, _, _ = await upload_asset(client)
    training_id = await create_training(client, asset_id)
    for _ in range(3):
        await client.get(f"/ml/v4/trainings/{training_id}", params=SCOPE)

    assert fake.count("GET", r"^/ml/v4/trainings/[^/]+$") == 3
    assert fake.count("get", "/trainings") == 3
    assert fake.count("POST", r"^/ml/v4/trainings$") == 1
    assert fake.count("POST", "^/v2/assets") == 3
    assert fake.count("DELETE", ".") == 0


async def test_snapshots_are_copies(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    asset_id, _, _ = await upload_asset(client)
    training_id = await create_training(client, asset_id)

    fake.requests.clear()
    fake.assets[asset_id].name = "changed"
    fake.trainings[training_id].state = "failed"
    fake.trainings.clear()

    assert len(fake.requests) == 5
    assert fake.assets[asset_id].name == "train.jsonl"
    assert fake.trainings[training_id].state == "queued"


async def test_records_carry_their_wire_json(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    asset_id, _, _ = await upload_asset(client)
    training_id = await create_training(client, asset_id)
    listed = await client.get("/ml/v4/trainings", params=SCOPE)
    assert fake.trainings[training_id].wire() == listed.json()["resources"][0]
    details = await client.get(f"/v2/assets/{asset_id}", params=SCOPE)
    assert fake.assets[asset_id].wire() == details.json()
