"""One logical watsonx.ai request: endpoint rules applied, token attached, retried safely.

Every call of the client goes through `Transport.request_json` or `request_no_content`:

- the `Endpoint` decides host, `version` and where the project/space id goes;
- the authenticator supplies the bearer token; a 401 drops it and retries once at once
  (another caller may already be fetching the new one: only one exchange happens);
- whether a failed attempt is retried, after how long, and whether a create is looked up
  before it is sent again is `granite_tuner._retry.decide`'s answer, applied by
  `run_with_retries`. The transport only tells it the facts: whether the request may be
  repeated (GET, PUT, DELETE, or `safe_to_repeat`), the `find_existing` lookup of a create,
  and what happened besides the error (a dropped token, a failed token exchange).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from granite_tuner._attempts import note_attempt
from granite_tuner._retry import AttemptNotes, RetryPolicy, parse_retry_after, run_with_retries
from granite_tuner._secrets import get_logger
from granite_tuner.backends.watsonx._endpoints import Endpoint, Scope
from granite_tuner.backends.watsonx._responses import (
    classify_transport_error,
    read_json,
    status_error,
)
from granite_tuner.backends.watsonx.auth import Authenticator
from granite_tuner.errors import APIError, NotFoundError, UnexpectedResponseError
from granite_tuner.limits import RateLimiter, SentRequest

__all__ = ["Transport"]

logger = get_logger("granite_tuner.watsonx")

T = TypeVar("T")

_SAFE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
#: Parsed URLs kept per transport; a client's calls use a handful (one per model or deployment).
_CACHED_TARGETS = 256


@dataclass
class _Call:
    """One logical request, and what it has learned across its attempts."""

    method: str
    url: str
    #: `url` with the query string, parsed once (httpx would parse a string and its params
    #: again on every attempt).
    target: httpx.URL
    body: dict[str, Any] | None
    expect: frozenset[int]
    safe: bool
    operation: str
    rate_limited: bool
    reauthenticated: bool = False


class Transport:
    """Sends requests for one client: its hosts, scope, credentials and retry policy."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        ml_url: str,
        platform_url: str,
        scope: Scope,
        api_version: str,
        auth: Authenticator,
        retry: RetryPolicy,
        limiter: RateLimiter,
    ) -> None:
        self.http = http
        self.limiter = limiter
        self.ml_url = ml_url.rstrip("/")
        self.platform_url = platform_url.rstrip("/")
        self.scope = scope
        self.api_version = api_version
        self.auth = auth
        self.retry = retry
        self._targets: dict[tuple[str, tuple[tuple[str, type, Any], ...]], httpx.URL] = {}

    def url_for(self, endpoint: Endpoint, path: Mapping[str, str] | None = None) -> str:
        base = self.ml_url if endpoint.host == "ml" else self.platform_url
        return base + endpoint.format_path(**(path or {}))

    def _target(self, url: str, query: dict[str, Any]) -> httpx.URL:
        """`url` with `query`, parsed; repeated requests (generation) reuse the parsed URL.

        The key holds each value's type: 1, 1.0 and True are equal as keys but render as
        "1", "1.0" and "true"."""
        key = None
        if all(map(_plain_value, query.values())):
            key = (url, tuple((name, type(value), value) for name, value in query.items()))
        if key is not None and (cached := self._targets.get(key)) is not None:
            return cached
        target = httpx.URL(url, params=query)
        if key is not None:
            if len(self._targets) >= _CACHED_TARGETS:
                self._targets.clear()
            self._targets[key] = target
        return target

    def _prepare(
        self,
        method: str,
        endpoint: Endpoint,
        path: Mapping[str, str] | None,
        params: Mapping[str, Any] | None,
        json: dict[str, Any] | None,
        expect: frozenset[int],
        safe_to_repeat: bool | None,
        operation: str,
    ) -> _Call:
        """Apply the endpoint's rules: host, `version`, and where the scope goes."""
        url = self.url_for(endpoint, path)
        query = endpoint.query(self.scope, self.api_version, dict(params) if params else None)
        return _Call(
            method=method,
            url=url,
            target=self._target(url, query),
            body=endpoint.body(self.scope, json),
            expect=expect,
            safe=method in _SAFE_METHODS if safe_to_repeat is None else safe_to_repeat,
            operation=operation,
            rate_limited=endpoint.rate_limited,
        )

    async def request_json(
        self,
        method: str,
        endpoint: Endpoint,
        *,
        parse: Callable[[Any], T],
        path: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        expect: frozenset[int] = frozenset({200}),
        safe_to_repeat: bool | None = None,
        find_existing: Callable[[], Awaitable[T | None]] | None = None,
        operation: str,
    ) -> T:
        """Send, retry as the policy decides, and parse the success body with `parse`."""
        call = self._prepare(
            method, endpoint, path, params, json, expect, safe_to_repeat, operation
        )

        async def attempt(notes: AttemptNotes) -> T:
            response = await self._send(call, notes)
            return read_json(response, parse, operation=operation)

        return await run_with_retries(
            self.retry,
            attempt,
            description=operation,
            repeatable=call.safe,
            look_up=None if call.safe else find_existing,
        )

    async def request_no_content(
        self,
        method: str,
        endpoint: Endpoint,
        *,
        path: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        expect: frozenset[int] = frozenset({200, 202, 204}),
        safe_to_repeat: bool | None = None,
        operation: str,
    ) -> None:
        """Send a request whose answer carries nothing we need (deletes, completions)."""
        call = self._prepare(
            method, endpoint, path, params, json, expect, safe_to_repeat, operation
        )
        earlier_may_have_landed = False

        async def attempt(notes: AttemptNotes) -> None:
            nonlocal earlier_may_have_landed
            try:
                await self._send(call, notes)
            except NotFoundError:
                # A DELETE whose earlier attempt may have landed: gone is what we wanted.
                if method == "DELETE" and earlier_may_have_landed:
                    return
                raise
            except APIError as exc:
                earlier_may_have_landed = earlier_may_have_landed or exc.may_have_been_processed
                raise

        await run_with_retries(self.retry, attempt, description=operation, repeatable=call.safe)

    async def _send(self, call: _Call, notes: AttemptNotes) -> httpx.Response:
        """One HTTP exchange; any failure comes out as a typed APIError. What the retry policy
        must know besides the error (the token was dropped, getting one failed) goes in `notes`."""
        try:
            token = await self.auth.token()
        except APIError:
            notes.in_token_exchange = True
            raise
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        note_attempt()
        started = time.perf_counter()
        try:
            if call.rate_limited:
                async with self.limiter.slot() as sent:
                    response = await self._exchange(call, headers)
                self._report_to_limiter(response, sent)
            else:
                response = await self._exchange(call, headers)
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc, call.method, call.url) from None
        elapsed = time.perf_counter() - started
        logger.debug("%s %s -> %d (%.3f s)", call.method, call.url, response.status_code, elapsed)
        if response.status_code in call.expect:
            return response
        if 200 <= response.status_code < 300:
            # A success, just not the one the protocol names: the server did act, so this is
            # no error status (a create is then looked up, not sent again).
            raise UnexpectedResponseError(
                f"{call.operation}: the service answered HTTP {response.status_code}, not "
                f"{' or '.join(map(str, sorted(call.expect)))} as the protocol promises.",
                method=call.method,
                url=call.url,
                status_code=response.status_code,
            )
        error = status_error(response, operation=call.operation)
        if response.status_code == 401 and not call.reauthenticated:
            call.reauthenticated = True
            notes.token_dropped = await self.auth.invalidate(token)
        raise error

    async def _exchange(self, call: _Call, headers: dict[str, str]) -> httpx.Response:
        return await self.http.request(call.method, call.target, json=call.body, headers=headers)

    def _report_to_limiter(self, response: httpx.Response, sent: SentRequest) -> None:
        """Feed the service's rate signals back to the limiter, matched to the request."""
        headers = response.headers
        remaining = _header_number(headers.get("x-requests-limit-remaining"))
        rate = _header_number(headers.get("x-requests-limit-rate"))
        retry_after = parse_retry_after(headers) if response.status_code == 429 else None
        self.limiter.observe(
            status=response.status_code,
            remaining=None if remaining is None else int(remaining),
            retry_after=retry_after,
            limit_rate=rate,
            sent=sent,
        )

    async def put_bytes(self, url: str, content: bytes, *, operation: str) -> None:
        """PUT raw bytes to a pre-signed URL: no token, no content type (protocol §5 step 3)."""

        async def attempt(_notes: AttemptNotes) -> None:
            try:
                response = await self.http.put(url, content=content)
            except httpx.HTTPError as exc:
                raise classify_transport_error(exc, "PUT", url) from None
            if response.status_code not in (200, 201, 204):
                raise status_error(response, operation=operation)

        await run_with_retries(self.retry, attempt, description=operation)


def _plain_value(value: Any) -> bool:
    """A query value that can key the URL cache (lists and other containers are not cached)."""
    return isinstance(value, str | int | float | bool)


def _header_number(value: str | None) -> float | None:
    """A rate-limit header as a number; None when absent or not a finite number >= 0."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
