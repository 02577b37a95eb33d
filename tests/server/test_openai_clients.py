"""Contract: the official `openai` client against `serve`'s OpenAI-compatible surface."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest
from openai import (
    AsyncOpenAI,
    DefaultAsyncHttpxClient,
    DefaultHttpxClient,
    NotFoundError,
    OpenAI,
)

from granite_tuner.server import RunningServer
from tests.server.clients import MAX_TOKENS, PROMPTS, Expected, in_process_answers
from tests.server.conftest import API_KEY, RUN_NAMES, Served, Tls


@pytest.fixture(scope="module")
def expected(served_home: Served) -> Expected:
    return in_process_answers(served_home, [RUN_NAMES[1]])


@pytest.fixture
def client(server: RunningServer, tls: Tls) -> Iterator[OpenAI]:
    http = DefaultHttpxClient(verify=ssl.create_default_context(cafile=str(tls.ca)))
    with OpenAI(base_url=server.url + "/v1", api_key=API_KEY, http_client=http) as openai:
        yield openai


def test_models_are_listed(client: OpenAI) -> None:
    names = {model.id for model in client.models.list()}
    assert names == {"tiny-model0", "reviews_a", "reviews_b", "reviews_c", "fourth"}
    assert client.models.retrieve("fourth").owned_by == "granite-tuner"
    with pytest.raises(NotFoundError, match="not served here"):
        client.models.retrieve("gpt-4")


def test_completions(client: OpenAI, expected: Expected) -> None:
    want = expected.answers[RUN_NAMES[1]]
    one = client.completions.create(
        model="reviews_b", prompt=PROMPTS[0], max_tokens=MAX_TOKENS, temperature=0
    )
    assert one.choices[0].text == want[PROMPTS[0]]
    many = client.completions.create(
        model="reviews_b", prompt=PROMPTS, max_tokens=MAX_TOKENS, temperature=0
    )
    assert [c.text for c in many.choices] == [want[p] for p in PROMPTS]
    stream = client.completions.create(
        model="reviews_b", prompt=PROMPTS[1], max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    pieces = [chunk.choices[0].text for chunk in stream if chunk.choices]
    assert "".join(pieces) == want[PROMPTS[1]]
    assert len([p for p in pieces if p]) > 1


def test_chat_completions(client: OpenAI, expected: Expected) -> None:
    want = expected.answers[RUN_NAMES[1]]
    for prompt in PROMPTS:
        answer = client.chat.completions.create(
            model="reviews_b",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=MAX_TOKENS,
            temperature=0,
        )
        assert answer.choices[0].message.content == want[prompt]
        assert answer.usage is not None
        assert (
            answer.usage.completion_tokens == MAX_TOKENS
            or answer.choices[0].finish_reason == "stop"
        )
        stream = client.chat.completions.create(
            model="reviews_b",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == want[prompt]
        assert chunks[-1].usage is not None


@pytest.mark.anyio
async def test_async_client(server: RunningServer, tls: Tls, expected: Expected) -> None:
    want = expected.answers[RUN_NAMES[1]]
    http = DefaultAsyncHttpxClient(verify=ssl.create_default_context(cafile=str(tls.ca)))
    async with AsyncOpenAI(base_url=server.url + "/v1", api_key=API_KEY, http_client=http) as ai:
        answer = await ai.chat.completions.create(
            model=server_model(server, RUN_NAMES[1]),
            messages=[{"role": "user", "content": PROMPTS[2]}],
            max_tokens=MAX_TOKENS,
            temperature=0,
        )
        assert answer.choices[0].message.content == want[PROMPTS[2]]
        stream = await ai.completions.create(
            model="reviews_b", prompt=PROMPTS[2], max_tokens=MAX_TOKENS, stream=True
        )
        assert "".join([c.choices[0].text async for c in stream if c.choices]) == want[PROMPTS[2]]


def server_model(server: RunningServer, run_name: str) -> str:
    """A tuned model may be named by its run name as well as by its serving name."""
    return run_name
