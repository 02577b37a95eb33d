"""Text generation on a base model and on a deployment; answers, cut-offs, the rate limit."""

from __future__ import annotations

import httpx
import pytest

from granite_tuner.testing import FakeWatsonx, GenerationCall, default_answer

from .workflow import VERSION, create_deployment, error_code, ready_deployment, tuned_model

pytestmark = pytest.mark.anyio

BASE = "ibm/granite-13b-instruct-v2"


async def generate(
    client: httpx.AsyncClient, text: str, parameters: dict[str, object] | None = None
) -> httpx.Response:
    return await client.post(
        "/ml/v1/text/generation",
        params={"version": VERSION},
        json={"model_id": BASE, "input": text, "parameters": parameters or {}, "project_id": "p-1"},
    )


async def generate_on(
    client: httpx.AsyncClient, deployment: str, text: str, **parameters: object
) -> httpx.Response:
    return await client.post(
        f"/ml/v1/deployments/{deployment}/text/generation",
        params={"version": VERSION},
        json={"input": text, "parameters": parameters},
    )


async def test_default_answer_is_a_stable_binary_label(client: httpx.AsyncClient) -> None:
    inputs = [f"review number {n}" for n in range(20)]
    answers = [(await generate(client, text)).json() for text in inputs]

    texts = [a["results"][0]["generated_text"] for a in answers]
    assert set(texts) == {"0", "1"}
    assert texts == [default_answer(GenerationCall(t, None, None, {})) for t in inputs]
    first = answers[0]
    assert first["model_id"] == BASE
    assert first["created_at"].endswith("Z")
    result = first["results"][0]
    assert result["generated_token_count"] == 1
    assert result["input_token_count"] == 3
    assert result["stop_reason"] == "eos_token"
    assert result["seed"] == 0


async def test_a_custom_answer_sees_the_call(fake: FakeWatsonx, client: httpx.AsyncClient) -> None:
    calls: list[GenerationCall] = []

    def answer(call: GenerationCall) -> str:
        calls.append(call)
        return "the dog was very happy today"

    fake.answer = answer
    deployment_id = await ready_deployment(client, fake, serving_name="groomer")

    on_base = await generate(client, "hello", {"max_new_tokens": 20})
    on_deployment = await generate_on(client, "groomer", "hi", max_new_tokens=3)

    assert on_base.json()["results"][0]["generated_text"] == "the dog was very happy today"
    assert on_base.json()["results"][0]["generated_token_count"] == 6
    assert on_deployment.json()["results"][0]["generated_text"] == "the dog was"
    assert on_deployment.json()["results"][0]["stop_reason"] == "max_tokens"
    assert on_deployment.json()["model_id"] == BASE
    assert calls == [
        GenerationCall("hello", BASE, None, {"max_new_tokens": 20}),
        GenerationCall("hi", None, deployment_id, {"max_new_tokens": 3}),
    ]


@pytest.mark.parametrize(
    ("parameters", "text", "reason"),
    [
        ({"stop_sequences": ["\n"]}, "first line\n", "stop_sequence"),
        ({"stop_sequences": ["\n"], "include_stop_sequence": False}, "first line", "stop_sequence"),
        ({"stop_sequences": ["line", "sec"]}, "first line", "stop_sequence"),
        ({"stop_sequences": ["zzz"]}, "first line\nsecond line", "eos_token"),
        ({"max_new_tokens": 1, "stop_sequences": ["second"]}, "first", "max_tokens"),
        ({"max_new_tokens": 3, "stop_sequences": ["\n"]}, "first line\n", "stop_sequence"),
    ],
)
async def test_stop_sequences_and_max_new_tokens(
    fake: FakeWatsonx,
    client: httpx.AsyncClient,
    parameters: dict[str, object],
    text: str,
    reason: str,
) -> None:
    fake.answer = lambda call: "first line\nsecond line"
    result = (await generate(client, "x", parameters)).json()["results"][0]
    assert result["generated_text"] == text
    assert result["stop_reason"] == reason


