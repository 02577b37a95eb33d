"""Contract: IBM's `ibm-watsonx-ai` SDK and `langchain-ibm`, unchanged, against `serve`.

Only the URL and the key differ from code written for watsonx.ai; every answer must be the
one the in-process `Deployment` gives for the same prompt with greedy decoding.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest

from granite_tuner.server import RunningServer
from tests.server.clients import GREEDY, MAX_TOKENS, PROMPTS, Expected, in_process_answers
from tests.server.conftest import API_KEY, RUN_NAMES, Served, Tls

pytestmark = pytest.mark.contract

CHAT = {"max_tokens": MAX_TOKENS, "temperature": 0}


@pytest.fixture(scope="module")
def expected(served_home: Served) -> Expected:
    return in_process_answers(served_home, [RUN_NAMES[0], RUN_NAMES[3]])


def deployment_id(server: RunningServer, name: str) -> str:
    registry = server.app.context.registry
    assert registry is not None
    served = registry.find(name)
    assert served is not None
    assert served.deployment is not None
    return served.deployment.id


def make_api_client(server: RunningServer, tls: Tls) -> Any:
    """IBM's client as a watsonx.ai user builds it; only the URLs and the key are ours."""
    from ibm_watsonx_ai import APIClient, Credentials

    credentials = Credentials(
        url=server.url,
        platform_url=server.url,
        api_key=API_KEY,
        auth_url=server.url + "/identity/token",
        verify=str(tls.ca),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return APIClient(credentials, space_id="local-space")


@pytest.fixture(scope="module")
def api_client(server: RunningServer, tls: Tls) -> Any:
    return make_api_client(server, tls)


@pytest.fixture
async def fresh_api_client(server: RunningServer, tls: Tls) -> AsyncIterator[Any]:
    """A client per async test: its async connections belong to that test's event loop.

    Closed before that loop ends: the SDK's async HTTP client otherwise closes itself when it
    is garbage-collected, by scheduling `aclose()` on whatever loop runs then (a later test's),
    where its connections' closed loop makes that later test fail.
    """
    client = make_api_client(server, tls)
    yield client
    await client.async_httpx_client.aclose()


@pytest.fixture(scope="module")
def model(server: RunningServer, api_client: Any) -> Any:
    from ibm_watsonx_ai.foundation_models import ModelInference

    return ModelInference(deployment_id=deployment_id(server, "fourth"), api_client=api_client)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# --- IBM's SDK ------------------------------------------------------------------------------


def test_sdk_lists_and_reads_the_deployments(server: RunningServer, api_client: Any) -> None:
    listed = api_client.deployments.get_details()["resources"]
    assert {d["entity"]["online"].get("parameters", {}).get("serving_name") for d in listed} == {
        "reviews_a", "reviews_b", "reviews_c", "fourth",
    }  # fmt: skip
    details = api_client.deployments.get_details(deployment_id(server, "fourth"))
    assert details["entity"]["status"]["state"] == "ready"
    specs = api_client.foundation_models.get_model_specs()["resources"]
    assert [spec["model_id"] for spec in specs] == ["tiny-model0"]


def test_sdk_generate(model: Any, expected: Expected) -> None:
    want = expected.answers[RUN_NAMES[3]]
    results = model.generate(prompt=PROMPTS, params=GREEDY)
    assert [r["results"][0]["generated_text"] for r in results] == [want[p] for p in PROMPTS]
    assert model.generate_text(prompt=PROMPTS[0], params=GREEDY) == want[PROMPTS[0]]


def test_sdk_generate_text_stream(model: Any, expected: Expected) -> None:
    for prompt in PROMPTS:
        pieces = list(model.generate_text_stream(prompt=prompt, params=GREEDY))
        assert "".join(pieces) == expected.answers[RUN_NAMES[3]][prompt]
        # An answer of several tokens streams in several pieces, not in one at the end.
        forced = {**GREEDY, "min_new_tokens": MAX_TOKENS}
        pieces = list(model.generate_text_stream(prompt=prompt, params=forced))
        assert len([p for p in pieces if p]) > 1


def test_sdk_chat(model: Any, expected: Expected) -> None:
    for prompt in PROMPTS:
        answer = model.chat(messages=user(prompt), params=CHAT)
        assert answer["choices"][0]["message"]["content"] == expected.answers[RUN_NAMES[3]][prompt]
        streamed = model.chat_stream(messages=user(prompt), params=CHAT)
        text = "".join(
            c["choices"][0]["delta"].get("content", "") for c in streamed if c["choices"]
        )
        assert text == expected.answers[RUN_NAMES[3]][prompt]


def test_sdk_base_model_generation(api_client: Any, expected: Expected) -> None:
    from ibm_watsonx_ai.foundation_models import ModelInference

    base = ModelInference(model_id="tiny-model0", api_client=api_client, project_id="any")
    assert (
        base.generate_text(prompt=PROMPTS[1], params=GREEDY) == expected.answers["base"][PROMPTS[1]]
    )


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SDK's async auth uses asyncio.Lock
async def test_sdk_async_variants(
    server: RunningServer, fresh_api_client: Any, expected: Expected
) -> None:
    from ibm_watsonx_ai.foundation_models import ModelInference

    model = ModelInference(
        deployment_id=deployment_id(server, "fourth"), api_client=fresh_api_client
    )
    want = expected.answers[RUN_NAMES[3]]
    for prompt in PROMPTS:
        result = await model.agenerate(prompt=prompt, params=GREEDY)
        assert result["results"][0]["generated_text"] == want[prompt]
        stream = await model.agenerate_stream(prompt=prompt, params=GREEDY)
        assert "".join([c["results"][0]["generated_text"] async for c in stream]) == want[prompt]
        answer = await model.achat(messages=user(prompt), params=CHAT)
        assert answer["choices"][0]["message"]["content"] == want[prompt]
        chunks = await model.achat_stream(messages=user(prompt), params=CHAT)
        text = "".join(
            [c["choices"][0]["delta"].get("content", "") async for c in chunks if c["choices"]]
        )
        assert text == want[prompt]


# --- langchain-ibm --------------------------------------------------------------------------


def test_langchain_watsonx_llm(server: RunningServer, api_client: Any, expected: Expected) -> None:
    from langchain_ibm import WatsonxLLM

    llm = WatsonxLLM(
        deployment_id=deployment_id(server, "reviews_a"), watsonx_client=api_client, params=GREEDY
    )
    want = expected.answers[RUN_NAMES[0]]
    assert llm.invoke(PROMPTS[0]) == want[PROMPTS[0]]
    assert "".join(llm.stream(PROMPTS[1])) == want[PROMPTS[1]]
    assert llm.batch(list[Any](PROMPTS)) == [want[p] for p in PROMPTS]


def test_langchain_chat_watsonx(server: RunningServer, api_client: Any, expected: Expected) -> None:
    from langchain_ibm import ChatWatsonx

    chat = ChatWatsonx(
        deployment_id=deployment_id(server, "reviews_a"),
        watsonx_client=api_client,
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    want = expected.answers[RUN_NAMES[0]]
    assert chat.invoke(PROMPTS[0]).content == want[PROMPTS[0]]
    assert "".join(str(chunk.content) for chunk in chat.stream(PROMPTS[1])) == want[PROMPTS[1]]
    assert [m.content for m in chat.batch(list[Any](PROMPTS))] == [want[p] for p in PROMPTS]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SDK's async auth uses asyncio.Lock
async def test_langchain_ainvoke(
    server: RunningServer, fresh_api_client: Any, expected: Expected
) -> None:
    from langchain_ibm import ChatWatsonx, WatsonxLLM

    dep = deployment_id(server, "reviews_a")
    want = expected.answers[RUN_NAMES[0]]
    llm = WatsonxLLM(deployment_id=dep, watsonx_client=fresh_api_client, params=GREEDY)
    assert await llm.ainvoke(PROMPTS[2]) == want[PROMPTS[2]]
    chat = ChatWatsonx(
        deployment_id=dep, watsonx_client=fresh_api_client, max_tokens=MAX_TOKENS, temperature=0
    )
    assert (await chat.ainvoke(PROMPTS[2])).content == want[PROMPTS[2]]
