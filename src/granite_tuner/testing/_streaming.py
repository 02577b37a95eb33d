"""Streaming generation and chat (the SDK's `generate_text_stream`, `chat`, `chat_stream`).

The fake answers as `text/generation` does (``fake.answer(call)``, by default
`default_answer`), and sends the answer word by word as server-sent events, in the same
shapes as `granite-tuner serve` (both build them with `granite_tuner.server._wire`). A chat's
``GenerationCall.input`` is the text of its last user message, so a test predicts a chat's
answer the way it predicts a generation's. The same rate limit applies.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from granite_tuner.server._wire import (
    WireError,
    chat_body,
    chat_chunk,
    chat_messages,
    generation_body,
    generation_result,
    new_id,
    sse,
)

from ._generation import _generate, _input_and_parameters, _rate_limit
from ._http import ApiError, Request, Response
from ._platform import container_from_body
from ._state import GenerationCall

if TYPE_CHECKING:
    from ._view import FakeView

__all__ = [
    "chat",
    "chat_stream",
    "deployment_chat",
    "deployment_chat_stream",
    "deployment_generate_stream",
    "generate_stream",
]


def _deployment(fake: FakeView, req: Request) -> tuple[str, str]:
    """(id, base model) of the ready deployment named in the path (by id or serving name)."""
    key = req.path_params["deployment_id"]
    with fake._store.lock:
        record = fake._store.deployments.get(key) or next(
            (d for d in fake._store.deployments.values() if d.serving_name == key), None
        )
        found = None if record is None else (record.id, record.state, record.base_model_id)
    if found is None:
        raise ApiError(404, f"Deployment '{key}' was not found.", "deployment_not_found")
    deployment_id, state, base_model_id = found
    if state != "ready":
        raise ApiError(
            400, f"Deployment '{deployment_id}' is {state}, not ready.", "deployment_not_ready"
        )
    return deployment_id, base_model_id


def _base_model(fake: FakeView, body: dict[str, Any]) -> str:
    container_from_body(fake, body)
    model_id = body.get("model_id")
    model = fake.model(model_id) if isinstance(model_id, str) else None
    if model is None or model.withdrawn:
        raise ApiError(
            404, f"Model '{model_id}' is not supported in this region.", "model_not_supported"
        )
    return model.model_id


def _pieces(text: str) -> list[str]:
    """The answer as it would stream: one word (with the space before it) per piece."""
    return re.findall(r"\s*\S+", text) or [text]


def _sse_response(events: list[bytes], headers: dict[str, str]) -> Response:
    return Response(200, b"".join(events), headers, "text/event-stream")


def _stream(
    fake: FakeView, call: GenerationCall, model_id: str, headers: dict[str, str]
) -> Response:
    result = _generate(fake, call)
    pieces = _pieces(result["generated_text"])
    events = []
    for number, piece in enumerate(pieces, start=1):
        last = number == len(pieces)
        entry = generation_result(
            piece,
            generated_token_count=result["generated_token_count"] if last else None,
            input_token_count=result["input_token_count"] if last else None,
            stop_reason=result["stop_reason"] if last else "not_finished",
            seed=result.get("seed") if last else None,
        )
        events.append(sse(generation_body(model_id, entry), event="message", id=number))
    return _sse_response(events, headers)


async def generate_stream(fake: FakeView, req: Request) -> Response:
    """``POST /ml/v1/text/generation_stream``."""
    headers = _rate_limit(fake)
    body = req.json_body()
    model_id = _base_model(fake, body)
    text, parameters = _input_and_parameters(body)
    return _stream(fake, GenerationCall(text, model_id, None, parameters), model_id, headers)


async def deployment_generate_stream(fake: FakeView, req: Request) -> Response:
    """``POST /ml/v1/deployments/{id_or_serving_name}/text/generation_stream``."""
    headers = _rate_limit(fake)
    deployment_id, base_model_id = _deployment(fake, req)
    text, parameters = _input_and_parameters(req.json_body())
    call = GenerationCall(text, None, deployment_id, parameters)
    return _stream(fake, call, base_model_id, headers)


def _chat_call(
    body: dict[str, Any], model_id: str | None, deployment_id: str | None
) -> GenerationCall:
    try:
        messages = chat_messages(body.get("messages"))
    except WireError as error:
        raise ApiError(400, error.message, "invalid_request") from None
    users = [m["content"] for m in messages if m["role"] == "user"]
    parameters: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(max_tokens, int):
        parameters["max_new_tokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        parameters["stop_sequences"] = [stop] if isinstance(stop, str) else stop
        parameters["include_stop_sequence"] = False
    return GenerationCall(users[-1] if users else "", model_id, deployment_id, parameters)


def _chat(fake: FakeView, call: GenerationCall, model_id: str, headers: dict[str, str]) -> Response:
    result = _generate(fake, call)
    body = chat_body(
        new_id("chat"),
        model_id,
        result["generated_text"],
        stop_reason=result["stop_reason"],
        prompt_tokens=result["input_token_count"],
        completion_tokens=result["generated_token_count"],
    )
    return Response.json(body, headers=headers)


def _chat_stream(
    fake: FakeView, call: GenerationCall, model_id: str, headers: dict[str, str]
) -> Response:
    result = _generate(fake, call)
    chat_id = new_id("chat")
    pieces = _pieces(result["generated_text"])
    events = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        chunk = chat_chunk(
            chat_id,
            model_id,
            piece,
            first=index == 0,
            stop_reason=result["stop_reason"] if last else None,
            usage=(result["input_token_count"], result["generated_token_count"]) if last else None,
        )
        events.append(sse(chunk, event="message"))
    return _sse_response(events, headers)


async def chat(fake: FakeView, req: Request) -> Response:
    """``POST /ml/v1/text/chat``."""
    headers = _rate_limit(fake)
    body = req.json_body()
    model_id = _base_model(fake, body)
    return _chat(fake, _chat_call(body, model_id, None), model_id, headers)


async def chat_stream(fake: FakeView, req: Request) -> Response:
    """``POST /ml/v1/text/chat_stream``."""
    headers = _rate_limit(fake)
    body = req.json_body()
    model_id = _base_model(fake, body)
    return _chat_stream(fake, _chat_call(body, model_id, None), model_id, headers)


async def deployment_chat(fake: FakeView, req: Request) -> Response:
    """``POST /ml/v1/deployments/{id_or_serving_name}/text/chat``."""
    headers = _rate_limit(fake)
    deployment_id, base_model_id = _deployment(fake, req)
    call = _chat_call(req.json_body(), None, deployment_id)
    return _chat(fake, call, base_model_id, headers)


async def deployment_chat_stream(fake: FakeView, req: Request) -> Response:
    """``POST /ml/v1/deployments/{id_or_serving_name}/text/chat_stream``."""
    headers = _rate_limit(fake)
    deployment_id, base_model_id = _deployment(fake, req)
    call = _chat_call(req.json_body(), None, deployment_id)
    return _chat_stream(fake, call, base_model_id, headers)
