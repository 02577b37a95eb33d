"""Shared pytest configuration: every async test runs on asyncio and on trio."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture(autouse=True)
def _no_watsonx_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the settings they pass: a developer's WATSONX_* variables stay out."""
    for name in (
        "WATSONX_URL",
        "WATSONX_APIKEY",
        "WATSONX_TOKEN",
        "WATSONX_PROJECT_ID",
        "WATSONX_SPACE_ID",
    ):
        monkeypatch.delenv(name, raising=False)
