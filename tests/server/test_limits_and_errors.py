"""Wrong keys, malformed and oversized requests, unknown names, overload and shutdown.

Each gets a clear error in its API's own shape, and the server answers normally afterwards.
These servers speak plain HTTP on loopback (TLS is covered by the client contract tests).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr

from granite_tuner.errors import ConfigurationError
from granite_tuner.server import RunningServer, ServeConfig, serve_in_thread
from tests.server.conftest import API_KEY, Served, config

pytestmark = pytest.mark.anyio

GRANT = "urn:ibm:params:oauth:grant-type:apikey"
BEARER = {"authorization": f"Bearer {API_KEY}"}
GOOD = {"input": "the dog was great .", "parameters": {"max_new_tokens": 3}}
# Long enough to stay in flight while the test looks (hundreds of decoding steps).
LONG = {"input": "the dog", "parameters": {"min_new_tokens": 400, "max_new_tokens": 400}}


@pytest.fixture(scope="module")
def plain(served_home: Served) -> Iterator[RunningServer]:
    settings = config(
        served_home,
        max_request_bytes=4096,
        max_new_tokens=500,
        max_concurrency_per_key=2,
        rate_limit=1000.0,
    )
    with serve_in_thread(settings) as running:
        yield running


def still_answers(url: str) -> None:
    response = httpx.post(
        f"{url}/ml/v1/deployments/fourth/text/generation?version=2025-01-01",
        json=GOOD,
        headers=BEARER,
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["generated_token_count"] == 3


def watsonx_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status_code"] == status
    assert body["errors"][0]["code"] == code
    assert body["trace"] == response.headers["x-global-transaction-id"]
    message: str = body["errors"][0]["message"]
    return message


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_a_wrong_key_is_refused_clearly(plain: RunningServer) -> None:
    url = plain.url
    exchange = httpx.post(f"{url}/identity/token", data={"apikey": "wrong", "grant_type": GRANT})
    assert exchange.status_code == 400
    assert exchange.json()["errorMessage"] == "Provided API key could not be found."
    path = f"{url}/ml/v1/deployments/fourth/text/generation?version=2025-01-01"
    denied = httpx.post(path, json=GOOD, headers={"authorization": "Bearer wrong"})
    assert "not valid" in watsonx_error(denied, 401, "authentication_token_invalid")
    forged = httpx.post(path, json=GOOD, headers={"authorization": "Bearer a.b.c"})
    watsonx_error(forged, 401, "authentication_token_invalid")
    missing = httpx.post(path, json=GOOD)
    assert "bearer token is required" in watsonx_error(missing, 401, "authorization_rejected")
    chat = httpx.post(f"{url}/v1/chat/completions", json={}, headers={"authorization": "Bearer x"})
    assert openai_error(chat, 401)["type"] == "authentication_error"
    token = httpx.post(f"{url}/identity/token", data={"apikey": API_KEY, "grant_type": GRANT})
    with_token = {"authorization": f"Bearer {token.json()['access_token']}"}
    assert httpx.post(path, json=GOOD, headers=with_token).status_code == 200
    still_answers(url)


def test_malformed_requests_get_400_and_change_nothing(plain: RunningServer) -> None:
    path = f"{plain.url}/ml/v1/deployments/fourth/text/generation?version=2025-01-01"
    cases: list[tuple[bytes, str]] = [
        (b"{not json", "json_parse"),
        (b"[1, 2]", "json_type"),
        (b"", "json_parse"),
        (b"\xff\xfe", "json_parse"),
        (b'{"parameters": {}}', "missing_field"),
        (b'{"input": "x", "parameters": {"max_new_tokens": "5"}}', "invalid_parameters"),
        (b'{"input": "x", "parameters": {"max_new_tokenz": 5}}', "invalid_parameters"),
        (b'{"input": "x", "parameters": {"max_new_tokens": 100000}}', "max_tokens_exceeded"),
        (b'{"input": "x", "parameters": []}', "invalid_request"),
    ]
    for body, code in cases:
        response = httpx.post(
            path, content=body, headers={**BEARER, "content-type": "application/json"}
        )
        watsonx_error(response, 400, code)
    chat = httpx.post(
        f"{plain.url}/v1/chat/completions",
        json={"model": "fourth", "messages": [{"role": "robot", "content": "hi"}]},
        headers=BEARER,
    )
    assert openai_error(chat, 400)["param"] == "messages[0]"
    too_many = httpx.post(
        f"{plain.url}/v1/completions",
        json={"model": "fourth", "prompt": "x", "max_tokens": 501},
        headers=BEARER,
    )
    assert "limit of 500" in openai_error(too_many, 400)["message"]
    still_answers(plain.url)


def test_oversized_requests_get_413(plain: RunningServer) -> None:
    path = f"{plain.url}/ml/v1/deployments/fourth/text/generation?version=2025-01-01"
    big = {"input": "the dog " * 1000}
    watsonx_error(httpx.post(path, json=big, headers=BEARER), 413, "request_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"input": "'
        for _ in range(100):
            yield b"the dog " * 10
        yield b'"}'

    watsonx_error(httpx.post(path, content=chunks(), headers=BEARER), 413, "request_too_large")
    still_answers(plain.url)


def test_unknown_deployments_and_models_get_404(plain: RunningServer) -> None:
    url = plain.url
    for path in (
        "/ml/v1/deployments/nope/text/generation",
        "/ml/v1/deployments/nope/text/generation_stream",
        "/ml/v1/deployments/nope/text/chat",
    ):
        response = httpx.post(f"{url}{path}?version=2025-01-01", json=GOOD, headers=BEARER)
        assert "'nope'" in watsonx_error(response, 404, "deployment_not_found")
    watsonx_error(
        httpx.get(f"{url}/ml/v4/deployments/nope", headers=BEARER), 404, "deployment_not_found"
    )
    watsonx_error(httpx.get(f"{url}/ml/v1/nothing", headers=BEARER), 404, "not_found")
    watsonx_error(
        httpx.delete(f"{url}/ml/v4/deployments", headers=BEARER), 405, "method_not_allowed"
    )
    completion = httpx.post(
        f"{url}/v1/completions", json={"model": "gpt-4", "prompt": "x"}, headers=BEARER
    )
    error = openai_error(completion, 404)
    assert error["code"] == "model_not_found"
    assert "fourth" in error["message"]  # says what is served
    still_answers(url)


async def test_overload_gets_429_with_retry_after(plain: RunningServer) -> None:
    path = f"{plain.url}/ml/v1/deployments/fourth/text/generation_stream?version=2025-01-01"
    leave = anyio.Event()
    async with httpx.AsyncClient(timeout=60) as http:

        async def hold_a_slot() -> None:
            async with http.stream("POST", path, json=LONG, headers=BEARER) as response:
                assert response.status_code == 200
                await leave.wait()  # leaves without reading the stream to its end

        async with anyio.create_task_group() as group:
            group.start_soon(hold_a_slot)
            group.start_soon(hold_a_slot)
            with anyio.fail_after(30):
                while (await http.get(f"{plain.url}/health")).json()["in_flight"] < 2:  # noqa: ASYNC110  # polls over HTTP
                    await anyio.sleep(0.005)
            third = await http.post(path, json=GOOD, headers=BEARER)
            message = watsonx_error(third, 429, "too_many_requests")
            assert "limit 2" in message
            assert third.headers["retry-after"] == "1"
            assert third.headers["x-requests-limit-rate"] == "1000"
            assert "x-requests-limit-remaining" in third.headers
            leave.set()
        # both streams were left unfinished: the server abandons them and frees their slots
        with anyio.fail_after(30):
            while (await http.get(f"{plain.url}/health")).json()["in_flight"]:  # noqa: ASYNC110  # polls over HTTP
                await anyio.sleep(0.01)
        answer = await http.post(path.replace("_stream", ""), json=GOOD, headers=BEARER)
        assert answer.status_code == 200


def test_rate_limit_429_tells_when_to_retry(served_home: Served) -> None:
    with serve_in_thread(config(served_home, rate_limit=0.001, rate_limit_burst=2)) as running:
        path = f"{running.url}/ml/v1/deployments/fourth/text/generation?version=2025-01-01"
        remaining = []
        for _ in range(2):
            response = httpx.post(path, json=GOOD, headers=BEARER)
            assert response.status_code == 200
            assert response.headers["x-requests-limit-rate"] == "2"
            remaining.append(response.headers["x-requests-limit-remaining"])
        assert remaining == ["1", "0"]
        refused = httpx.post(path, json=GOOD, headers=BEARER)
        assert "retry in" in watsonx_error(refused, 429, "rate_limit_exceeded")
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-requests-limit-remaining"] == "0"
        assert httpx.get(f"{running.url}/health").status_code == 200  # not limited


def test_shutdown_lets_requests_in_flight_finish(served_home: Served) -> None:
    results: list[httpx.Response] = []
    with serve_in_thread(config(served_home, max_new_tokens=500)) as running:
        url = running.url

        def ask(body: dict[str, Any]) -> None:
            results.append(
                httpx.post(
                    f"{url}/ml/v1/deployments/fourth/text/generation?version=2025-01-01",
                    json=body,
                    headers=BEARER,
                    timeout=60,
                )
            )

        threads = [threading.Thread(target=ask, args=(LONG,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for _ in range(6000):
            health = httpx.get(f"{url}/health").json()
            if health["in_flight"] == 3:
                break
            threading.Event().wait(0.005)
        assert health["in_flight"] == 3
        running.stop()  # what SIGTERM does: stop accepting, let these finish, then close
        for thread in threads:
            thread.join()
    assert [r.status_code for r in results] == [200, 200, 200]
    assert all(r.json()["results"][0]["generated_token_count"] == 400 for r in results)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")


def test_no_key_means_no_start_unless_insecure_on_loopback(served_home: Served) -> None:
    with pytest.raises(ConfigurationError, match="No API key is configured"):
        ServeConfig(model=served_home.model)
    with pytest.raises(ConfigurationError, match="only allowed on a loopback"):
        ServeConfig(model=served_home.model, insecure_no_auth=True, host="0.0.0.0")
    settings = config(served_home, api_keys=(), insecure_no_auth=True)
    with serve_in_thread(settings) as running:
        path = f"{running.url}/ml/v1/deployments/fourth/text/generation?version=2025-01-01"
        assert httpx.post(path, json=GOOD).status_code == 200


def test_keys_never_reach_logs_or_reprs(
    served_home: Served, caplog: pytest.LogCaptureFixture
) -> None:
    settings = config(served_home)
    assert API_KEY not in repr(settings)
    assert API_KEY not in str(settings.model_dump())
    caplog.set_level(logging.DEBUG)
    with serve_in_thread(settings) as running:
        token = httpx.post(
            f"{running.url}/identity/token", data={"apikey": API_KEY, "grant_type": GRANT}
        ).json()["access_token"]
        httpx.post(f"{running.url}/v1/completions", content=b"{", headers=BEARER)
        httpx.post(
            f"{running.url}/identity/token", data={"apikey": API_KEY + "x", "grant_type": GRANT}
        )
        assert API_KEY not in repr(running.app)
    assert API_KEY not in caplog.text
    assert token not in caplog.text


def test_no_secret_in_config_with_secretstr() -> None:
    settings = ServeConfig(api_keys=(SecretStr("s3cret-key"),))
    assert "s3cret-key" not in repr(settings)
