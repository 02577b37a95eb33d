"""IAM API-key exchange, the JWTs it issues, and bearer-token checks."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from granite_tuner.testing import FakeWatsonx, ServerHandle

from .workflow import SCOPE, error_code, http_client

pytestmark = pytest.mark.anyio

GRANT = "urn:ibm:params:oauth:grant-type:apikey"


async def exchange(server: ServerHandle, **form: str) -> httpx.Response:
    async with http_client() as http:
        return await http.post(
            server.url + "/identity/token",
            data=form,
            headers={"Authorization": "Basic Yng6Yng="},
        )


def claims(token: str) -> dict[str, object]:
    # Decoded with the standard alphabet, as the official SDK does.
    payload = token.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.b64decode(payload + "==="))
    return decoded


async def test_api_key_exchange_returns_an_iam_token(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    response = await exchange(server, grant_type=GRANT, apikey="any-key")

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["refresh_token"] == "not-used"
    assert body["expires_in"] == 3600
    assert body["scope"] == "ibm openid"
    payload = claims(body["access_token"])
    assert payload["exp"] == body["expiration"]
    assert isinstance(payload["iat"], int)
    assert 3590 <= body["expiration"] - time.time() <= 3601
    assert {"sub", "iam_id"} <= payload.keys()
    assert fake.iam_exchanges == 1


async def test_the_issued_token_opens_the_api(server: ServerHandle) -> None:
    token = (await exchange(server, grant_type=GRANT, apikey="k")).json()["access_token"]
    async with http_client(base_url=server.url) as http:
        response = await http.get("/v2/projects/p-1", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_token_lifetime_goes_into_exp(fake: FakeWatsonx, server: ServerHandle) -> None:
    fake.token_lifetime = 120
    body = (await exchange(server, grant_type=GRANT, apikey="k")).json()
    assert body["expires_in"] == 120
    assert 110 <= claims(body["access_token"])["exp"] - time.time() <= 121  # type: ignore[operator]


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"grant_type": "password", "apikey": "k"}, "BXNIM0103E"),
        ({"grant_type": GRANT}, "BXNIM0109E"),
        ({"grant_type": GRANT, "apikey": ""}, "BXNIM0109E"),
        ({"grant_type": GRANT, "apikey": "wrong-secret-key"}, "BXNIM0415E"),
    ],
)
async def test_bad_exchanges_get_iam_style_400(
    fake: FakeWatsonx, server: ServerHandle, form: dict[str, str], code: str
) -> None:
    fake.api_keys = ["right-key"]
    response = await exchange(server, **form)

    assert response.status_code == 400
    assert response.json()["errorCode"] == code
    assert response.json()["errorMessage"]
    assert "wrong-secret-key" not in response.text
    assert fake.iam_exchanges == 0


async def test_only_listed_api_keys_are_accepted(fake: FakeWatsonx, server: ServerHandle) -> None:
    fake.api_keys = ["right-key"]
    assert (await exchange(server, grant_type=GRANT, apikey="right-key")).status_code == 200
    assert (await exchange(server, grant_type=GRANT, apikey="left-key")).status_code == 400
    assert fake.iam_exchanges == 1


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer not-a-jwt", "Bearer a.b.c"],
)
async def test_requests_without_a_valid_token_get_401(
    server: ServerHandle, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with http_client(base_url=server.url) as http:
        response = await http.get("/ml/v4/trainings", params=SCOPE, headers=headers)
    assert response.status_code == 401
    assert error_code(response) == "authorization_rejected"


async def test_a_token_signed_by_another_fake_is_rejected(server: ServerHandle) -> None:
    foreign = FakeWatsonx().issue_token()
    async with http_client(base_url=server.url) as http:
        response = await http.get(
            "/v2/projects/p-1", headers={"Authorization": f"Bearer {foreign}"}
        )
    assert response.status_code == 401
    assert error_code(response) == "authorization_rejected"


async def test_an_expired_token_gets_401_token_expired(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    expired = fake.issue_token(lifetime=-60)
    async with http_client(base_url=server.url) as http:
        response = await http.get(
            "/v2/projects/p-1", headers={"Authorization": f"Bearer {expired}"}
        )
    assert response.status_code == 401
    assert error_code(response) == "authentication_token_expired"
    assert response.json()["errors"][0]["more_info"]


async def test_expire_tokens_revokes_every_token_issued_so_far(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    old_iam = (await exchange(server, grant_type=GRANT, apikey="k")).json()["access_token"]
    old_direct = fake.issue_token()

    fake.expire_tokens()
    new_iam = (await exchange(server, grant_type=GRANT, apikey="k")).json()["access_token"]

    async with http_client(base_url=server.url) as http:
        statuses = {}
        for name, token in [("old_iam", old_iam), ("old", old_direct), ("new", new_iam)]:
            response = await http.get(
                "/v2/projects/p-1", headers={"Authorization": f"Bearer {token}"}
            )
            statuses[name] = response.status_code
            if response.status_code == 401:
                assert error_code(response) == "authentication_token_expired"
    assert statuses == {"old_iam": 401, "old": 401, "new": 200}
    assert fake.iam_exchanges == 2


async def test_public_endpoints_need_no_token(server: ServerHandle) -> None:
    async with http_client(base_url=server.url) as http:
        specs = await http.get("/ml/v1/foundation_model_specs", params={"version": "2023-09-30"})
        tasks = await http.get("/ml/v1/foundation_model_tasks", params={"version": "2023-09-30"})
    assert specs.status_code == 200
    assert tasks.status_code == 200
