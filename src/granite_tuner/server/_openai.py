"""The OpenAI-compatible surface: `/v1/models`, `/v1/completions`, `/v1/chat/completions`.

Shapes as the official `openai` Python client reads them; a tuned model is a `model` name (its
serving name, deployment id, run id or run name), the base model is its own name. Streams are
server-sent events ending in `data: [DONE]`; `stream_options.include_usage` adds the usage
chunk before it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio

from granite_tuner.server._http import Request, Response, Streamed
from granite_tuner.server._params import chat_parameters
from granite_tuner.server._wire import (
    WireError,
    chat_messages,
    completion_body,
    completion_chunk,
    new_id,
    openai_chat_body,
    openai_chat_chunk,
    openai_error,
    sse,
    sse_done,
)

if TYPE_CHECKING:
    from granite_tuner.generation import GenerationParameters, GenerationResult
    from granite_tuner.server._context import Context
    from granite_tuner.server._registry import Served

__all__ = ["chat_completions", "completions", "get_model", "list_models"]


def stream_error(error: WireError) -> bytes:
    return sse(openai_error(error.status, error.message, error.code, error.param))


def _model(ctx: Context, served: Served) -> dict[str, Any]:
    return {
        "id": served.name,
        "object": "model",
        "created": served.created,
        "owned_by": "granite-tuner",
        "root": served.base_model_name,
        "parent": None if served.kind == "base" else served.base_model_name,
    }


async def list_models(ctx: Context, req: Request) -> Response:
    return Response.json(
        {"object": "list", "data": [_model(ctx, served) for served in ctx.served().all]}
    )


async def get_model(ctx: Context, req: Request) -> Response:
    return Response.json(_model(ctx, ctx.served().model(req.path_params["model"])))


def _parameters(ctx: Context, body: dict[str, Any], default_max: int) -> GenerationParameters:
    return chat_parameters(
        body, default_max_tokens=default_max, max_new_tokens=ctx.config.max_new_tokens
    )


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


async def completions(ctx: Context, req: Request) -> Response | Streamed:
    """`POST /v1/completions`: one prompt or a list (answered in one batch where they fit)."""
    body = req.json()
    registry = ctx.served()
    served = registry.model(body.get("model"))
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise WireError(400, "prompt must be a string or a list of strings.", param="prompt")
    if len(prompts) > ctx.config.max_prompts_per_request:
        raise WireError(
            400,
            f"{len(prompts)} prompts in one request; this server takes at most "
            f"{ctx.config.max_prompts_per_request}.",
            param="prompt",
        )
    parameters = _parameters(ctx, body, 16)  # OpenAI's default max_tokens for completions
    completion_id = new_id("cmpl")
    if body.get("stream"):
        if len(prompts) != 1:
            raise WireError(400, "Streaming takes a single prompt.", param="prompt")
        return _stream_completion(ctx, served, prompts[0], parameters, completion_id, body)
    results: list[GenerationResult | None] = [None] * len(prompts)

    async def answer(index: int, text: str) -> None:
        results[index] = await registry.generate(served, text, parameters)

    async with anyio.create_task_group() as group:
        for index, text in enumerate(prompts):
            group.start_soon(answer, index, text)
    done = [result for result in results if result is not None]
    return Response.json(
        completion_body(
            completion_id,
            served.name,
            [(r.text, r.stop_reason) for r in done],
            prompt_tokens=sum(r.input_token_count or 0 for r in done),
            completion_tokens=sum(r.generated_token_count or 0 for r in done),
        )
    )


def _stream_completion(
    ctx: Context,
    served: Served,
    prompt: str,
    parameters: GenerationParameters,
    completion_id: str,
    body: dict[str, Any],
) -> Streamed:
    registry = ctx.served()
    usage = _wants_usage(body)

    async def events() -> AsyncGenerator[bytes]:
        async with aclosing(registry.stream(served, prompt, parameters)) as pieces:
            async for piece in pieces:
                result = piece.result
                if result is None:
                    if piece.text:
                        yield sse(completion_chunk(completion_id, served.name, piece.text))
                    continue
                yield sse(
                    completion_chunk(
                        completion_id,
                        served.name,
                        piece.text,
                        stop_reason=result.stop_reason or "eos_token",
                    )
                )
                if usage:
                    counts = (result.input_token_count, result.generated_token_count)
                    yield sse(completion_chunk(completion_id, served.name, "", usage=counts))
        yield sse_done()

    return Streamed(events(), stream_error)


async def chat_completions(ctx: Context, req: Request) -> Response | Streamed:
    """`POST /v1/chat/completions`."""
    body = req.json()
    registry = ctx.served()
    served = registry.model(body.get("model"))
    messages = chat_messages(body.get("messages"))
    parameters = _parameters(ctx, body, ctx.config.default_chat_max_tokens)
    prompt = await registry.chat_prompt(served, messages)
    chat_id = new_id("chatcmpl")
    if not body.get("stream"):
        result = await registry.generate(served, prompt, parameters, raw=True)
        return Response.json(
            openai_chat_body(
                chat_id,
                served.name,
                result.text,
                stop_reason=result.stop_reason,
                prompt_tokens=result.input_token_count,
                completion_tokens=result.generated_token_count,
            )
        )
    usage = _wants_usage(body)

    async def events() -> AsyncGenerator[bytes]:
        yield sse(openai_chat_chunk(chat_id, served.name, "", first=True))
        async with aclosing(registry.stream(served, prompt, parameters, raw=True)) as pieces:
            async for piece in pieces:
                result = piece.result
                if result is None:
                    if piece.text:
                        yield sse(openai_chat_chunk(chat_id, served.name, piece.text))
                    continue
                yield sse(
                    openai_chat_chunk(
                        chat_id,
                        served.name,
                        piece.text or None,
                        stop_reason=result.stop_reason or "eos_token",
                    )
                )
                if usage:
                    counts = (result.input_token_count, result.generated_token_count)
                    yield sse(openai_chat_chunk(chat_id, served.name, None, usage=counts))
        yield sse_done()

    return Streamed(events(), stream_error)
