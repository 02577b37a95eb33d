"""Plain request/response values and the watsonx error body.

The fake has no web framework: the ASGI glue in ``_app`` turns each ASGI request into a
`Request`, a handler returns a `Response`, and anything that should become an
error response is raised as `ApiError`. Every error the fake sends uses the one body
shape watsonx uses (protocol §2):

    {"trace": "<id>", "errors": [{"code", "message", "more_info"}], "status_code": n}
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

MORE_INFO = "https://cloud.ibm.com/apidocs/watsonx-ai"

# The error code the fake uses for a status when a handler does not name a more specific one.
DEFAULT_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "authorization_rejected",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    429: "rate_limit_exceeded",
    500: "internal_server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def new_trace_id() -> str:
    """A fresh trace id, as watsonx puts in ``trace`` and ``x-global-transaction-id``."""
    return uuid.uuid4().hex


def error_body(status: int, code: str | None, message: str, trace: str) -> dict[str, Any]:
    """The watsonx error body (protocol §2)."""
    return {
        "trace": trace,
        "errors": [
            {
                "code": code or DEFAULT_CODES.get(status, "error"),
                "message": message,
                "more_info": MORE_INFO,
            }
        ],
        "status_code": status,
    }


class ApiError(Exception):
    """Raised by a handler to answer with a watsonx error body instead of its normal result."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or DEFAULT_CODES.get(status, "error")
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class Response:
    """What a handler answers: a status, extra headers and the body bytes."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = "application/json"

    @classmethod
    def json(
        cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        return cls(status, json.dumps(payload).encode(), dict(headers or {}))

    @classmethod
    def empty(cls, status: int = 204) -> Response:
        return cls(status, b"", {}, None)


@dataclass
class Request:
    """One HTTP request as the handlers see it (the body is already read in full)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    base_url: str
    trace: str
    path_params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        method: str,
        path: str,
        query_string: bytes,
        headers: dict[str, str],
        body: bytes,
        base_url: str,
    ) -> Request:
        query = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
        return cls(method.upper(), path, query, headers, body, base_url, new_trace_id())

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    def flag(self, name: str) -> bool:
        """A boolean query parameter (``true``/``1``)."""
        return (self.param(name) or "").lower() in {"true", "1"}

    def int_param(self, name: str, default: int, low: int, high: int) -> int:
        """An integer query parameter within ``[low, high]``, else 400."""
        raw = self.param(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, f"Query parameter '{name}' must be an integer.") from None
        if not low <= value <= high:
            raise ApiError(400, f"Query parameter '{name}' must be between {low} and {high}.")
        return value

    def json_body(self) -> dict[str, Any]:
        """The body as a JSON object, else 400 (as watsonx answers a body it cannot read)."""
        try:
            payload = json.loads(self.body)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "The request body is not valid JSON.", "json_parse_error") from None
        if not isinstance(payload, dict):
            raise ApiError(400, "The request body must be a JSON object.", "json_type_error")
        return payload

    def url_with(self, **changes: str) -> str:
        """This request's absolute URL with some query parameters replaced (for ``next.href``)."""
        query = {name: list(values) for name, values in self.query.items()}
        for name, value in changes.items():
            query[name] = [value]
        return f"{self.base_url}{self.path}?{urlencode(query, doseq=True)}"