async def test_return_options_input_text_and_random_seed(client: httpx.AsyncClient) -> None:
    response = await generate(
        client, "abc", {"return_options": {"input_text": True}, "random_seed": 42}
    )
    result = response.json()["results"][0]
    assert result["input_text"] == "abc"
    assert result["seed"] == 42


@pytest.mark.parametrize("model_id", ["ibm/nope", None])
async def test_unknown_models_are_not_supported(
    client: httpx.AsyncClient, model_id: str | None
) -> None:
    response = await client.post(
        "/ml/v1/text/generation",
        params={"version": VERSION},
        json={"model_id": model_id, "input": "x", "project_id": "p-1"},
    )
    assert response.status_code == 404
    assert error_code(response) == "model_not_supported"


async def test_base_generation_needs_scope_and_input(client: httpx.AsyncClient) -> None:
    no_scope = await client.post(
        "/ml/v1/text/generation", params={"version": VERSION}, json={"model_id": BASE, "input": "x"}
    )
    no_input = await client.post(
        "/ml/v1/text/generation",
        params={"version": VERSION},
        json={"model_id": BASE, "project_id": "p-1"},
    )
    assert no_scope.status_code == 400
    assert no_input.status_code == 400


async def test_deployment_must_exist_and_be_ready(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    missing = await generate_on(client, "nobody", "x")
    created = await create_deployment(client, await tuned_model(client, fake), "not_yet")
    not_ready = await generate_on(client, created.json()["metadata"]["id"], "x")

    assert missing.status_code == 404
    assert error_code(missing) == "deployment_not_found"
    assert not_ready.status_code == 400
    assert error_code(not_ready) == "deployment_not_ready"


async def test_rate_limit_answers_429_past_the_burst(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    # A rate so low that no token comes back during the test: deterministic.
    fake.rate_limit = 0.01
    fake.rate_limit_burst = 3

    responses = [await generate(client, f"x{n}") for n in range(4)]

    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["x-requests-limit-remaining"] for r in responses] == ["2", "1", "0", "0"]
    limited = responses[-1]
    assert error_code(limited) == "rate_limit_exceeded"
    assert int(limited.headers["retry-after"]) >= 1
    assert fake.count("POST", "/text/generation$") == 4


async def test_the_limit_is_shared_by_both_endpoints_and_retry_after_is_optional(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    deployment_id = await ready_deployment(client, fake)
    fake.rate_limit = 0.01
    fake.rate_limit_burst = 1
    fake.send_retry_after = False

    first = await generate_on(client, deployment_id, "x")
    second = await generate(client, "y")

    assert first.status_code == 200
    assert second.status_code == 429
    assert "retry-after" not in second.headers
    assert second.headers["x-requests-limit-remaining"] == "0"


async def test_default_burst_is_the_rate_rounded_up(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    fake.rate_limit = 1.5  # a burst of 2; refilling 1.5 per second
    statuses = [(await generate(client, "x")).status_code for _ in range(2)]
    fake.rate_limit = 0.01  # changing the limit refills the bucket: 1 token
    statuses += [(await generate(client, "x")).status_code for _ in range(2)]
    assert statuses == [200, 200, 200, 429]


async def test_no_limit_headers_without_a_limit(client: httpx.AsyncClient) -> None:
    response = await generate(client, "x")
    assert "x-requests-limit-remaining" not in response.headers


async def test_generation_latency_still_answers(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    fake.generation_latency = 0.01
    assert (await generate(client, "x")).status_code == 200


async def test_concurrent_requests_are_all_answered_and_recorded(
    fake: FakeWatsonx, client: httpx.AsyncClient
) -> None:
    import anyio

    fake.generation_latency = 0.01
    statuses: list[int] = []

    async def one(n: int) -> None:
        statuses.append((await generate(client, f"prompt {n}")).status_code)

    async with anyio.create_task_group() as group:
        for n in range(20):
            group.start_soon(one, n)

    assert statuses == [200] * 20
    recorded = {r.json()["input"] for r in fake.requests if r.path == "/ml/v1/text/generation"}
    assert recorded == {f"prompt {n}" for n in range(20)}
