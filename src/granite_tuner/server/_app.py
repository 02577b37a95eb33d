"""The ASGI app: routes, and the steps every request goes through.

1. `/health` answers at once (readiness: 200 when the models are loaded, 503 before and while
   stopping), without credentials.
2. The route is found (404/405), the body is read up to `max_request_bytes` (413), the caller is
   authenticated unless the route is public (401), and generation routes are admitted by the
   caller's limits (429), holding a slot until the answer is complete.
3. The handler answers; a `WireError` or a backend error becomes the surface's error shape
   (watsonx, OpenAI or IAM); any other exception is logged (without the request body or its
   headers) and answered with 500. No request can take the server down.
4. Streams are sent piece by piece; a client that goes away abandons its generation.

The models are loaded in the ASGI lifespan: the server answers requests once every tuned run is
deployed, and at shutdown (after uvicorn has let in-flight requests finish) the local client
closes.
"""

from __future__ import annotations

import json
import logging
from contextlib import AsyncExitStack, aclosing
from typing import TYPE_CHECKING, Any

import anyio

from granite_tuner.errors import GraniteTunerError
from granite_tuner.server import _openai, _watsonx
from granite_tuner.server._auth import ANONYMOUS, Keys
from granite_tuner.server._context import Context, wire_error
from granite_tuner.server._http import (
    Receive,
    Request,
    Response,
    Route,
    Scope,
    Send,
    Streamed,
    Surface,
    find_route,
    route,
    surface_of,
)
from granite_tuner.server._limits import KeyLimits
from granite_tuner.server._registry import open_registry
from granite_tuner.server._wire import WireError, new_id, openai_error, watsonx_error

if TYPE_CHECKING:
    from granite_tuner.backends.local import LocalClient
    from granite_tuner.server._config import ServeConfig

__all__ = ["ROUTES", "ServerApp", "create_app"]

logger = logging.getLogger("granite_tuner.server")

_DEPLOYMENT = "/ml/v1/deployments/{deployment_id}/text"

ROUTES: list[Route] = [
    route("POST", "/identity/token", _watsonx.iam_token, "iam", public=True),
    route("GET", "/v2/projects/{scope_id}", _watsonx.project, "watsonx"),
    route("GET", "/v2/spaces/{scope_id}", _watsonx.project, "watsonx"),
    route("GET", "/ml/v1/foundation_model_specs", _watsonx.model_specs, "watsonx", public=True),
    route("GET", "/ml/v4/deployments", _watsonx.list_deployments, "watsonx"),
    route("GET", "/ml/v4/deployments/{deployment_id}", _watsonx.get_deployment, "watsonx"),
    route("POST", "/ml/v1/text/generation", _watsonx.generate, "watsonx", limited=True),
    route(
        "POST", "/ml/v1/text/generation_stream", _watsonx.generate_stream, "watsonx", limited=True
    ),
    route("POST", "/ml/v1/text/chat", _watsonx.chat, "watsonx", limited=True),
    route("POST", "/ml/v1/text/chat_stream", _watsonx.chat_stream, "watsonx", limited=True),
    route(
        "POST", f"{_DEPLOYMENT}/generation", _watsonx.deployment_generate, "watsonx", limited=True
    ),
    route(
        "POST",
        f"{_DEPLOYMENT}/generation_stream",
        _watsonx.deployment_generate_stream,
        "watsonx",
        limited=True,
    ),
    route("POST", f"{_DEPLOYMENT}/chat", _watsonx.deployment_chat, "watsonx", limited=True),
    route(
        "POST",
        f"{_DEPLOYMENT}/chat_stream",
        _watsonx.deployment_chat_stream,
        "watsonx",
        limited=True,
    ),
    route("GET", "/v1/models", _openai.list_models, "openai"),
    route("GET", "/v1/models/{model}", _openai.get_model, "openai"),
    route("POST", "/v1/completions", _openai.completions, "openai", limited=True),
    route("POST", "/v1/chat/completions", _openai.chat_completions, "openai", limited=True),
]


def create_app(config: ServeConfig, *, client: LocalClient | None = None) -> ServerApp:
    """The ASGI app for `config`; with `client` (already open) it serves that client's runs."""
    return ServerApp(config, client=client)


