"""Fixtures for the fake's own tests: a fake served on loopback and a plain httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from granite_tuner.testing import FakeWatsonx, ServerHandle

from .workflow import http_client


@pytest.fixture
def fake() -> FakeWatsonx:
    return FakeWatsonx(project_id="p-1", space_id="s-1")


@pytest.fixture
def server(fake: FakeWatsonx) -> Iterator[ServerHandle]:
    with fake.serve() as handle:
        yield handle


@pytest.fixture
async def client(fake: FakeWatsonx, server: ServerHandle) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for the fake, already holding a valid bearer token."""
    headers = {"Authorization": f"Bearer {fake.issue_token()}"}
    async with http_client(base_url=server.url, headers=headers) as http:
        yield http
