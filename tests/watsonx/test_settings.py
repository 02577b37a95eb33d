"""Settings resolution: arguments first, then Credentials, then the environment; clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from granite_tuner import ConfigurationError, WatsonxClient
from granite_tuner.backends.watsonx._endpoints import DEFAULT_IAM_URL, platform_url_for
from granite_tuner.backends.watsonx._settings import resolve_settings
from granite_tuner.testing import FakeWatsonx, environment_for

API_KEY = "test-api-key-0123456789"


def test_environment_fills_what_arguments_leave_out() -> None:
    env = {
        "WATSONX_URL": "https://eu-de.ml.cloud.ibm.com/",
        "WATSONX_APIKEY": API_KEY,
        "WATSONX_PROJECT_ID": "p-env",
    }
    settings = resolve_settings(environ=env)
    assert settings.url == "https://eu-de.ml.cloud.ibm.com"
    assert settings.platform_url == "https://api.eu-de.dataplatform.cloud.ibm.com"
    assert settings.iam_url == DEFAULT_IAM_URL
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == API_KEY
    assert settings.scope.field == "project_id"
    assert settings.scope.id == "p-env"

    overridden = resolve_settings(project_id="p-arg", environ=env)
    assert overridden.scope.id == "p-arg"


def test_an_explicit_space_is_not_mixed_with_an_environment_project() -> None:
    env = {"WATSONX_URL": "https://us-south.ml.cloud.ibm.com", "WATSONX_PROJECT_ID": "p"}
    settings = resolve_settings(token="a.b.c-token", space_id="s-1", environ=env)
    assert settings.scope.kind == "space"


def test_an_explicit_token_is_not_mixed_with_an_environment_api_key() -> None:
    env = {"WATSONX_URL": "https://us-south.ml.cloud.ibm.com", "WATSONX_APIKEY": API_KEY}
    settings = resolve_settings(token="header.payload.sig", project_id="p", environ=env)
    assert settings.api_key is None
    assert settings.token is not None


@dataclass
class FakeCredentials:
    """Shaped like ibm_watsonx_ai.Credentials (read by attribute name)."""

    url: str | None = None
    api_key: str | None = None
    token: str | None = None
    platform_url: str | None = None
    auth_url: str | None = None
    verify: bool | str | None = None
    username: str | None = None
    password: str | None = None


def test_credentials_object_is_read_field_by_field() -> None:
    creds = FakeCredentials(
        url="https://127.0.0.1:9443",
        api_key=API_KEY,
        auth_url="https://127.0.0.1:9443/identity/token",
    )
    settings = resolve_settings(credentials=creds, project_id="p", environ={})
    assert settings.url == "https://127.0.0.1:9443"
    assert settings.platform_url == "https://127.0.0.1:9443"
    assert settings.iam_url == "https://127.0.0.1:9443/identity/token"


def test_official_sdk_credentials_are_accepted() -> None:
    from ibm_watsonx_ai import Credentials

    creds = Credentials(url="https://us-south.ml.cloud.ibm.com", api_key=API_KEY)
    client = WatsonxClient(credentials=creds, project_id="p")
    assert client.settings.platform_url == "https://api.dataplatform.cloud.ibm.com"
    assert client.settings.api_key is not None


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"api_key": API_KEY, "project_id": "p"}, "WATSONX_URL"),
        ({"url": "ftp://x", "api_key": API_KEY, "project_id": "p"}, "absolute URL"),
        ({"url": "http://example.com", "api_key": API_KEY, "project_id": "p"}, "https://"),
        ({"url": "https://x.example?y=1", "api_key": API_KEY, "project_id": "p"}, "query"),
        ({"url": "https://x.example", "project_id": "p"}, "WATSONX_APIKEY"),
        ({"url": "https://x.example", "api_key": API_KEY}, "WATSONX_PROJECT_ID"),
        (
            {"url": "https://x.example", "api_key": API_KEY, "token": "t.t.t", "project_id": "p"},
            "one",
        ),
        (
            {"url": "https://x.example", "api_key": API_KEY, "project_id": "p", "space_id": "s"},
            "not both",
        ),
        ({"url": "https://x.example", "api_key": "  ", "project_id": "p"}, "api_key"),
        (
            {"url": "https://x.example", "api_key": API_KEY, "project_id": "p", "iam_url": "iam"},
            "iam_url",
        ),
    ],
)
def test_bad_settings_say_what_to_fix(kwargs: dict[str, str], fix: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_settings(environ={}, **kwargs)
    assert fix in str(info.value)
    assert API_KEY not in str(info.value)


def test_plain_http_is_allowed_for_loopback_only() -> None:
    for host in ("127.0.0.1:8080", "localhost:1", "[::1]:9"):
        settings = resolve_settings(url=f"http://{host}", token="a.b.c", project_id="p", environ={})
        assert settings.url.startswith("http://")


def test_cloud_pak_password_credentials_are_refused_clearly() -> None:
    creds = FakeCredentials(url="https://cpd.example", username="u", password="pw-123456789")
    with pytest.raises(ConfigurationError, match="Cloud Pak"):
        resolve_settings(credentials=creds, project_id="p", environ={})


def test_platform_map_covers_private_and_aws_hosts() -> None:
    assert (
        platform_url_for("https://private.jp-tok.ml.cloud.ibm.com")
        == "https://private.api.jp-tok.dataplatform.cloud.ibm.com"
    )
    assert (
        platform_url_for("https://us-east-1.aws.wxai.ibm.com/")
        == "https://api.us-east-1.aws.data.ibm.com"
    )
    assert platform_url_for("https://cpd.example.com") is None


def test_client_repr_has_no_secret() -> None:
    client = WatsonxClient(url="https://us-south.ml.cloud.ibm.com", api_key=API_KEY, project_id="p")
    assert API_KEY not in repr(client)
    assert API_KEY not in repr(client.settings)
    assert API_KEY not in repr(client.auth)


def test_iam_url_comes_from_watsonx_iam_url() -> None:
    env = {
        "WATSONX_URL": "https://us-south.ml.cloud.ibm.com",
        "WATSONX_APIKEY": API_KEY,
        "WATSONX_PROJECT_ID": "p",
        "WATSONX_IAM_URL": "https://private.iam.cloud.ibm.com/identity/token/",
    }
    assert (
        resolve_settings(environ=env).iam_url == "https://private.iam.cloud.ibm.com/identity/token"
    )
    assert resolve_settings(iam_url="https://iam.example/t", environ=env).iam_url == (
        "https://iam.example/t"
    )
    with pytest.raises(ConfigurationError, match=r"iam_url \(WATSONX_IAM_URL\) must use https"):
        resolve_settings(environ={**env, "WATSONX_IAM_URL": "http://iam.example/token"})


@pytest.mark.anyio
async def test_from_env_reaches_a_tls_fake_with_only_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The five variables `granite-tuner fake-server` prints are all a client needs."""
    fake = FakeWatsonx()
    with fake.serve(tls=True) as server:
        for name, value in environment_for(fake, server).items():
            monkeypatch.setenv(name, value)
        async with WatsonxClient.from_env() as client:
            assert await client.trainings.list() == []
    assert fake.iam_exchanges == 1


def test_a_missing_ca_bundle_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WATSONX_CA_BUNDLE", str(tmp_path / "nowhere.pem"))
    with pytest.raises(ConfigurationError, match=r"WATSONX_CA_BUNDLE=.* is not a file"):
        WatsonxClient(url="https://us-south.ml.cloud.ibm.com", api_key=API_KEY, project_id="p")


def test_verify_given_wins_over_the_ca_bundle_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WATSONX_CA_BUNDLE", str(tmp_path / "nowhere.pem"))
    client = WatsonxClient(
        url="https://us-south.ml.cloud.ibm.com", api_key=API_KEY, project_id="p", verify=True
    )
    assert repr(client).startswith("WatsonxClient(")
