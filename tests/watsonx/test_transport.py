"""Wire-level behaviour of the client, checked with httpx.MockTransport (no sockets)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from granite_tuner import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    UnexpectedResponseError,
    WatsonxClient,
)
from granite_tuner._retry import parse_retry_after
from granite_tuner.backends.watsonx import _endpoints as endpoints
from granite_tuner.backends.watsonx._endpoints import API_VERSION

pytestmark = pytest.mark.anyio

TOKEN = "eyJhbGciOiJub25lIn0.eyJleHAiOjk5OTk5OTk5OTl9.sig-abcdefgh"
FAST = RetryPolicy(initial_backoff=0.0, max_backoff=0.0, max_attempts=4)
Handler = Callable[[httpx.Request], httpx.Response]


def make_client(
    handler: Handler, *, space: bool = False, retry: RetryPolicy = FAST
) -> WatsonxClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return WatsonxClient(
        url="https://us-south.ml.cloud.ibm.com",
        token=TOKEN,
        retry=retry,
        http_client=http,
        project_id=None if space else "p-1",
        space_id="s-1" if space else None,
    )


def training_json(training_id: str = "t-1", state: str = "queued") -> dict[str, Any]:
    return {
        "metadata": {"id": training_id, "name": "run", "tags": ["prompt_tuning"]},
        "entity": {"status": {"state": state}, "prompt_tuning": {"base_model": {"model_id": "m"}}},
    }


def error_json(status: int, code: str, message: str) -> dict[str, Any]:
    return {
        "trace": "trace-123",
        "errors": [{"code": code, "message": message}],
        "status_code": status,
    }


async def test_each_endpoint_gets_host_version_and_scope_where_the_protocol_puts_them() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path == "/ml/v4/trainings" and request.method == "POST":
            return httpx.Response(201, json=training_json())
        if path.endswith("/text/generation"):
            return httpx.Response(200, json={"results": [{"generated_text": "1"}]})
        if path == "/ml/v4/deployments" and request.method == "POST":
            body = {"metadata": {"id": "d-1"}, "entity": {"status": {"state": "initializing"}}}
            return httpx.Response(202, json=body)
        return httpx.Response(200, json={"resources": []})

    async with make_client(handler) as client:
        await client.trainings.create(
            name="n", base_model="m", task_id="classification", data_asset_id="a"
        )
        await client.generation.generate("hi", model_id="m")
        await client.generation.generate("hi", deployment_id="d-1")
        await client.deployments.create(model_id="m-1", name="dep")
        await client.foundation_models.list(prompt_tunable=True)

    create, base_gen, dep_gen, dep_create, specs = seen
    assert create.url.host == "us-south.ml.cloud.ibm.com"
    assert dict(create.url.params) == {"version": API_VERSION}
    assert json.loads(create.content)["project_id"] == "p-1"
    assert dict(base_gen.url.params) == {"version": API_VERSION}
    assert json.loads(base_gen.content)["project_id"] == "p-1"
    assert dict(dep_gen.url.params) == {"version": API_VERSION}
    assert "project_id" not in json.loads(dep_gen.content)
    assert dep_create.url.params["project_id"] == "p-1"
    assert json.loads(dep_create.content)["project_id"] == "p-1"
    assert specs.url.params["filters"] == "function_prompt_tune_trainable,!lifecycle_withdrawn:and"
    assert specs.url.params["project_id"] == "p-1"
    for request in seen:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"


async def test_space_scope_and_platform_host_for_assets() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"metadata": {"asset_id": "a-1", "name": "train.jsonl"}})

    async with make_client(handler, space=True) as client:
        asset = await client.assets.get("a-1")
    assert asset.id == "a-1"
    assert asset.href == "/v2/assets/a-1"
    assert seen[0].url.host == "api.dataplatform.cloud.ibm.com"
    assert seen[0].url.params["space_id"] == "s-1"
    assert "project_id" not in seen[0].url.params


async def test_pagination_follows_next_href() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        start = request.url.params.get("start")
        if start is None:
            return httpx.Response(
                200,
                json={
                    "resources": [training_json("t-1")],
                    "next": {"href": "/ml/v4/trainings?start=cursor2&limit=1&version=x"},
                },
            )
        assert start == "cursor2"
        assert request.url.params["version"] == API_VERSION
        return httpx.Response(200, json={"resources": [training_json("t-2")]})

    async with make_client(handler) as client:
        runs = await client.trainings.list()
    assert [r.id for r in runs] == ["t-1", "t-2"]


async def test_equal_query_values_of_other_types_are_sent_as_their_own_text() -> None:
    # The transport reuses each call's parsed URL; 1, 1.0 and True are equal as dict keys.
    async with make_client(lambda request: httpx.Response(200, json={})) as client:
        targets = [
            client._transport._target("https://x.test/a", {"limit": value})
            for value in (1, True, 1.0, 1)
        ]
    assert [t.params["limit"] for t in targets] == ["1", "true", "1.0", "1"]
    assert targets[3] is targets[0]  # the same call again: the cached URL


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (429, RateLimitError),
        (503, ServerError),
    ],
)
async def test_status_errors_are_typed_and_carry_the_parsed_body(
    status: int, error_type: type[Exception]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=error_json(status, "some_code", "Something is off"))

    async with make_client(handler) as client:
        with pytest.raises(error_type) as info:
            await client.trainings.get("t-1")
    error = info.value
    assert isinstance(
        error,
        (
            BadRequestError,
            AuthenticationError,
            PermissionDeniedError,
            NotFoundError,
            RateLimitError,
            ServerError,
        ),
    )
    assert error.status_code == status
    assert error.trace == "trace-123"
    assert error.codes == ("some_code",)
    assert "Something is off" in str(error)
    assert "trace-123" in str(error)


async def test_transient_errors_are_retried_then_succeed() -> None:
    answers = [
        httpx.Response(503, json=error_json(503, "busy", "Try later")),
        httpx.Response(429, json=error_json(429, "rate_limit", "Slow down")),
        httpx.Response(200, content=b'{"metadata": '),  # malformed body
        httpx.Response(200, json=training_json()),
    ]
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return answers.pop(0)

    async with make_client(handler) as client:
        training = await client.trainings.get("t-1")
    assert training.id == "t-1"
    assert calls == 4


async def test_retry_budget_ends_in_a_typed_error() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(502, text="Bad gateway")

    async with make_client(handler) as client:
        with pytest.raises(ServerError) as info:
            await client.trainings.get("t-1")
    assert calls == FAST.max_attempts
    assert "Bad gateway" in str(info.value)


async def test_malformed_body_after_the_budget_is_an_unexpected_response() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"results": []})

    async with make_client(handler) as client:
        with pytest.raises(UnexpectedResponseError, match="does not match the protocol"):
            await client.generation.generate("x", model_id="m")


async def test_a_create_that_may_have_landed_is_looked_up_not_repeated() -> None:
    created: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            created.append(body)
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        tag = request.url.params["tag.value"]
        assert tag.startswith("granite-tuner.request.")
        matching = [training_json(f"t-{i}") for i, b in enumerate(created) if tag in b["tags"]]
        return httpx.Response(200, json={"resources": matching})

    async with make_client(handler) as client:
        training = await client.trainings.create(
            name="n", base_model="m", task_id="classification", data_asset_id="a"
        )
    assert training.id == "t-0"
    assert len(created) == 1


async def test_a_create_is_repeated_only_after_the_lookup_finds_nothing() -> None:
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        if request.method == "POST":
            posts += 1
            if posts == 1:
                return httpx.Response(503, json=error_json(503, "busy", "Try later"))
            return httpx.Response(201, json=training_json("t-9"))
        return httpx.Response(200, json={"resources": []})

    async with make_client(handler) as client:
        training = await client.trainings.create(
            name="n", base_model="m", task_id="classification", data_asset_id="a"
        )
    assert training.id == "t-9"
    assert posts == 2


async def test_a_non_create_post_without_lookup_is_never_repeated_after_an_ambiguous_failure() -> (
    None
):
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        posts += 1
        raise httpx.ReadTimeout("timed out")

    async with make_client(handler) as client:
        with pytest.raises(APITimeoutError) as info:
            await client._transport.request_json(
                "POST",
                endpoints.ASSETS,
                json={},
                parse=lambda body: body,
                operation="Creating something",
            )
    assert posts == 1
    assert info.value.may_have_been_processed


async def test_connect_errors_are_retried_even_for_creates() -> None:
    attempts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(201, json=training_json("t-3"))

    async with make_client(handler) as client:
        training = await client.trainings.create(
            name="n", base_model="m", task_id="classification", data_asset_id="a"
        )
    assert training.id == "t-3"
    assert attempts == 3


async def test_connection_failure_after_budget_is_typed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async with make_client(handler) as client:
        with pytest.raises(APIConnectionError, match="could not connect"):
            await client.trainings.get("t-1")


async def test_a_deleted_object_after_a_lost_delete_answer_counts_as_deleted() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ReadError("connection reset")
        return httpx.Response(404, json=error_json(404, "training_not_found", "gone"))

    async with make_client(handler) as client:
        await client.trainings.delete("t-1")
    assert calls == 2


async def test_a_plain_404_on_delete_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json=error_json(404, "training_not_found", "no such training"))

    async with make_client(handler) as client:
        with pytest.raises(NotFoundError, match="no such training"):
            await client.trainings.delete("t-1")


async def test_cancel_of_a_finished_training_is_not_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        message = "Job already completed with state completed"
        return httpx.Response(400, json=error_json(400, "invalid_request", message))

    async with make_client(handler) as client:
        await client.trainings.cancel("t-1")


async def test_retry_after_over_the_cap_is_raised_at_once(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(429, headers={"Retry-After": "3600"}, json=error_json(429, "x", "y"))

    async with make_client(handler) as client:
        with pytest.raises(RateLimitError) as info:
            await client.generation.generate("x", model_id="m")
    assert calls == 1
    assert info.value.retry_after == 3600


async def test_retry_after_is_the_wait_chosen(caplog: pytest.LogCaptureFixture) -> None:
    answers = [
        httpx.Response(429, headers={"retry-after-ms": "10"}, json=error_json(429, "x", "y")),
        httpx.Response(200, json={"results": [{"generated_text": "ok"}]}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    caplog.set_level(logging.INFO, logger="granite_tuner")
    async with make_client(handler, retry=RetryPolicy(initial_backoff=5.0)) as client:
        result = await client.generation.generate("x", model_id="m")
    assert result.text == "ok"
    assert any("in 0.01 s" in r.getMessage() for r in caplog.records)


async def test_generation_answers_feed_the_rate_headers_to_the_limiter() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"x-requests-limit-rate": "4", "x-requests-limit-remaining": "oops"}
        return httpx.Response(200, headers=headers, json={"results": [{"generated_text": "1"}]})

    async with make_client(handler) as client:
        await client.generation.generate("x", model_id="m")
        limiter = client.rate_limiter
        assert limiter._learner.rate_header == 4.0  # a stated rate is held to...
        assert limiter._learner.estimate is None  # ...and an unreadable figure ignored
        assert limiter.sent_times()
        assert limiter.current_rate is not None
        assert limiter.current_rate <= 4.0


def test_retry_after_formats() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert (
        parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
        == 10.0
    )
    assert (
        parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412490.0) == 0.0
    )
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=4.0, jitter=0.25)
    for retry_number, full in [(1, 1.0), (2, 2.0), (3, 4.0), (8, 4.0)]:
        for _ in range(20):
            assert full * 0.75 <= policy.backoff(retry_number) <= full
