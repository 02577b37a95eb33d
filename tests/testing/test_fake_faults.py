"""Injected faults: each action, and which requests a rule hits."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from granite_tuner.testing import FakeWatsonx, Fault, ServerHandle

from .workflow import SCOPE, error_code, http_client

pytestmark = pytest.mark.anyio

NEW_ASSET = {"metadata": {"name": "a.jsonl", "asset_type": "data_asset"}}


async def create_asset(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/v2/assets", params=SCOPE, json=NEW_ASSET)


async def test_status_answers_without_handling(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    fake.faults.add(Fault("status", method="POST", path="^/v2/assets$", retry_after="2"))

    response = await create_asset(client)

    assert response.status_code == 503
    assert error_code(response) == "service_unavailable"
    assert response.headers["retry-after"] == "2"
    assert fake.assets == {}
    (recorded,) = fake.requests
    assert (recorded.status, recorded.fault) == (503, "status")


async def test_status_with_an_http_date_retry_after_and_another_code(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    fake.faults.add(Fault("status", status=429, retry_after=date))
    response = await client.get("/v2/projects/p-1")
    assert response.status_code == 429
    assert error_code(response) == "rate_limit_exceeded"
    assert response.headers["retry-after"] == date


async def test_drop_before_closes_without_handling(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    fake.faults.add(Fault("drop_before", method="POST"))

    with pytest.raises(httpx.TransportError):
        await create_asset(client)

    assert fake.assets == {}
    (recorded,) = fake.requests
    assert (recorded.status, recorded.fault) == (None, "drop_before")
    assert (await create_asset(client)).status_code == 201  # times=1: the next one passes


async def test_drop_after_handles_then_loses_the_answer(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    fake.faults.add(Fault("drop_after", method="POST", path="^/v2/assets$"))

    with pytest.raises(httpx.TransportError):
        await create_asset(client)

    (asset,) = fake.assets.values()  # the state change happened
    assert asset.name == "a.jsonl"
    (recorded,) = fake.requests
    assert (recorded.status, recorded.fault) == (None, "drop_after")


async def test_delay_then_normal_handling(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    fake.faults.add(Fault("delay", delay=0.01))
    response = await create_asset(client)
    assert response.status_code == 201
    assert fake.requests[0].fault == "delay"


async def test_malformed_is_a_200_that_is_not_json(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    fake.faults.add(Fault("malformed", path="^/v2/assets$"))

    response = await create_asset(client)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert len(fake.assets) == 1  # handled


async def test_truncated_body_then_dropped(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    fake.faults.add(Fault("truncated", path="^/v2/projects/"))

    with pytest.raises(httpx.TransportError):
        await client.get("/v2/projects/p-1")

    (recorded,) = fake.requests
    assert (recorded.status, recorded.fault) == (200, "truncated")
    assert (await client.get("/v2/projects/p-1")).status_code == 200


async def test_truncated_response_declares_the_full_length(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    fake.faults.add(Fault("truncated", path="^/v2/projects/"))
    async with client.stream("GET", "/v2/projects/p-1") as response:
        declared = int(response.headers["content-length"])
        received: list[bytes] = []

        async def drain() -> None:
            async for chunk in response.aiter_raw():
                received.append(chunk)

        with pytest.raises(httpx.TransportError):
            await drain()
    assert 0 < len(b"".join(received)) < declared


async def test_slow_body_arrives_whole(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    fake.faults.add(Fault("slow_body", delay=0.01))
    response = await client.get("/v2/projects/p-1")
    assert response.status_code == 200
    assert response.json()["metadata"]["guid"] == "p-1"
    assert fake.requests[0].fault == "slow_body"


async def test_expire_token_hits_one_request_only(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    fake.faults.add(Fault("expire_token"))
    expired = await client.get("/v2/projects/p-1")
    fine = await client.get("/v2/projects/p-1")
    assert expired.status_code == 401
    assert error_code(expired) == "authentication_token_expired"
    assert fine.status_code == 200


async def test_faults_apply_to_iam_too(fake: FakeWatsonx, server: ServerHandle) -> None:
    fake.faults.add(Fault("status", path="^/identity/token$", status=500))
    form = {"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": "k"}
    async with http_client(base_url=server.url) as http:
        first = await http.post("/identity/token", data=form)
        second = await http.post("/identity/token", data=form)
    assert (first.status_code, second.status_code) == (500, 200)
    assert fake.iam_exchanges == 1


async def test_method_path_after_and_times(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    rule = fake.faults.add(Fault("status", method="get", path=r"/projects/", after=1, times=2))

    statuses = [(await client.get("/v2/projects/p-1")).status_code for _ in range(5)]
    other_path = await client.get("/v2/spaces/s-1")
    other_method = await create_asset(client)

    assert statuses == [200, 503, 503, 200, 200]
    assert other_path.status_code == 200
    assert other_method.status_code == 201
    assert rule.hits == 2


async def test_unlimited_times_and_clear(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    rule = fake.faults.add(Fault("status", status=502, times=None))
    statuses = [(await client.get("/v2/projects/p-1")).status_code for _ in range(3)]
    assert len(fake.faults) == 1
    assert list(fake.faults) == [rule]
    fake.faults.clear()
    statuses.append((await client.get("/v2/projects/p-1")).status_code)
    assert statuses == [502, 502, 502, 200]
    assert rule.hits == 3
    assert len(fake.faults) == 0


async def test_the_first_matching_rule_wins(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    first = fake.faults.add(Fault("status", status=500))
    second = fake.faults.add(Fault("status", status=504))
    statuses = [(await client.get("/v2/projects/p-1")).status_code for _ in range(3)]
    assert statuses == [500, 504, 200]
    assert (first.hits, second.hits) == (1, 1)


async def test_probability_is_seeded(client: httpx.AsyncClient) -> None:
    async def pattern(seed: int) -> list[int]:
        fake = FakeWatsonx(seed=seed)
        fake.faults.add(Fault("status", times=None, probability=0.5))
        with fake.serve() as server:
            headers = {"Authorization": f"Bearer {fake.issue_token()}"}
            async with http_client(base_url=server.url, headers=headers) as http:
                return [(await http.get("/v2/projects/p-1")).status_code for _ in range(20)]

    first, again, other = await pattern(3), await pattern(3), await pattern(4)
    assert first == again
    assert first != other
    assert {200, 503} == set(first)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"action": "explode"},
        {"action": "status", "probability": 1.5},
        {"action": "delay", "delay": -1.0},
        {"action": "status", "times": -1},
        {"action": "status", "path": "("},
    ],
)
def test_invalid_rules_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises((ValueError, re.error)):
        Fault(**kwargs)  # type: ignore[arg-type]
