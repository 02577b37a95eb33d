"""API keys and the bearer tokens the server's IAM-style endpoint issues for them.

IBM's SDK exchanges an API key for a bearer token (`POST /identity/token`, protocol §3.1) and
reads the token's expiry from its JWT `exp` claim, so tokens here are JWTs (HS256). Each is
signed with a secret derived from the API key it was issued for, so that

- no server-side session state is kept: a token stays valid across restarts, and across
  replicas behind a load balancer that share the keys, until it expires;
- removing a key from the configuration invalidates every token issued for it.

The OpenAI client sends the API key itself as its bearer token; that is accepted too. A caller
is known by its key's fingerprint (the first 12 hex digits of its SHA-256), which is what limits
are counted by and the only thing about a key that may reach a log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ANONYMOUS", "IssuedToken", "Keys", "fingerprint"]

ANONYMOUS = "anonymous"
_HEADER = {"alg": "HS256", "typ": "JWT"}
_CONTEXT = b"granite-tuner serve token v1"


def fingerprint(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:12]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    expiration: int


class Keys:
    """The configured API keys; issues and checks tokens. Never shows a key in its repr."""

    def __init__(self, api_keys: Sequence[str], *, token_ttl: int = 3600) -> None:
        self._secrets: dict[str, bytes] = {}
        self._keys: dict[str, bytes] = {}
        for key in api_keys:
            ident = fingerprint(key)
            self._keys[ident] = key.encode("utf-8")
            self._secrets[ident] = hmac.new(key.encode("utf-8"), _CONTEXT, "sha256").digest()
        self.token_ttl = token_ttl
        # Without keys (--insecure-no-auth) tokens are still handed out, for IBM's SDK to
        # exchange its key for; they are signed with a secret that dies with the process.
        self._secrets[ANONYMOUS] = os.urandom(32)

    def __repr__(self) -> str:
        return f"Keys(<{len(self._keys)} keys>)"

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def caller_of_key(self, api_key: str) -> str | None:
        """The fingerprint of `api_key` if it is configured (compared in constant time)."""
        ident = fingerprint(api_key)
        known = self._keys.get(ident)
        if known is not None and hmac.compare_digest(known, api_key.encode("utf-8")):
            return ident
        return None

    def issue(self, api_key: str) -> IssuedToken | None:
        """A bearer token for a configured key; None for any other key.

        Without configured keys every key gets an anonymous token.
        """
        ident = self.caller_of_key(api_key) if self.enabled else ANONYMOUS
        if ident is None:
            return None
        now = int(time.time())
        payload = {"sub": ident, "iat": now, "exp": now + self.token_ttl, "iss": "granite-tuner"}
        signing_input = (
            _b64(json.dumps(_HEADER).encode()) + "." + _b64(json.dumps(payload).encode())
        )
        signature = hmac.new(self._secrets[ident], signing_input.encode("ascii"), "sha256")
        token = signing_input + "." + _b64(signature.digest())
        return IssuedToken(token, self.token_ttl, now + self.token_ttl)

    def caller_of_bearer(self, bearer: str) -> tuple[str | None, str]:
        """(caller, "") for a valid token or key; (None, why) otherwise."""
        parts = bearer.split(".")
        if len(parts) != 3:
            ident = self.caller_of_key(bearer)
            return (ident, "") if ident else (None, "The API key or token is not valid.")
        try:
            payload = json.loads(_unb64(parts[1]))
            signature = _unb64(parts[2])
        except ValueError:
            return None, "The bearer token is malformed."
        ident = payload.get("sub") if isinstance(payload, dict) else None
        secret = self._secrets.get(ident) if isinstance(ident, str) else None
        if secret is None:
            return None, "The bearer token was not issued for a key this server accepts."
        expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode("ascii"), "sha256").digest()
        if not hmac.compare_digest(expected, signature):
            return None, "The bearer token's signature is not valid."
        expiry = payload.get("exp")
        if not isinstance(expiry, int) or expiry <= time.time():
            return None, "The bearer token has expired; exchange the API key for a new one."
        assert isinstance(ident, str)
        return ident, ""
