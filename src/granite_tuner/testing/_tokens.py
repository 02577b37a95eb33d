"""Bearer tokens: JWTs signed by the fake, as IBM Cloud IAM would issue them.

Clients decode the ``exp`` claim of an IAM access token to know when to refresh it (the
official SDK does, protocol §3.1), so the fake's tokens are real JWTs: ``header.payload.
signature``, base64url without padding, HMAC-SHA256 over the first two parts with a secret
that only this fake knows. A token is accepted when the signature matches, ``exp`` is still in
the future and it was not revoked by `TokenIssuer.expire_all`.

Every token carries a serial number (``jti``); ``expire_all`` simply remembers the next serial,
so "every token issued so far" is revoked without timing games.

The claims are plain ASCII without ``>``, ``?`` or ``~``: then the base64url payload has no
``-`` or ``_`` and decodes the same with the standard alphabet, which the official SDK uses
(``utils/auth/base_auth/utils.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

TokenProblem = Literal["authorization_rejected", "authentication_token_expired"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking a token: ``problem`` is None when the token is good."""

    problem: TokenProblem | None
    message: str = ""


class TokenIssuer:
    """Issues and verifies the fake's JWTs; thread-safe."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._next_serial = 1
        self._revoked_below = 1

    def issue(self, lifetime: float, subject: str = "fake-user") -> tuple[str, int]:
        """A new token valid for at least ``lifetime`` seconds, and its ``exp`` (epoch seconds).

        A lifetime of zero or less gives a token that is already expired.
        """
        with self._lock:
            serial = self._next_serial
            self._next_serial += 1
        now = time.time()
        expires = math.ceil(now + lifetime)
        header = {"alg": "HS256", "typ": "JWT", "kid": "fake-watsonx"}
        payload = {
            "iam_id": "IBMid-fake0000",
            "id": "IBMid-fake0000",
            "sub": subject,
            "realmid": "IBMid",
            "grant_type": "urn:ibm:params:oauth:grant-type:apikey",
            "iat": int(now),
            "exp": expires,
            "jti": str(serial),
            "iss": "https://iam.cloud.ibm.com/identity",
        }
        signing_input = f"{_b64url(_canonical(header))}.{_b64url(_canonical(payload))}"
        signature = hmac.new(self._secret, signing_input.encode("ascii"), hashlib.sha256)
        return f"{signing_input}.{_b64url(signature.digest())}", expires

    def expire_all(self) -> None:
        """Treat every token issued so far as expired; later tokens are not affected."""
        with self._lock:
            self._revoked_below = self._next_serial

    def verify(self, token: str) -> Verdict:
        """Check a bearer token's signature, expiry and revocation."""
        parts = token.split(".")
        if len(parts) != 3:
            return Verdict("authorization_rejected", "The bearer token is not a JWT.")
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii", errors="replace")
        expected = hmac.new(self._secret, signing_input, hashlib.sha256).digest()
        try:
            signature = _b64url_decode(parts[2])
            payload: Any = json.loads(_b64url_decode(parts[1]))
        except ValueError:
            return Verdict("authorization_rejected", "The bearer token cannot be decoded.")
        if not hmac.compare_digest(signature, expected) or not isinstance(payload, dict):
            return Verdict("authorization_rejected", "The bearer token signature is not valid.")
        with self._lock:
            revoked_below = self._revoked_below
        if int(payload.get("jti", "0")) < revoked_below:
            return Verdict("authentication_token_expired", "The bearer token has expired.")
        if float(payload.get("exp", 0)) <= time.time():
            return Verdict("authentication_token_expired", "The bearer token has expired.")
        return Verdict(None)


def _canonical(claims: dict[str, Any]) -> bytes:
    return json.dumps(claims, separators=(",", ":"), ensure_ascii=True).encode("ascii")
