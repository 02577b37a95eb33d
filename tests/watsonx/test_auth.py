"""IAM API-key exchange: expiry from the JWT, refresh ahead of time, one refresh in flight."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

import anyio
import httpx
import pytest

from granite_tuner import APIConnectionError, AuthenticationError, RetryPolicy, WatsonxClient
from granite_tuner.backends.watsonx.auth import IAMAuthenticator, jwt_expiry

pytestmark = pytest.mark.anyio

API_KEY = "iam-test-key-0123456789"
FAST = RetryPolicy(initial_backoff=0.0, max_backoff=0.0, max_attempts=3)


def make_jwt(exp: float, n: int) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part({'exp': exp, 'n': n})}.c2lnbmF0dXJl{n}"


class FakeIAM:
    """An IAM endpoint for MockTransport that counts exchanges and can be slowed or broken."""

    def __init__(self, clock: list[float], lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.exchanges = 0
        self.fail_with: int | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode())
        assert form["grant_type"] == ["urn:ibm:params:oauth:grant-type:apikey"]
        assert request.headers["authorization"] == "Basic Yng6Yng="
        await anyio.sleep(0.01)  # let every waiting caller pile up on the lock
        if self.fail_with is not None:
            return httpx.Response(
                self.fail_with, json={"errorCode": "BXNIM0415E", "errorMessage": "nope"}
            )
        if form["apikey"] != [API_KEY]:
            return httpx.Response(
                400,
                json={
                    "errorCode": "BXNIM0415E",
                    "errorMessage": "Provided API key could not be found.",
                },
            )
        self.exchanges += 1
        token = make_jwt(self.clock[0] + self.lifetime, self.exchanges)
        return httpx.Response(200, json={"access_token": token, "expires_in": self.lifetime})


def make_auth(iam: FakeIAM, clock: list[float], api_key: str = API_KEY) -> IAMAuthenticator:
    http = httpx.AsyncClient(transport=httpx.MockTransport(iam))
    return IAMAuthenticator(
        api_key,
        http=http,
        iam_url="https://iam.example/identity/token",
        retry=FAST,
        clock=lambda: clock[0],
    )


def test_jwt_expiry_reads_exp() -> None:
    assert jwt_expiry(make_jwt(1234.0, 1)) == 1234.0
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.!!!.c") is None


async def test_fifty_concurrent_callers_with_an_expired_token_cause_one_exchange() -> None:
    clock = [1_000_000.0]
    iam = FakeIAM(clock)
    auth = make_auth(iam, clock)
    first = await auth.token()
    assert iam.exchanges == 1

    clock[0] += 3600 + 1  # the token is now past its exp
    tokens: list[str] = []

    async def call() -> None:
        tokens.append(await auth.token())

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(call)
    assert iam.exchanges == 2
    assert len(set(tokens)) == 1
    assert tokens[0] != first


async def test_refresh_happens_ahead_of_expiry() -> None:
    clock = [1_000_000.0]
    iam = FakeIAM(clock, lifetime=3600)
    auth = make_auth(iam, clock)
    await auth.token()
    clock[0] += 3600 - 16 * 60  # 16 minutes left: still fine
    await auth.token()
    assert iam.exchanges == 1
    clock[0] += 2 * 60  # 14 minutes left: inside the 15-minute margin
    await auth.token()
    assert iam.exchanges == 2


async def test_a_failed_refresh_keeps_using_a_still_valid_token() -> None:
    clock = [1_000_000.0]
    iam = FakeIAM(clock, lifetime=3600)
    auth = make_auth(iam, clock)
    first = await auth.token()
    clock[0] += 3000  # inside the margin, 10 minutes left
    iam.fail_with = 503
    assert await auth.token() == first
    clock[0] += 601  # now expired, and IAM still down
    with pytest.raises(Exception) as info:
        await auth.token()
    assert "IAM token exchange" in str(info.value)


async def test_a_rejected_api_key_is_an_authentication_error_without_the_key() -> None:
    clock = [0.0]
    auth = make_auth(FakeIAM(clock), clock, api_key="wrong-key-abcdefghijkl")
    with pytest.raises(AuthenticationError) as info:
        await auth.token()
    assert "Provided API key could not be found" in str(info.value)
    assert "WATSONX_APIKEY" in str(info.value)
    assert "wrong-key-abcdefghijkl" not in str(info.value)
    assert "wrong-key-abcdefghijkl" not in repr(auth)


async def test_a_401_drops_the_token_and_retries_once_with_a_new_one() -> None:
    clock = [1_000_000.0]
    iam = FakeIAM(clock)
    revoked: set[str] = set()
    seen_tokens: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/identity/token":
            return await iam(request)
        token = request.headers["authorization"].removeprefix("Bearer ")
        seen_tokens.append(token)
        if token in revoked:
            body = {"errors": [{"code": "authentication_token_expired", "message": "expired"}]}
            return httpx.Response(401, json=body)
        return httpx.Response(200, json={"resources": []})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with WatsonxClient(
        url="https://127.0.0.1:1",
        api_key=API_KEY,
        iam_url="https://127.0.0.1:1/identity/token",
        project_id="p",
        retry=FAST,
        http_client=http,
    ) as client:
        await client.trainings.list()
        revoked.add(seen_tokens[-1])

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(client.trainings.list)
    assert iam.exchanges == 2
    assert len(set(seen_tokens)) == 2


async def test_iam_unreachable_is_a_connection_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    auth = IAMAuthenticator(
        API_KEY, http=http, iam_url="https://iam.example/identity/token", retry=FAST
    )
    with pytest.raises(APIConnectionError):
        await auth.token()
