"""Where the client's settings come from: arguments first, then the environment.

The environment names are the ones the IBM ecosystem already uses (`WATSONX_APIKEY`,
`WATSONX_URL`, `WATSONX_PROJECT_ID`, `WATSONX_SPACE_ID`, `WATSONX_TOKEN`), and an
`ibm_watsonx_ai.Credentials` object is read field by field, so moving from IBM's SDK
changes nothing in a user's configuration.

Two names are ours, because IBM's ecosystem has none that fits: `WATSONX_IAM_URL` (IBM's SDK
takes the IAM URL only as `Credentials(auth_url=...)`) and `WATSONX_CA_BUNDLE`, a CA bundle
to trust. IBM's SDK has `WX_CLIENT_VERIFY_REQUESTS`, but it can also turn verification off and
the SDK writes it into `os.environ` whenever it builds a client, so reading it would let one
IBM client in the process switch our verification off; a CA bundle path can only add trust
in a named authority. Every check fails with a `ConfigurationError`
that says which setting to fix, before anything is sent.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr

from granite_tuner._secrets import register_secret
from granite_tuner.backends.watsonx._endpoints import (
    API_VERSION,
    DEFAULT_IAM_URL,
    PLATFORM_URLS,
    Scope,
    platform_url_for,
)
from granite_tuner.errors import ConfigurationError

__all__ = [
    "CA_BUNDLE_ENV_VAR",
    "ENV_VARS",
    "WatsonxSettings",
    "ca_bundle_from_env",
    "resolve_settings",
]

ENV_VARS = {
    "url": "WATSONX_URL",
    "api_key": "WATSONX_APIKEY",
    "token": "WATSONX_TOKEN",
    "project_id": "WATSONX_PROJECT_ID",
    "space_id": "WATSONX_SPACE_ID",
    "iam_url": "WATSONX_IAM_URL",
}
#: A CA bundle (PEM) to verify the service with, when `verify=` is left out.
CA_BUNDLE_ENV_VAR = "WATSONX_CA_BUNDLE"
_LOOPBACK_NAMES = {"localhost"}
# Hosts of IBM Cloud's own watsonx.ai regions: each has a separate data-platform host.
_IBM_CLOUD_ML_HOST = re.compile(
    r"(?i)(private\.)?[a-z0-9-]+\.(ml\.cloud\.ibm\.com|aws\.wxai\.ibm\.com)"
)
_KNOWN_ML_HOSTS = frozenset(urlsplit(url).hostname or "" for url in PLATFORM_URLS)


class WatsonxSettings(BaseModel):
    """Resolved, checked settings of one client. Secrets are `SecretStr`: they never print."""

    model_config = ConfigDict(defer_build=True, frozen=True)

    url: str
    platform_url: str
    iam_url: str
    api_key: SecretStr | None
    token: SecretStr | None
    scope: Scope
    api_version: str = API_VERSION


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_url(value: str, setting: str) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{setting} must be a URL string such as https://us-south.ml.cloud.ibm.com, "
            f"not {type(value).__name__}."
        )
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018  (reading it checks the port: a number from 0 to 65535)
    except ValueError as exc:
        raise ConfigurationError(
            f"{setting} is not a valid URL ({exc}): got {value!r}; write it like "
            "https://us-south.ml.cloud.ibm.com."
        ) from None
    if (
        parts.scheme not in ("https", "http")
        or not parts.hostname
        or any(c.isspace() for c in parts.netloc)
    ):
        raise ConfigurationError(
            f"{setting} must be an absolute URL such as https://us-south.ml.cloud.ibm.com, "
            f"got {value!r}."
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            f"{setting} must use https:// ({value!r} would send credentials in clear text); "
            "plain http is accepted only for loopback test servers."
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{setting} must not carry a query or fragment, got {value!r}.")
    return value.strip().rstrip("/")


def _unmapped_platform(ml_url: str) -> str:
    """The ML URL itself as the platform URL, unless it names an IBM Cloud region we do not know.

    Cloud Pak, a proxy or a fake serve both roles on one host; an IBM Cloud region never does,
    so an unknown region (a typo, or a region newer than our table) must name its platform URL.
    """
    host = urlsplit(ml_url).hostname or ""
    if _IBM_CLOUD_ML_HOST.fullmatch(host) and host not in _KNOWN_ML_HOSTS:
        regions = ", ".join(sorted(h for h in _KNOWN_ML_HOSTS if not h.startswith("private.")))
        raise ConfigurationError(
            f"url (WATSONX_URL) {ml_url!r} names no watsonx.ai region this client knows; use "
            f"one of {regions}, or pass platform_url= the data-platform URL of that region."
        )
    return ml_url


def ca_bundle_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The CA bundle `WATSONX_CA_BUNDLE` names, checked to be a file; None when unset."""
    env = os.environ if environ is None else environ
    value = env.get(CA_BUNDLE_ENV_VAR, "").strip()
    if not value:
        return None
    if not os.path.isfile(value):
        raise ConfigurationError(
            f"{CA_BUNDLE_ENV_VAR}={value!r} is not a file: set it to the path of a CA "
            "bundle (PEM) to trust, or unset it."
        )
    return value


