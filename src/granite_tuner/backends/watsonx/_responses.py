"""Turning HTTP outcomes into typed errors: status answers, transport failures, bad bodies.

This is the only place that reads watsonx error bodies. They come in a few shapes:
`{"trace", "errors": [{"code", "message", "more_info"}]}` from the ML and platform APIs,
`{"errorCode", "errorMessage"}` from IAM, and sometimes plain text from a gateway.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from granite_tuner._retry import parse_retry_after
from granite_tuner.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServiceErrorDetail,
    UnexpectedResponseError,
)

__all__ = [
    "classify_transport_error",
    "parse_error_body",
    "parse_error_item",
    "read_json",
    "status_error",
]

T = TypeVar("T")

_HINTS: dict[int, str] = {
    400: "Fix the values the service names above.",
    401: "Check the API key or token (WATSONX_APIKEY / WATSONX_TOKEN).",
    403: "Check that these credentials may use the project or space "
    "(WATSONX_PROJECT_ID / WATSONX_SPACE_ID).",
    404: "Check the id; the object may have been deleted.",
    409: "The object already exists or is busy; look it up instead of creating it again.",
    429: "The service's rate limit was still exceeded after retrying; lower the request rate "
    "or concurrency, or try later.",
}
_SERVER_HINT = "The service failed; it was retried. Try again later."

_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitError,
}

# Longest excerpt of a non-JSON error body quoted in a message.
_MAX_TEXT_EXCERPT = 300


def parse_error_body(response: httpx.Response) -> tuple[tuple[ServiceErrorDetail, ...], str | None]:
    """The `errors[]` and `trace` of an error answer, whatever shape it came in."""
    trace = response.headers.get("x-global-transaction-id")
    try:
        body: Any = response.json()
    except (ValueError, UnicodeDecodeError):
        text = response.text.strip()[:_MAX_TEXT_EXCERPT] if response.content else ""
        return ((ServiceErrorDetail(message=text),) if text else ()), trace
    if not isinstance(body, dict):
        return (), trace
    if isinstance(body.get("trace"), str):
        trace = body["trace"]
    details: list[ServiceErrorDetail] = []
    raw_errors = body.get("errors")
    if isinstance(raw_errors, list):
        for item in raw_errors:
            detail = parse_error_item(item)
            if detail is not None:
                details.append(detail)
    elif isinstance(body.get("errorMessage"), str):  # IAM
        details.append(ServiceErrorDetail(code=body.get("errorCode"), message=body["errorMessage"]))
    elif isinstance(body.get("message"), str):
        details.append(ServiceErrorDetail(code=body.get("code"), message=body["message"]))
    return tuple(details), trace


def parse_error_item(item: Any) -> ServiceErrorDetail | None:
    """One `errors[]` entry: a dict with `message`, a JSON string of one, or plain text."""
    if isinstance(item, str):
        # Some failure lists hold JSON strings, others plain text.
        try:
            item = json.loads(item)
        except ValueError:
            return ServiceErrorDetail(message=item)
    if isinstance(item, dict) and isinstance(item.get("message"), str):
        try:
            return ServiceErrorDetail.model_validate(item)
        except ValidationError:
            return ServiceErrorDetail(message=item["message"])
    return None


def status_error(
    response: httpx.Response,
    *,
    operation: str,
) -> APIStatusError:
    """The typed error for an error status (whether it is retried is `_retry.decide`'s call)."""
    status = response.status_code
    errors, trace = parse_error_body(response)
    reason = response.reason_phrase or ""
    said = "; ".join(str(e) for e in errors)
    hint = _HINTS.get(status, _SERVER_HINT if status >= 500 else "")
    parts = [f"{operation} failed with HTTP {status} {reason}".rstrip() + "."]
    if said:
        parts.append(f"The service said: {said.rstrip('.')}.")
    if hint:
        parts.append(hint)
    if trace:
        parts.append(f"(trace {trace})")
    cls = _STATUS_CLASSES.get(status, ServerError if status >= 500 else APIStatusError)
    return cls(
        " ".join(parts),
        status_code=status,
        method=response.request.method,
        url=str(response.request.url),
        errors=errors,
        trace=trace,
        retry_after=parse_retry_after(response.headers) if status in (429, 503) else None,
    )


def _is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def classify_transport_error(exc: httpx.HTTPError, method: str, url: str) -> APIConnectionError:
    """The typed error for a failure below HTTP: which ones may have reached the server."""
    where = f"{method} {url}"
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return APITimeoutError(
            f"{where}: could not connect in time ({type(exc).__name__}). "
            "Check the URL and the network; raise `timeout` if the service is slow.",
            method=method,
            url=url,
        )
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(
            f"{where}: no answer in time ({type(exc).__name__}); the request may have been "
            "processed. Raise `timeout` if the service is slow.",
            method=method,
            url=url,
            may_have_been_processed=True,
        )
    if isinstance(exc, httpx.ConnectError):
        if _is_certificate_error(exc):
            return APIConnectionError(
                f"{where}: the server's TLS certificate could not be verified. Give the CA "
                "bundle that signed it: `verify=` in Python, WATSONX_CA_BUNDLE, or "
                "--ca-bundle on the command line (verification stays on unless you pass "
                "verify=False).",
                method=method,
                url=url,
                transient=False,
            )
        setting = (
            "the IAM URL (iam_url=, WATSONX_IAM_URL, --iam-url)"
            if urlsplit(url).path.endswith("/identity/token")
            else "the URL (url=, WATSONX_URL, --url)"
        )
        return APIConnectionError(
            f"{where}: could not connect ({exc}). Check {setting} and the network.",
            method=method,
            url=url,
        )
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError | httpx.DecodingError):
        # Plain HTTP sent to an HTTPS port ends like this too: the server hangs up.
        scheme_hint = (
            " If the server speaks HTTPS, use an https:// URL (WATSONX_URL)."
            if url.lower().startswith("http://")
            else ""
        )
        return APIConnectionError(
            f"{where}: the connection broke before a complete answer arrived "
            f"({type(exc).__name__}); the request may have been processed.{scheme_hint}",
            method=method,
            url=url,
            may_have_been_processed=True,
        )
    return APIConnectionError(
        f"{where}: {type(exc).__name__}: {exc}", method=method, url=url, transient=False
    )


def read_json(response: httpx.Response, parse: Callable[[Any], T], *, operation: str) -> T:
    """Parse a success body with `parse`; a body that does not fit is an UnexpectedResponseError."""
    try:
        body = response.json()
        return parse(body)
    except (ValueError, TypeError, KeyError, ValidationError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else type(exc).__name__
        raise UnexpectedResponseError(
            f"{operation}: the service answered HTTP {response.status_code} with a body that "
            f"does not match the protocol ({detail}).",
            method=response.request.method,
            url=str(response.request.url),
            status_code=response.status_code,
        ) from None
