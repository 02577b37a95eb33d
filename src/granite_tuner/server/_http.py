"""The few HTTP pieces the server needs on top of bare ASGI: requests, responses, a router.

Why bare ASGI and not a web framework: the server has a dozen routes, two error shapes and one
streaming pattern; a framework would add a dependency and a second way of doing each of them.
The production concerns (HTTP parsing, keep-alive, TLS, signals, graceful shutdown) are left to
uvicorn, which runs the app.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs

from granite_tuner.server._wire import WireError

if TYPE_CHECKING:
    from granite_tuner.server._context import Context

__all__ = [
    "ASGIApp",
    "Message",
    "Receive",
    "Request",
    "Response",
    "Route",
    "Scope",
    "Send",
    "Streamed",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

Surface = Literal["watsonx", "openai", "iam", "plain"]


@dataclass
class Request:
    """One request, its body read (and bounded) before any handler sees it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    base_url: str
    path_params: dict[str, str] = field(default_factory=dict)
    caller: str = "anonymous"  # which API key is calling (its fingerprint), for limits

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; 400 saying what is wrong otherwise."""
        if not self.body.strip():
            raise WireError(400, "The request body is empty; send a JSON object.", "json_parse")
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            message = f"The request body is not valid JSON: {exc}."
            raise WireError(400, message, "json_parse") from None
        if not isinstance(value, dict):
            raise WireError(400, "The request body must be a JSON object.", "json_type")
        return value

    def form(self) -> dict[str, str]:
        try:
            parsed = parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise WireError(400, "The form body is not UTF-8.") from None
        return {name: values[0] for name, values in parsed.items()}


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    @classmethod
    def json(
        cls, value: Any, *, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        return cls(status, json.dumps(value).encode("utf-8"), dict(headers or {}))


@dataclass
class Streamed:
    """A response whose body is produced piece by piece (server-sent events).

    `events` yields encoded events; `on_error` turns an error raised while streaming (after
    the 200 went out) into a last event in the surface's own error shape.
    """

    events: AsyncGenerator[bytes]
    on_error: Callable[[WireError], bytes]
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream"


Handler = Callable[["Context", Request], Awaitable[Response | Streamed]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    surface: Surface
    public: bool = False  # no credentials needed
    limited: bool = False  # counts against the caller's rate and concurrency limits


def route(
    method: str,
    template: str,
    handler: Handler,
    surface: Surface,
    *,
    public: bool = False,
    limited: bool = False,
) -> Route:
    """A route from a template such as `/ml/v1/deployments/{deployment_id}/text/generation`."""
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
    return Route(method, re.compile(f"^{regex}$"), handler, surface, public, limited)


def surface_of(path: str) -> Surface:
    """Which error shape a path answers in, also for paths no route matches."""
    if path.startswith("/v1/"):
        return "openai"
    if path.startswith("/identity/"):
        return "iam"
    return "watsonx"


def find_route(routes: list[Route], method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route for this request and its path parameters; 404 or 405 when there is none."""
    path_matches = False
    for candidate in routes:
        match = candidate.pattern.match(path)
        if match is None:
            continue
        path_matches = True
        if candidate.method == method:
            return candidate, match.groupdict()
    if path_matches:
        raise WireError(405, f"Method {method} is not allowed on {path}.", "method_not_allowed")
    raise WireError(404, f"No resource at {method} {path}.", "not_found")
