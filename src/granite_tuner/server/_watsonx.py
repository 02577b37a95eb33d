"""The watsonx.ai REST surface: IAM token exchange, model specs, deployments, generation, chat.

Paths, bodies and streams as IBM's `ibm-watsonx-ai` SDK sends and reads them (protocol §3, §8,
§9; chat and streaming from the SDK's `deployment_model_inference.py` and
`base_model_inference.py`). Scope (`project_id`, `space_id`) and `version` are accepted and not
checked: one server serves one set of models to whoever holds a key.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from granite_tuner.server._http import Request, Response, Streamed
from granite_tuner.server._params import chat_parameters, watsonx_parameters
from granite_tuner.server._wire import (
    WireError,
    chat_body,
    chat_chunk,
    chat_messages,
    generation_body,
    generation_result,
    new_id,
    sse,
    watsonx_error,
)

if TYPE_CHECKING:
    from granite_tuner.generation import GenerationParameters
    from granite_tuner.server._context import Context
    from granite_tuner.server._registry import Served

__all__ = [
    "chat",
    "chat_stream",
    "deployment_chat",
    "deployment_chat_stream",
    "deployment_generate",
    "deployment_generate_stream",
    "generate",
    "generate_stream",
    "get_deployment",
    "iam_token",
    "list_deployments",
    "model_specs",
    "project",
]

APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def stream_error(error: WireError) -> bytes:
    """What a watsonx stream sends when it fails after it began: an `error` event."""
    return sse(watsonx_error(error.status, error.code, error.message, "stream"), event="error")


# --- platform ------------------------------------------------------------------------------


async def iam_token(ctx: Context, req: Request) -> Response:
    """`POST /identity/token`: an API key for a bearer token (form body, as IAM takes it)."""
    form = req.form()
    if form.get("grant_type") != APIKEY_GRANT:
        raise WireError(400, f"grant_type must be {APIKEY_GRANT}.", "BXNIM0103E")
    api_key = form.get("apikey", "")
    issued = ctx.keys.issue(api_key) if api_key else None
    if issued is None:
        raise WireError(400, "Provided API key could not be found.", "BXNIM0415E")
    return Response.json(
        {
            "access_token": issued.access_token,
            "refresh_token": "not_supported",
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "expiration": issued.expiration,
            "scope": "ibm openid",
        }
    )


async def project(ctx: Context, req: Request) -> Response:
    """`GET /v2/projects/{id}` and `/v2/spaces/{id}`: the SDK checks its scope at start-up."""
    scope_id = req.path_params["scope_id"]
    return Response.json(
        {
            "metadata": {"guid": scope_id, "url": req.path},
            "entity": {
                "name": "granite-tuner serve",
                "storage": {"type": "bmcos_object_storage", "properties": {}},
                "compute": [{"type": "machine_learning", "guid": "granite-tuner", "name": "local"}],
            },
        }
    )


# --- models and deployments ------------------------------------------------------------------


def _spec(served: Served, ctx: Context) -> dict[str, Any]:
    return {
        "model_id": served.name,
        "label": served.name,
        "provider": "granite-tuner",
        "source": "local",
        "functions": [{"id": "text_generation"}, {"id": "text_chat"}],
        "short_description": "Base model served by granite-tuner serve.",
        "input_tier": "class_1",
        "output_tier": "class_1",
        "number_params": "unknown",
        "model_limits": {"max_output_tokens": ctx.config.max_new_tokens},
        "lifecycle": [{"id": "available", "start_date": _iso(served.created)[:10]}],
    }


def _matches(spec: dict[str, Any], filters: str | None) -> bool:
    """`filters=term,!term[:and|:or]` over `function_X`, `lifecycle_X` and `modelid_X`."""
    if not filters:
        return True
    expression, combine = filters, any
    for suffix, how in ((":and", all), (":or", any)):
        if filters.endswith(suffix):
            expression, combine = filters[: -len(suffix)], how
    functions = {f["id"] for f in spec["functions"]}
    lifecycle = {state["id"] for state in spec["lifecycle"]}
    results = []
    for term in filter(None, (part.strip() for part in expression.split(","))):
        negate, name = term.startswith("!"), term.lstrip("!")
        kind, _, value = name.partition("_")
        held = (
            value in functions
            if kind == "function"
            else value in lifecycle
            if kind == "lifecycle"
            else value == spec["model_id"]
            if kind == "modelid"
            else False
        )
        results.append(held != negate)
    return combine(results) if results else True


async def model_specs(ctx: Context, req: Request) -> Response:
    """`GET /ml/v1/foundation_model_specs`: the base model (tuned models are deployments)."""
    base = ctx.served().base
    specs = [spec for spec in [_spec(base, ctx)] if _matches(spec, req.param("filters"))]
    return Response.json(
        {"total_count": len(specs), "limit": 200, "first": {"href": req.path}, "resources": specs}
    )


def _deployment(served: Served, base_url: str) -> dict[str, Any]:
    info = served.deployment
    assert info is not None
    assert served.run is not None
    urls = [
        f"{base_url}/ml/v1/deployments/{info.id}/text/{what}"
        for what in ("generation", "generation_stream", "chat", "chat_stream")
    ]
    created = _iso(info.created_at.timestamp()) if info.created_at else _iso(served.created)
    online: dict[str, Any] = {"parameters": {"serving_name": info.serving_name}}
    return {
        "metadata": {"id": info.id, "name": info.name, "created_at": created},
        "entity": {
            "asset": {"id": served.run.id},
            "base_model_id": served.base_model_name,
            "deployed_asset_type": "prompt_tune",
            "online": online if info.serving_name else {},
            "status": {
                "state": info.state,
                "inference": [{"url": url} for url in urls],
                "serving_urls": urls,
            },
        },
    }


async def list_deployments(ctx: Context, req: Request) -> Response:
    """`GET /ml/v4/deployments[?serving_name=X[&conflict=true]]`."""
    tuned = ctx.served().tuned
    serving_name = req.param("serving_name")
    if serving_name is not None:
        tuned = [s for s in tuned if s.deployment and s.deployment.serving_name == serving_name]
        if tuned and req.param("conflict") == "true":
            raise WireError(409, f"Serving name '{serving_name}' is in use.", "serving_name_taken")
    resources = [_deployment(served, req.base_url) for served in tuned]
    return Response.json({"total_count": len(resources), "limit": 200, "resources": resources})


async def get_deployment(ctx: Context, req: Request) -> Response:
    """`GET /ml/v4/deployments/{id}` (a serving name works too)."""
    served = ctx.served().deployment(req.path_params["deployment_id"])
    return Response.json(_deployment(served, req.base_url))


# --- generation -----------------------------------------------------------------------------


def _input(body: dict[str, Any]) -> str:
    text = body.get("input")
    if not isinstance(text, str):
        raise WireError(400, "Field 'input' is required and must be a string.", "missing_field")
    return text


async def _generate(ctx: Context, served: Served, body: dict[str, Any]) -> Response:
    text = _input(body)
    parameters, echo = watsonx_parameters(
        body.get("parameters"), max_new_tokens=ctx.config.max_new_tokens
    )
    result = await ctx.served().generate(served, text, parameters)
    entry = generation_result(
        result.text,
        generated_token_count=result.generated_token_count,
        input_token_count=result.input_token_count,
        stop_reason=result.stop_reason or "eos_token",
        seed=result.seed,
        input_text=text if echo else None,
    )
    return Response.json(generation_body(served.base_model_name, entry))


def _stream(ctx: Context, served: Served, body: dict[str, Any]) -> Streamed:
    text = _input(body)
    parameters, echo = watsonx_parameters(
        body.get("parameters"), max_new_tokens=ctx.config.max_new_tokens
    )
    registry = ctx.served()
    model_id = served.base_model_name

    async def events() -> AsyncGenerator[bytes]:
        number = 0
        async with aclosing(registry.stream(served, text, parameters)) as pieces:
            async for piece in pieces:
                result = piece.result
                if result is None and not piece.text:
                    continue
                number += 1
                entry = generation_result(
                    piece.text,
                    generated_token_count=None if result is None else result.generated_token_count,
                    input_token_count=None if result is None else result.input_token_count,
                    stop_reason="not_finished" if result is None else result.stop_reason or "",
                    seed=None if result is None else result.seed,
                    input_text=text if echo and number == 1 else None,
                )
                yield sse(generation_body(model_id, entry), event="message", id=number)

    return Streamed(events(), stream_error)


async def generate(ctx: Context, req: Request) -> Response:
    """`POST /ml/v1/text/generation`: `model_id` names the base model or a tuned one."""
    body = req.json()
    return await _generate(ctx, ctx.served().model(body.get("model_id"), param="model_id"), body)


async def generate_stream(ctx: Context, req: Request) -> Streamed:
    body = req.json()
    return _stream(ctx, ctx.served().model(body.get("model_id"), param="model_id"), body)


async def deployment_generate(ctx: Context, req: Request) -> Response:
    """`POST /ml/v1/deployments/{id or serving name}/text/generation`."""
    served = ctx.served().deployment(req.path_params["deployment_id"])
    return await _generate(ctx, served, req.json())


async def deployment_generate_stream(ctx: Context, req: Request) -> Streamed:
    served = ctx.served().deployment(req.path_params["deployment_id"])
    return _stream(ctx, served, req.json())


# --- chat ------------------------------------------------------------------------------------


async def _chat_request(
    ctx: Context, served: Served, body: dict[str, Any]
) -> tuple[str, GenerationParameters]:
    messages = chat_messages(body.get("messages"))
    parameters = chat_parameters(
        body,
        default_max_tokens=ctx.config.default_chat_max_tokens,
        max_new_tokens=ctx.config.max_new_tokens,
    )
    return await ctx.served().chat_prompt(served, messages), parameters


async def _chat(ctx: Context, served: Served, body: dict[str, Any]) -> Response:
    prompt, parameters = await _chat_request(ctx, served, body)
    result = await ctx.served().generate(served, prompt, parameters, raw=True)
    return Response.json(
        chat_body(
            new_id("chat"),
            served.name,
            result.text,
            stop_reason=result.stop_reason,
            prompt_tokens=result.input_token_count,
            completion_tokens=result.generated_token_count,
        )
    )


async def _chat_stream(ctx: Context, served: Served, body: dict[str, Any]) -> Streamed:
    prompt, parameters = await _chat_request(ctx, served, body)
    registry = ctx.served()
    chat_id = new_id("chat")

    async def events() -> AsyncGenerator[bytes]:
        first = True
        async with aclosing(registry.stream(served, prompt, parameters, raw=True)) as pieces:
            async for piece in pieces:
                result = piece.result
                if result is None and not piece.text:
                    continue
                chunk = chat_chunk(
                    chat_id,
                    served.name,
                    piece.text,
                    first=first,
                    stop_reason=None if result is None else result.stop_reason or "eos_token",
                    usage=None
                    if result is None
                    else (result.input_token_count, result.generated_token_count),
                )
                first = False
                yield sse(chunk, event="message")

    return Streamed(events(), stream_error)


async def chat(ctx: Context, req: Request) -> Response:
    """`POST /ml/v1/text/chat`: `model_id` names the base model or a tuned one."""
    body = req.json()
    return await _chat(ctx, ctx.served().model(body.get("model_id"), param="model_id"), body)


async def chat_stream(ctx: Context, req: Request) -> Streamed:
    body = req.json()
    return await _chat_stream(ctx, ctx.served().model(body.get("model_id"), param="model_id"), body)


async def deployment_chat(ctx: Context, req: Request) -> Response:
    served = ctx.served().deployment(req.path_params["deployment_id"])
    return await _chat(ctx, served, req.json())


async def deployment_chat_stream(ctx: Context, req: Request) -> Streamed:
    served = ctx.served().deployment(req.path_params["deployment_id"])
    return await _chat_stream(ctx, served, req.json())
