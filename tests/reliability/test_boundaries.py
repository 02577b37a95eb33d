"""Secrets in structured error fields, typed argument errors, ids in the CLI, written files.

The service here echoes the request it refused (the API key, the bearer token) in every field
of its error answer, as some gateways do; nothing of it may survive in any attribute of the
error we raise, nor in the client's own attributes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from granite_tuner import (
    APIStatusError,
    ConfigurationError,
    RetryPolicy,
    TuningResult,
    WatsonxClient,
)
from granite_tuner._files import write_atomic
from granite_tuner.runs import MetricPoint
from granite_tuner.testing import FakeWatsonx, ServerHandle
from tests.fakes import watsonx_client

pytestmark = pytest.mark.anyio

API_KEY = "echoed-api-key-SECRET-0123456789"
TOKEN = "issued-bearer-token-SECRET-abcdef"


def echoing_service(request: httpx.Request) -> httpx.Response:
    """IAM issues TOKEN for API_KEY; everything else is refused, the request's credentials
    quoted back in every field of the error answer."""
    if request.url.path == "/identity/token":
        return httpx.Response(200, json={"access_token": TOKEN, "expires_in": 3600})
    credential = request.headers.get("Authorization", "")
    echo = f"{credential} apikey={API_KEY} {API_KEY} {TOKEN}"
    body = {
        "trace": f"trace-{TOKEN}",
        "errors": [
            {
                "code": "bad_request",
                "message": f"request was {echo}",
                "more_info": f"https://docs.example/{API_KEY}",
                "target": {"name": "Authorization", "value": credential, "deep": [TOKEN]},
                "echo": {"headers": {"Authorization": credential}},
            },
            json.dumps({"code": "x", "message": echo}),
        ],
    }
    return httpx.Response(400, json=body, request=request)


def everything_in(value: Any, seen: set[int] | None = None) -> Iterator[str]:
    """Every string reachable from `value`: attributes, items, model fields, reprs (a
    `SecretStr` shows only its repr, as in a debugger)."""
    seen = seen if seen is not None else set()
    if id(value) in seen:
        return
    seen.add(id(value))
    yield repr(value)
    if isinstance(value, SecretStr):
        return  # the secret-holding type: what vars() and debuggers show is its repr
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from everything_in(key, seen)
            yield from everything_in(item, seen)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from everything_in(item, seen)
    elif hasattr(value, "__dict__"):
        yield from everything_in(vars(value), seen)
        extra = getattr(value, "__pydantic_extra__", None)
        if extra:
            yield from everything_in(extra, seen)


async def test_no_secret_survives_in_any_attribute_of_an_error_from_an_echoing_service() -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(echoing_service))
    client = WatsonxClient(
        url="https://us-south.ml.cloud.ibm.com",
        api_key=API_KEY,
        iam_url="https://iam.example/identity/token",
        project_id="p-1",
        http_client=http,
        retry=RetryPolicy(max_attempts=1),
    )
    async with http, client:
        with pytest.raises(APIStatusError) as caught:
            await client.trainings.get("t-1")
    error = caught.value
    assert error.errors, "the service's errors[] were parsed"
    assert error.trace is not None
    texts = [str(error), *everything_in(error), *everything_in(error.errors)]
    for text in texts:
        assert API_KEY not in text
        assert TOKEN not in text


async def test_the_client_holds_credentials_only_in_secret_holding_types(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    key = "fake-test-api-key-123"
    async with watsonx_client(fake, server, retry=RetryPolicy(max_attempts=1)) as client:
        await client.foundation_models.list()  # an exchange happened: a token is held too
        token = await client.auth.token()
        texts = [*everything_in(vars(client.auth)), *everything_in(vars(client))]
    assert all(key not in text and token not in text for text in texts)


def test_bad_client_settings_raise_configuration_errors() -> None:
    for timeout in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigurationError, match="timeout"):
            WatsonxClient(url="https://x.example", token=TOKEN, project_id="p", timeout=timeout)
    for values in ({"max_attempts": 0}, {"jitter": 2}, {"initial_backoff": float("nan")}):
        with pytest.raises(ConfigurationError, match="RetryPolicy") as caught:
            RetryPolicy(**values)
        assert str(next(iter(values))) in str(caught.value)


def test_a_run_stopped_inside_an_epoch_counts_only_whole_epochs() -> None:
    points = [
        MetricPoint(iteration=i, epoch=epoch, loss=1.0 / i)
        for i, epoch in enumerate([1] * 7 + [2] * 2, start=1)
    ]
    common: dict[str, Any] = {"run_id": "r", "backend": "local", "metrics": points}
    failed = TuningResult(state="failed", **common)
    completed = TuningResult(state="completed", **common)
    assert failed.epochs_completed == 1
    assert completed.epochs_completed == 2
    first_epoch_only = TuningResult(state="failed", **{**common, "metrics": points[:2]})
    assert first_epoch_only.epochs_completed == 0


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_take_the_process_umask(tmp_path: Path, umask: int, mode: int) -> None:
    # Reports, plots, run records and cached data are all written by this one helper.
    old = os.umask(umask)
    try:
        written = write_atomic(tmp_path / "sub" / "report.json", b"{}")
    finally:
        os.umask(old)
    assert written.stat().st_mode & 0o777 == mode
    assert [p.name for p in written.parent.iterdir()] == ["report.json"]  # no scratch left
