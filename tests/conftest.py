"""Shared pytest configuration: every async test runs on asyncio and on trio."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tiny_model import build_tiny_model


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture(autouse=True)
def _isolated_environment() -> Iterator[None]:
    """Each test sees only the settings it passes, and leaves the environment as it found it.

    A developer's WATSONX_* variables stay out, and IBM's SDK (which writes
    WX_CLIENT_VERIFY_REQUESTS into os.environ when it builds a client) cannot leak its
    settings into the next test.
    """
    saved = dict(os.environ)
    for name in (
        "WATSONX_URL",
        "WATSONX_APIKEY",
        "WATSONX_TOKEN",
        "WATSONX_PROJECT_ID",
        "WATSONX_SPACE_ID",
        "WATSONX_IAM_URL",
        "WATSONX_CA_BUNDLE",
        "WX_CLIENT_VERIFY_REQUESTS",
    ):
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the tiny random model and its tokenizer (see tests/tiny_model.py)."""
    folder = tmp_path_factory.mktemp("tiny-model")
    build_tiny_model(folder)
    return folder
