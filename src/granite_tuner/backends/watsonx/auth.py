"""Bearer tokens for watsonx.ai: a ready token, or an IBM Cloud API key exchanged at IAM.

The API-key flow (protocol §3.1) posts the key to IAM and gets a JWT whose `exp` claim says
when it dies. We refresh ahead of that moment (a margin of a third of the lifetime, at most
15 minutes), and however many requests need a token at once, exactly one exchange is in
flight: the others wait for it and share its result. If a refresh fails while the old token
is still valid, the old token is used and the refresh is tried again on the next call.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anyio
import httpx
from pydantic import SecretStr

from granite_tuner._retry import AttemptNotes, RetryPolicy, run_with_retries
from granite_tuner._secrets import get_logger, register_secret
from granite_tuner.backends.watsonx._responses import classify_transport_error, status_error
from granite_tuner.errors import APIError, AuthenticationError, UnexpectedResponseError

__all__ = ["Authenticator", "IAMAuthenticator", "StaticTokenAuthenticator", "jwt_expiry"]

logger = get_logger("granite_tuner.watsonx.auth")

_APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"
# IAM wants these fixed client credentials ("bx:bx") on API-key exchanges.
_IAM_CLIENT_AUTH = "Basic " + base64.b64encode(b"bx:bx").decode()
_MAX_MARGIN = 15 * 60.0
# A token this close to `exp` is not sent at all: it could die on the way.
_EXPIRY_SKEW = 5.0


class Authenticator(Protocol):
    """What the transport needs from a credential: a token, and a way to drop a bad one."""

    async def token(self) -> str: ...

    async def invalidate(self, rejected: str) -> bool:
        """Forget `rejected` after a 401; True if a fresh token can be fetched."""
        ...


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT in epoch seconds, or None if it is not a readable JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


class StaticTokenAuthenticator:
    """A bearer token the caller already has; used as is, never refreshed."""

    def __init__(self, token: str) -> None:
        register_secret(token)
        # A secret-holding type: vars(), debuggers and crash reporters show no token.
        self._token = SecretStr(token)

    def __repr__(self) -> str:
        return "StaticTokenAuthenticator(token=[REDACTED])"

    async def token(self) -> str:
        return self._token.get_secret_value()

    async def invalidate(self, rejected: str) -> bool:
        return False


@dataclass(frozen=True)
class _IssuedToken:
    secret: SecretStr
    expires_at: float
    refresh_at: float

    @property
    def value(self) -> str:
        return self.secret.get_secret_value()


class IAMAuthenticator:
    """Exchanges an IBM Cloud API key for bearer tokens at IAM, refreshing ahead of expiry."""

    def __init__(
        self,
        api_key: str,
        *,
        http: httpx.AsyncClient,
        iam_url: str,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        register_secret(api_key)
        self._api_key = SecretStr(api_key)
        self._http = http
        self._iam_url = iam_url
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._current: _IssuedToken | None = None
        self._lock = anyio.Lock()
        #: Successful exchanges so far; for tests and diagnostics.
        self.exchanges = 0

    def __repr__(self) -> str:
        return f"IAMAuthenticator(iam_url={self._iam_url!r}, api_key=[REDACTED])"

    async def token(self) -> str:
        seen = self._current
        if seen is not None and self._clock() < seen.refresh_at:
            return seen.value
        async with self._lock:
            current = self._current
            # Someone else refreshed while we waited for the lock: use their token.
            if current is not None and (current is not seen or self._clock() < current.refresh_at):
                return current.value
            try:
                self._current = await self._exchange()
            except APIError:
                if current is not None and self._clock() < current.expires_at - _EXPIRY_SKEW:
                    logger.warning("IAM token refresh failed; the current token is still valid")
                    return current.value
                raise
            return self._current.value

    async def invalidate(self, rejected: str) -> bool:
        async with self._lock:
            if self._current is not None and self._current.value == rejected:
                self._current = None
        return True

    async def _exchange(self) -> _IssuedToken:
        async def attempt(_notes: AttemptNotes) -> _IssuedToken:
            try:
                response = await self._http.post(
                    self._iam_url,
                    data={
                        "grant_type": _APIKEY_GRANT,
                        "apikey": self._api_key.get_secret_value(),
                    },
                    headers={"Authorization": _IAM_CLIENT_AUTH, "Accept": "application/json"},
                )
            except httpx.HTTPError as exc:
                raise classify_transport_error(exc, "POST", self._iam_url) from None
            return self._read_exchange(response)

        # When this gives up, the request that needed the token gives up too (`decide` is told
        # the failure was in the exchange), or one call would make max_attempts**2 IAM requests.
        issued = await run_with_retries(self._retry, attempt, description="IAM token exchange")
        self.exchanges += 1
        logger.debug("IAM issued a token valid for %.0f s", issued.expires_at - self._clock())
        return issued

    def _read_exchange(self, response: httpx.Response) -> _IssuedToken:
        if response.status_code != 200:
            error = status_error(response, operation="IAM token exchange")
            if 400 <= response.status_code < 500 and response.status_code != 429:
                raise AuthenticationError(
                    f"IAM refused the API key ({error.message}). Check the key "
                    "(WATSONX_APIKEY) and the IAM URL.",
                    status_code=response.status_code,
                    method="POST",
                    url=self._iam_url,
                    errors=error.errors,
                    trace=error.trace,
                )
            raise error
        try:
            body = response.json()
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or not isinstance(body, dict):
            raise UnexpectedResponseError(
                "IAM answered 200 without an access_token",
                method="POST",
                url=self._iam_url,
                status_code=200,
            )
        register_secret(token)
        now = self._clock()
        expires_at = jwt_expiry(token)
        if expires_at is None:
            expires_in = body.get("expires_in")
            expires_at = now + (
                float(expires_in) if isinstance(expires_in, int | float) else 3600.0
            )
        lifetime = max(0.0, expires_at - now)
        margin = min(_MAX_MARGIN, lifetime / 3)
        return _IssuedToken(
            secret=SecretStr(token), expires_at=expires_at, refresh_at=expires_at - margin
        )