class ServerApp:
    """`granite-tuner serve` as an ASGI application (run it with uvicorn, or see `serve`)."""

    def __init__(self, config: ServeConfig, *, client: LocalClient | None = None) -> None:
        self.config = config
        self._client = client
        self.context = Context(
            config=config,
            keys=Keys(
                [key.get_secret_value() for key in config.api_keys], token_ttl=config.token_ttl
            ),
            limits=KeyLimits(
                rate=config.rate_limit,
                burst=config.rate_limit_burst,
                max_concurrency=config.max_concurrency_per_key,
            ),
        )

    def __repr__(self) -> str:
        return f"ServerApp(model={self.config.model!r}, runs={len(self.config.runs)})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        # websockets are not served: uvicorn closes them when the app returns

    # --- lifespan --------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        try:
            async with AsyncExitStack() as stack:
                client = self._client
                if client is None:
                    from granite_tuner.backends.local import LocalClient

                    client = await stack.enter_async_context(
                        LocalClient(
                            self.config.model, home=self.config.home, device=self.config.device
                        )
                    )
                self.context.registry = await open_registry(
                    client, self.config.model, self.config.runs
                )
                self.context.ready = True
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown: uvicorn has let requests finish
                self.context.ready = False
        except Exception as exc:
            logger.exception("granite-tuner serve could not start")
            text = exc.message if isinstance(exc, GraniteTunerError) else repr(exc)
            await send({"type": "lifespan.startup.failed", "message": text})
            return
        await send({"type": "lifespan.shutdown.complete"})

    # --- requests --------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        surface = surface_of(path)
        trace = new_id("gt")
        headers = {"x-global-transaction-id": trace, "x-request-id": trace}
        started = False

        async def start(status: int, extra: dict[str, str], content_type: str) -> None:
            nonlocal started
            started = True
            merged = {**headers, **extra, "content-type": content_type}
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (k.encode("latin-1"), v.encode("latin-1")) for k, v in merged.items()
                    ],
                }
            )

        async def respond(response: Response) -> None:
            extra = {**response.headers, "content-length": str(len(response.body))}
            await start(response.status, extra, response.content_type)
            await send({"type": "http.response.body", "body": response.body})

        try:
            if path == "/health":
                await respond(self._health())
                return
            found, params = find_route(ROUTES, method, path)
            surface = found.surface
            request = await self._read(scope, receive, path, params)
            if not found.public:
                request.caller = self._authenticate(request)
            if not found.limited:
                answer = await found.handler(self.context, request)
                await self._send(answer, receive, send, start, respond)
                return
            limit_headers: dict[str, str] = {}
            with self.context.limits.admit(request.caller, limit_headers):
                headers.update(limit_headers)
                self.context.requests += 1
                answer = await found.handler(self.context, request)
                await self._send(answer, receive, send, start, respond)
        except GraniteTunerError as exc:
            if not started:
                await respond(_error(surface, wire_error(exc), trace))
        except WireError as exc:
            if not started:
                await respond(_error(surface, exc, trace))
        except Exception:
            # A bug: logged with the route only (never the body or headers), answered with 500.
            logger.exception("Unexpected error answering %s %s", method, path)
            if not started:
                error = WireError(500, "Internal server error.", "internal_error")
                await respond(_error(surface, error, trace))

    def _health(self) -> Response:
        ready = self.context.ready
        registry = self.context.registry
        body: dict[str, Any] = {
            "status": "ready" if ready else "unavailable",
            "in_flight": self.context.limits.in_flight(),
            "models": [s.name for s in registry.all] if registry is not None and ready else [],
        }
        return Response.json(body, status=200 if ready else 503)

    async def _read(
        self, scope: Scope, receive: Receive, path: str, params: dict[str, str]
    ) -> Request:
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        limit = self.config.max_request_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise WireError(413, _too_large(limit), "request_too_large")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise WireError(413, _too_large(limit), "request_too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        from urllib.parse import parse_qs

        server = scope.get("server") or ("127.0.0.1", 80)
        host = headers.get("host") or f"{server[0]}:{server[1]}"
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return Request(
            method=scope["method"],
            path=path,
            query=query,
            headers=headers,
            body=b"".join(chunks),
            base_url=f"{scope.get('scheme', 'http')}://{host}",
            path_params=params,
        )

    def _authenticate(self, request: Request) -> str:
        keys = self.context.keys
        if not keys.enabled:
            return ANONYMOUS
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise WireError(
                401,
                "A bearer token is required: exchange an API key at /identity/token, or send "
                "the API key itself as the bearer token.",
                "authorization_rejected",
            )
        caller, why = keys.caller_of_bearer(credential.strip())
        if caller is None:
            raise WireError(401, why, "authentication_token_invalid")
        return caller

    async def _send(
        self, answer: Response | Streamed, receive: Receive, send: Send, start: Any, respond: Any
    ) -> None:
        if isinstance(answer, Response):
            await respond(answer)
            return
        stream_headers = {**answer.headers, "cache-control": "no-cache"}
        async with aclosing(answer.events) as events, anyio.create_task_group() as group:

            async def watch_for_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()  # the client left: stop generating for it

            # The stream is opened before the 200 is sent: errors in the request (unknown
            # deployment, bad parameters) raised on the first step still get their status.
            first = await _first(events)
            await start(200, stream_headers, answer.content_type)
            group.start_soon(watch_for_disconnect)
            try:
                if first is not None:
                    await send({"type": "http.response.body", "body": first, "more_body": True})
                    async for chunk in events:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except WireError as exc:
                error = answer.on_error(exc)
                await send({"type": "http.response.body", "body": error, "more_body": True})
            except GraniteTunerError as exc:
                error = answer.on_error(wire_error(exc))
                await send({"type": "http.response.body", "body": error, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            group.cancel_scope.cancel()


async def _first(events: Any) -> bytes | None:
    try:
        chunk: bytes = await events.__anext__()
    except StopAsyncIteration:
        return None
    return chunk


def _too_large(limit: int) -> str:
    return f"The request body is larger than this server's limit of {limit} bytes."


def _error(surface: Surface, error: WireError, trace: str) -> Response:
    if surface == "openai":
        body = openai_error(error.status, error.message, error.code, error.param)
    elif surface == "iam":
        body = {
            "errorCode": error.code,
            "errorMessage": error.message,
            "context": {"requestId": trace},
        }
    else:
        body = watsonx_error(error.status, error.code, error.message, trace)
    return Response(error.status, json.dumps(body).encode("utf-8"), dict(error.headers))
