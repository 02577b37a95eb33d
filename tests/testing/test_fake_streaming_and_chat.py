"""Contract: streaming and chat on the fake, driven by IBM's SDK and langchain-ibm.

The same calls as `tests/server/test_watsonx_clients.py` makes against `granite-tuner serve`;
here every answer is the fake's `default_answer` of the prompt (of the last user message, for
a chat).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from granite_tuner.testing import FakeWatsonx, GenerationCall, ServerHandle, default_answer

from .workflow import http_client, ready_deployment

pytestmark = pytest.mark.contract

KEY = "fake-streaming-key"
BASE = "ibm/granite-13b-instruct-v2"
PROMPTS = [f"Review {n}: the groomer was {'great' if n % 2 else 'late'} today." for n in range(4)]


def answer(text: str) -> str:
    return default_answer(GenerationCall(text, None, None, {}))


@dataclass(frozen=True)
class Setup:
    fake: FakeWatsonx
    server: ServerHandle
    deployment_id: str
    api_client: Any


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    from ibm_watsonx_ai import APIClient, Credentials

    fake = FakeWatsonx(project_id="p-1", space_id="s-1", api_keys=[KEY], deployment_polls=1)
    # The deployment is made over plain HTTP (a second server on the same fake); the SDK
    # then speaks HTTPS, which it insists on.
    with fake.serve(tls=True) as server, fake.serve() as plain:

        async def deploy() -> str:
            headers = {"Authorization": f"Bearer {fake.issue_token()}"}
            async with http_client(base_url=plain.url, headers=headers) as http:
                return await ready_deployment(http, fake, "fake_stream")

        deployment_id = anyio.run(deploy)
        credentials = Credentials(
            url=server.url,
            platform_url=server.url,
            api_key=KEY,
            auth_url=server.url + "/identity/token",
            verify=server.ca_cert_path,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            api_client = APIClient(credentials, project_id="p-1")
        yield Setup(fake, server, deployment_id, api_client)


def test_sdk_stream_and_chat_on_a_deployment(setup: Setup) -> None:
    from ibm_watsonx_ai.foundation_models import ModelInference

    model = ModelInference(deployment_id=setup.deployment_id, api_client=setup.api_client)
    for prompt in PROMPTS:
        assert "".join(model.generate_text_stream(prompt=prompt)) == answer(prompt)
        chat = model.chat(messages=[{"role": "user", "content": prompt}])
        assert chat["choices"][0]["message"]["content"] == answer(prompt)
        chunks = model.chat_stream(messages=[{"role": "user", "content": prompt}])
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert text == answer(prompt)
    long = "one two three four five"
    setup.fake.answer = lambda call: long
    try:
        pieces = list(model.generate_text_stream(prompt="x", params={"max_new_tokens": 3}))
        assert pieces == ["one", " two", " three"]
    finally:
        setup.fake.answer = None
    assert setup.fake.count("POST", r"/text/generation_stream$") == len(PROMPTS) + 1
    assert setup.fake.count("POST", r"/text/chat_stream$") == len(PROMPTS)


def test_sdk_stream_and_chat_on_a_base_model(setup: Setup) -> None:
    from ibm_watsonx_ai.foundation_models import ModelInference

    model = ModelInference(model_id=BASE, api_client=setup.api_client)
    prompt = PROMPTS[1]
    assert "".join(model.generate_text_stream(prompt=prompt)) == answer(prompt)
    chat = model.chat(messages=[{"role": "user", "content": prompt}])
    assert chat["choices"][0]["message"]["content"] == answer(prompt)


def test_langchain_stream_and_chat(setup: Setup) -> None:
    from langchain_ibm import ChatWatsonx, WatsonxLLM

    llm = WatsonxLLM(deployment_id=setup.deployment_id, watsonx_client=setup.api_client)
    assert "".join(llm.stream(PROMPTS[0])) == answer(PROMPTS[0])
    assert llm.invoke(PROMPTS[2]) == answer(PROMPTS[2])
    chat = ChatWatsonx(deployment_id=setup.deployment_id, watsonx_client=setup.api_client)
    assert chat.invoke(PROMPTS[3]).content == answer(PROMPTS[3])
    assert "".join(str(c.content) for c in chat.stream(PROMPTS[1])) == answer(PROMPTS[1])
    assert [m.content for m in chat.batch(list[Any](PROMPTS))] == [answer(p) for p in PROMPTS]


def test_chat_needs_messages(setup: Setup) -> None:
    token = setup.fake.issue_token()
    response = httpx.post(
        f"{setup.server.url}/ml/v1/deployments/{setup.deployment_id}/text/chat?version=2025-01-01",
        json={"messages": []},
        headers={"Authorization": f"Bearer {token}"},
        verify=setup.server.client_ssl_context(),
    )
    assert response.status_code == 400
    assert "messages" in response.json()["errors"][0]["message"]
