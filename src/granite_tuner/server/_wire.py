"""The JSON and server-sent events that `granite-tuner serve` and the fake watsonx server speak.

One place builds every body of the generation, streaming and chat endpoints, so that the real
server and the fake (`granite_tuner.testing`) cannot drift apart. Plain dicts in, plain dicts
out: no torch, no model, nothing but the standard library, so the fake can import it cheaply.

Shapes, as IBM's `ibm-watsonx-ai` SDK (1.8) and the `openai` client read them:

- watsonx `text/generation`: `{model_id, model_version, created_at, results: [{generated_text,
  generated_token_count, input_token_count, stop_reason, seed}]}`; `generation_stream` sends
  the same object per piece as SSE `data:` lines (`stop_reason: "not_finished"` until the last).
  A failure inside a stream is an `event: error` line followed by a `data:` line.
- watsonx `text/chat`: OpenAI-like `{id, model_id, model, choices: [{index, message,
  finish_reason}], created, model_version, created_at, usage}`; `chat_stream` sends
  `choices[0].delta` pieces.
- OpenAI `/v1/completions` and `/v1/chat/completions`, streamed as SSE ending in `data: [DONE]`.
- Errors: watsonx `{errors: [{code, message}], trace, status_code}`; OpenAI `{error: {message,
  type, param, code}}`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "CHAT_ROLES",
    "ChatMessage",
    "WireError",
    "chat_body",
    "chat_chunk",
    "chat_messages",
    "completion_body",
    "completion_chunk",
    "finish_reason",
    "generation_body",
    "generation_result",
    "new_id",
    "now_iso",
    "openai_chat_body",
    "openai_chat_chunk",
    "openai_error",
    "plain_chat_prompt",
    "sse",
    "sse_done",
    "watsonx_error",
]

CHAT_ROLES = ("system", "user", "assistant", "tool", "developer")
MODEL_VERSION = "1.0.0"

#: A chat message reduced to what the model reads: its role and its text.
ChatMessage = dict[str, str]


class WireError(Exception):
    """A request that cannot be answered: `status`, a short `code` and a message to the caller."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str = "invalid_request",
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})


def now_iso() -> str:
    """The current time as watsonx writes it: `2026-01-31T12:00:00.000Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


# --- server-sent events ----------------------------------------------------------------------


def sse(data: Mapping[str, Any] | str, *, event: str | None = None, id: int | None = None) -> bytes:
    """One server-sent event (compact JSON on a single `data:` line)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append(f"data: {text}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def sse_done() -> bytes:
    """The OpenAI stream terminator."""
    return b"data: [DONE]\n\n"


# --- errors ----------------------------------------------------------------------------------


def watsonx_error(status: int, code: str, message: str, trace: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}], "trace": trace, "status_code": status}


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# --- watsonx text generation -----------------------------------------------------------------


def generation_result(
    text: str,
    *,
    generated_token_count: int | None,
    input_token_count: int | None,
    stop_reason: str,
    seed: int | None = None,
    input_text: str | None = None,
) -> dict[str, Any]:
    """One `results[]` entry (also one streamed piece)."""
    result: dict[str, Any] = {
        "generated_text": text,
        "generated_token_count": generated_token_count,
        "input_token_count": input_token_count,
        "stop_reason": stop_reason,
    }
    if seed is not None:
        result["seed"] = seed
    if input_text is not None:
        result["input_text"] = input_text
    return result


def generation_body(
    model_id: str, result: Mapping[str, Any], *, created_at: str | None = None
) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "model_version": MODEL_VERSION,
        "created_at": created_at or now_iso(),
        "results": [dict(result)],
    }


# --- chat: messages in -----------------------------------------------------------------------


def chat_messages(raw: object) -> list[ChatMessage]:
    """`messages` checked and reduced to `{role, content}` with text content.

    Content may be a string or a list of parts (`{"type": "text", "text": ...}`), as both APIs
    allow; parts of any other type (images, audio) cannot be read by a text model: 400.
    """
    if not isinstance(raw, list) or not raw:
        raise WireError(400, "Field 'messages' must be a non-empty list.", param="messages")
    messages: list[ChatMessage] = []
    for index, message in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise WireError(400, f"{where} must be an object.", param=where)
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise WireError(
                400, f"{where}.role must be one of {', '.join(CHAT_ROLES)}.", param=where
            )
        content = message.get("content")
        if content is None:
            content = ""
        if isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise WireError(
                        400, f"{where}.content: only text parts can be served.", param=where
                    )
                text = part.get("text")
                if not isinstance(text, str):
                    raise WireError(400, f"{where}.content: a text part needs 'text'.", param=where)
                texts.append(text)
            content = "\n".join(texts)
        if not isinstance(content, str):
            raise WireError(400, f"{where}.content must be a string or a list.", param=where)
        messages.append({"role": "system" if role == "developer" else role, "content": content})
    return messages