def _from_credentials(credentials: Any) -> dict[str, Any]:
    """Fields of an `ibm_watsonx_ai.Credentials` (read by name, so the SDK is not imported)."""
    fields = {
        "url": getattr(credentials, "url", None),
        "api_key": getattr(credentials, "api_key", None),
        "token": getattr(credentials, "token", None),
        "platform_url": getattr(credentials, "platform_url", None),
        "iam_url": getattr(credentials, "auth_url", None),
    }
    if getattr(credentials, "username", None) or getattr(credentials, "password", None):
        raise ConfigurationError(
            "Cloud Pak for Data username/password credentials are not supported; use an IBM "
            "Cloud API key or a bearer token."
        )
    return {k: v for k, v in fields.items() if v}


def resolve_settings(
    *,
    url: str | None = None,
    api_key: str | None = None,
    token: str | None = None,
    project_id: str | None = None,
    space_id: str | None = None,
    platform_url: str | None = None,
    iam_url: str | None = None,
    credentials: Any = None,
    api_version: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> WatsonxSettings:
    """Merge arguments, a Credentials object and the environment, then check the result."""
    env = os.environ if environ is None else environ
    given: dict[str, Any] = {
        "url": url,
        "api_key": api_key,
        "token": token,
        "project_id": project_id,
        "space_id": space_id,
        "platform_url": platform_url,
        "iam_url": iam_url,
    }
    from_credentials = _from_credentials(credentials) if credentials is not None else {}
    for name, value in from_credentials.items():
        if given.get(name) is None:
            given[name] = value
    # The environment fills only what neither the arguments nor Credentials gave.
    explicit_auth = given["api_key"] is not None or given["token"] is not None
    explicit_scope = given["project_id"] is not None or given["space_id"] is not None
    for name, variable in ENV_VARS.items():
        if given[name] is not None:
            continue
        if name in ("api_key", "token") and explicit_auth:
            continue
        if name in ("project_id", "space_id") and explicit_scope:
            continue
        value = env.get(variable)
        if value:
            given[name] = value

    for name in ("api_key", "token", "project_id", "space_id"):
        value = given[name]
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigurationError(f"{name} must be a non-empty string.")

    if not given["url"]:
        raise ConfigurationError(
            "No watsonx.ai URL: pass url= or set WATSONX_URL "
            "(for example https://us-south.ml.cloud.ibm.com)."
        )
    ml_url = _check_url(given["url"], "url (WATSONX_URL)")
    if given["platform_url"]:
        platform = _check_url(given["platform_url"], "platform_url")
    else:
        # Known IBM Cloud regions use a separate data-platform host; anything else (Cloud Pak,
        # a proxy, the fake server) serves both roles on one host.
        platform = platform_url_for(ml_url) or _unmapped_platform(ml_url)
    iam = (
        _check_url(given["iam_url"], "iam_url (WATSONX_IAM_URL)")
        if given["iam_url"]
        else DEFAULT_IAM_URL
    )

    if given["api_key"] and given["token"]:
        raise ConfigurationError(
            "Both an API key and a token were given; pass one (api_key= is refreshed "
            "automatically, token= is used as is)."
        )
    if not given["api_key"] and not given["token"]:
        raise ConfigurationError(
            "No credentials: pass api_key= (or set WATSONX_APIKEY) or token= (WATSONX_TOKEN)."
        )
    if given["project_id"] and given["space_id"]:
        raise ConfigurationError("Pass either project_id= or space_id=, not both.")
    if given["project_id"]:
        scope = Scope("project", given["project_id"].strip())
    elif given["space_id"]:
        scope = Scope("space", given["space_id"].strip())
    else:
        raise ConfigurationError(
            "No project or space: pass project_id= (WATSONX_PROJECT_ID) or space_id= "
            "(WATSONX_SPACE_ID)."
        )

    register_secret(given["api_key"])
    register_secret(given["token"])
    return WatsonxSettings(
        url=ml_url,
        platform_url=platform,
        iam_url=iam,
        api_key=SecretStr(given["api_key"]) if given["api_key"] else None,
        token=SecretStr(given["token"]) if given["token"] else None,
        scope=scope,
        api_version=api_version or API_VERSION,
    )
