"""The ASGI app: one table of routes, and the steps every request goes through.

For each request the app

1. reads the whole body and records the request (``fake.requests``);
2. asks ``fake.faults`` whether a fault hits it, and applies the fault's "before" part;
3. finds the route (404/405 otherwise), checks the bearer token unless the route is public
   (401), checks ``version`` on ``/ml/*`` (400), and runs the handler;
4. turns an `ApiError` into the watsonx error body, applies the fault's "after" part
   (drop, malformed, truncated, slow body) and sends the response with
   ``x-global-transaction-id``.

Handlers are plain ``async def handler(fake, request) -> Response`` functions in the modules
named after what they serve.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from . import _assets, _catalog, _deployments, _generation, _platform, _streaming, _trainings
from ._faults import Fault
from ._http import ApiError, Request, Response, error_body
from ._server import ConnectionDropped, Receive, Scope, Send
from ._state import RecordedRequest

if TYPE_CHECKING:
    from ._view import FakeView

logger = logging.getLogger("granite_tuner.testing")

Handler = Callable[["FakeView", Request], Awaitable[Response]]

VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MALFORMED_BODY = b'{"metadata": {"id": "tru'


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    public: bool  # no bearer token needed


def _route(method: str, template: str, handler: Handler, *, public: bool = False) -> Route:
    """A route from a template such as ``/v2/assets/{asset_id}``."""
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
    return Route(method, re.compile(f"^{regex}$"), handler, public)


ROUTES: list[Route] = [
    # IBM Cloud IAM and the fake object storage behind the upload URLs
    _route("POST", "/identity/token", _platform.iam_token, public=True),
    _route("PUT", "/_fake_cos/{asset_id}/{attachment_id}", _assets.cos_upload, public=True),
    _route("GET", "/_fake_cos/{asset_id}/{attachment_id}", _assets.cos_download, public=True),
    # data platform: projects, spaces, prompt templates, data assets
    _route("GET", "/v2/projects/{project_id}", _platform.get_project),
    _route("GET", "/v2/spaces/{space_id}", _platform.get_space),
    _route("GET", "/wx/v1/prompts/{prompt_id}", _platform.not_supported),
    _route("POST", "/v2/assets", _assets.create_asset),
    _route("GET", "/v2/assets/{asset_id}", _assets.get_asset),
    _route("DELETE", "/v2/assets/{asset_id}", _assets.delete_asset),
    _route("POST", "/v2/assets/{asset_id}/attachments", _assets.create_attachment),
    _route("GET", "/v2/assets/{asset_id}/attachments/{attachment_id}", _assets.get_attachment),
    _route(
        "POST",
        "/v2/assets/{asset_id}/attachments/{attachment_id}/complete",
        _assets.complete_attachment,
    ),
    _route("POST", "/v2/asset_types/data_asset/search", _assets.search_assets),
    # ML: model catalogue (public, as on IBM Cloud), trainings, deployments, generation
    _route("GET", "/ml/v1/foundation_model_specs", _catalog.get_model_specs, public=True),
    _route("GET", "/ml/v1/foundation_model_tasks", _catalog.get_model_tasks, public=True),
    _route("GET", "/ml/v1/fine_tunings", _platform.not_supported),
    _route("POST", "/ml/v4/trainings", _trainings.create_training),
    _route("GET", "/ml/v4/trainings", _trainings.list_trainings),
    _route("GET", "/ml/v4/trainings/{training_id}", _trainings.get_training),
    _route("DELETE", "/ml/v4/trainings/{training_id}", _trainings.delete_training),
    _route("POST", "/ml/v4/deployments", _deployments.create_deployment),
    _route("GET", "/ml/v4/deployments", _deployments.list_deployments),
    _route("GET", "/ml/v4/deployments/{deployment_id}", _deployments.get_deployment),
    _route("DELETE", "/ml/v4/deployments/{deployment_id}", _deployments.delete_deployment),
    _route("POST", "/ml/v1/text/generation", _generation.generate),
    _route(
        "POST",
        "/ml/v1/deployments/{deployment_id}/text/generation",
        _generation.generate_with_deployment,
    ),
    # streaming and chat (granite_tuner.server builds the same bodies)
    _route("POST", "/ml/v1/text/generation_stream", _streaming.generate_stream),
    _route("POST", "/ml/v1/text/chat", _streaming.chat),
    _route("POST", "/ml/v1/text/chat_stream", _streaming.chat_stream),
    _route(
        "POST",
        "/ml/v1/deployments/{deployment_id}/text/generation_stream",
        _streaming.deployment_generate_stream,
    ),
    _route("POST", "/ml/v1/deployments/{deployment_id}/text/chat", _streaming.deployment_chat),
    _route(
        "POST",
        "/ml/v1/deployments/{deployment_id}/text/chat_stream",
        _streaming.deployment_chat_stream,
    ),
]


def _find_route(req: Request) -> Route:
    """The route for this request (fills ``path_params``); 404 or 405 when there is none."""
    path_matches = False
    for route in ROUTES:
        match = route.pattern.match(req.path)
        if match is None:
            continue
        path_matches = True
        if route.method == req.method:
            req.path_params = match.groupdict()
            return route
    if path_matches:
        raise ApiError(405, f"Method {req.method} is not allowed on {req.path}.")
    raise ApiError(404, f"No resource at {req.method} {req.path}.")


def _check_token(fake: FakeView, req: Request, force_expired: bool) -> None:
    """401 unless the request carries a valid bearer token issued by this fake."""
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "A bearer token is required.", "authorization_rejected")
    verdict = fake._tokens.verify(token.strip())
    if force_expired and verdict.problem is None:
        raise ApiError(401, "The bearer token has expired.", "authentication_token_expired")
    if verdict.problem is not None:
        raise ApiError(401, verdict.message, verdict.problem)


def _check_version(req: Request) -> None:
    """400 unless an ``/ml/*`` request names an API ``version`` date."""
    if not req.path.startswith("/ml/"):
        return
    version = req.param("version")
    if not version:
        raise ApiError(400, "Missing query parameter 'version'.", "missing_version")
    if not VERSION.match(version):
        raise ApiError(400, f"Invalid version '{version}': expected YYYY-MM-DD.", "invalid_version")


def _error(req: Request, error: ApiError) -> Response:
    body = error_body(error.status, error.code, error.message, req.trace)
    return Response.json(body, status=error.status, headers=error.headers)


def _chunks(body: bytes, count: int) -> list[bytes]:
    size = max(1, -(-len(body) // count))
    return [body[i : i + size] for i in range(0, len(body), size)] or [b""]


class FakeApp:
    """The ASGI application of a `FakeWatsonx` (``fake.app``)."""

    def __init__(self, fake: FakeView) -> None:
        self._fake = fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"FakeWatsonx serves HTTP only, not {scope['type']!r}")
        req = await self._read(scope, receive)
        index = self._record(req)
        fault = self._fake.faults.pick(req.method, req.path)
        action = fault.action if fault is not None else None
        if action == "drop_before":
            self._finish(index, None, action)
            raise ConnectionDropped
        response = await self._handle(req, fault)
        if action == "drop_after":
            self._finish(index, None, action)
            raise ConnectionDropped
        if action == "malformed":
            response = Response(200, MALFORMED_BODY, {}, "application/json")
        self._finish(index, response.status, action)
        logger.debug("%s %s -> %s (fault: %s)", req.method, req.path, response.status, action)
        await self._send(req, response, fault, send)

    # --- steps ---------------------------------------------------------------------------

    async def _read(self, scope: Scope, receive: Receive) -> Request:
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        server = scope.get("server") or ("127.0.0.1", 80)
        host = headers.get("host") or f"{server[0]}:{server[1]}"
        base_url = f"{scope.get('scheme', 'http')}://{host}"
        return Request.build(
            scope["method"], scope["path"], scope.get("query_string", b""), headers,
            b"".join(chunks), base_url,
        )  # fmt: skip

    def _record(self, req: Request) -> int:
        entry = RecordedRequest(
            method=req.method,
            path=req.path,
            query={name: list(values) for name, values in req.query.items()},
            headers=dict(req.headers),
            body=req.body,
            status=None,
            fault=None,
            received_at=time.monotonic(),
        )
        store = self._fake._store
        with store.lock:
            store.requests.append(entry)
            return len(store.requests) - 1

    def _finish(self, index: int, status: int | None, fault: str | None) -> None:
        store = self._fake._store
        with store.lock:
            if index < len(store.requests):
                entry = store.requests[index]
                answered_at = None if status is None else time.monotonic()
                store.requests[index] = dataclasses.replace(
                    entry, status=status, fault=fault, answered_at=answered_at
                )

    async def _handle(self, req: Request, fault: Fault | None) -> Response:
        """The response to send, before any "after" fault changes how it is sent."""
        if fault is not None and fault.action == "delay":
            await anyio.sleep(fault.delay)
        if fault is not None and fault.action == "status":
            headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
            message = f"Injected fault: HTTP {fault.status}."
            return _error(req, ApiError(fault.status, message, headers=headers))
        try:
            route = _find_route(req)
            if not route.public:
                expired = fault is not None and fault.action == "expire_token"
                _check_token(self._fake, req, force_expired=expired)
            _check_version(req)
            return await route.handler(self._fake, req)
        except ApiError as error:
            return _error(req, error)
        except Exception:
            logger.exception("FakeWatsonx failed on %s %s", req.method, req.path)
            return _error(req, ApiError(500, "Internal error in the fake server."))

    async def _send(
        self, req: Request, response: Response, fault: Fault | None, send: Send
    ) -> None:
        headers = {**response.headers, "x-global-transaction-id": req.trace}
        if response.content_type:
            headers["content-type"] = response.content_type
        if response.status not in (204, 304):  # these must not have a Content-Length
            headers["content-length"] = str(len(response.body))
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            }
        )
        action = fault.action if fault is not None else None
        if action == "truncated":
            half = response.body[: len(response.body) // 2]
            await send({"type": "http.response.body", "body": half, "more_body": True})
            raise ConnectionDropped
        if action == "slow_body" and fault is not None:
            chunks = _chunks(response.body, 4)
            for position, chunk in enumerate(chunks):
                await anyio.sleep(fault.delay)
                more = position < len(chunks) - 1
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
            return
        await send({"type": "http.response.body", "body": response.body, "more_body": False})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