def plain_chat_prompt(messages: Sequence[ChatMessage]) -> str:
    """The prompt of a chat for a model without a chat template: each message's text on a line.

    A single user message is therefore read exactly as `text/generation` reads its `input`.
    """
    return "\n".join(message["content"] for message in messages)


# --- chat: answers out -----------------------------------------------------------------------


def finish_reason(stop_reason: str | None) -> Literal["stop", "length"]:
    """The OpenAI/watsonx-chat `finish_reason` of a generation `stop_reason`."""
    return "length" if stop_reason in ("max_tokens", "token_limit", "time_limit") else "stop"


def _usage(prompt_tokens: int | None, completion_tokens: int | None) -> dict[str, int]:
    prompt, completion = prompt_tokens or 0, completion_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def chat_body(
    chat_id: str,
    model_id: str,
    text: str,
    *,
    stop_reason: str | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
) -> dict[str, Any]:
    """A watsonx `text/chat` answer."""
    return {
        "id": chat_id,
        "object": "chat.completion",
        "model_id": model_id,
        "model": model_id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason(stop_reason),
            }
        ],
        "created": int(time.time()),
        "model_version": MODEL_VERSION,
        "created_at": now_iso(),
        "usage": _usage(prompt_tokens, completion_tokens),
    }


def chat_chunk(
    chat_id: str,
    model_id: str,
    text: str,
    *,
    first: bool = False,
    stop_reason: str | None = None,
    usage: tuple[int | None, int | None] | None = None,
) -> dict[str, Any]:
    """One watsonx `text/chat_stream` piece; the last has `finish_reason` and `usage`."""
    delta: dict[str, str] = {"content": text}
    if first:
        delta["role"] = "assistant"
    chunk: dict[str, Any] = {
        "id": chat_id,
        "object": "chat.completion.chunk",
        "model_id": model_id,
        "model": model_id,
        "choices": [
            {
                "index": 0,
                "finish_reason": None if stop_reason is None else finish_reason(stop_reason),
                "delta": delta,
            }
        ],
        "created": int(time.time()),
        "model_version": MODEL_VERSION,
        "created_at": now_iso(),
    }
    if usage is not None:
        chunk["usage"] = _usage(*usage)
    return chunk


# --- OpenAI ----------------------------------------------------------------------------------


def completion_body(
    completion_id: str,
    model: str,
    texts: Sequence[tuple[str, str | None]],
    *,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    """`/v1/completions`: one choice per (text, stop reason), in prompt order."""
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason(stop)}
            for index, (text, stop) in enumerate(texts)
        ],
        "usage": _usage(prompt_tokens, completion_tokens),
    }


def completion_chunk(
    completion_id: str,
    model: str,
    text: str,
    *,
    stop_reason: str | None = None,
    usage: tuple[int | None, int | None] | None = None,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": (
            []
            if usage is not None
            else [
                {
                    "text": text,
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": None if stop_reason is None else finish_reason(stop_reason),
                }
            ]
        ),
    }
    if usage is not None:
        chunk["usage"] = _usage(*usage)
    return chunk


def openai_chat_body(
    chat_id: str,
    model: str,
    text: str,
    *,
    stop_reason: str | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
) -> dict[str, Any]:
    return {
        "id": chat_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason(stop_reason),
            }
        ],
        "usage": _usage(prompt_tokens, completion_tokens),
    }


def openai_chat_chunk(
    chat_id: str,
    model: str,
    text: str | None,
    *,
    first: bool = False,
    stop_reason: str | None = None,
    usage: tuple[int | None, int | None] | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk`; with `usage` it is the trailing usage-only chunk."""
    delta: dict[str, str] = {}
    if first:
        delta["role"] = "assistant"
    if text is not None:
        delta["content"] = text
    chunk: dict[str, Any] = {
        "id": chat_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": (
            []
            if usage is not None
            else [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": None if stop_reason is None else finish_reason(stop_reason),
                }
            ]
        ),
    }
    if usage is not None:
        chunk["usage"] = _usage(*usage)
    return chunk
