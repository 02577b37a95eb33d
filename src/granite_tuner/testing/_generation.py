"""Text generation (protocol §9): the base-model and the deployment endpoints.

The answer comes from ``fake.answer(call)`` or, by default, `default_answer`. Both
endpoints share one rate limit (``fake.rate_limit``, counted as ``fake.rate_limit_mode``
says, see ``_ratelimit``): a request over it gets 429 with ``x-requests-limit-remaining: 0``
(and ``Retry-After`` unless ``fake.send_retry_after`` is off); every 200 carries
``x-requests-limit-remaining`` when a limit is set (``fake.rate_limit_headers`` chooses these
headers).
"""

from __future__ import annotations

import re
import time
import zlib
from typing import TYPE_CHECKING, Any

import anyio

from ._http import ApiError, Request, Response
from ._platform import container_from_body
from ._state import GenerationCall, iso

if TYPE_CHECKING:
    from ._view import FakeView

DEFAULT_MAX_NEW_TOKENS = 20  # the service's default for ``parameters.max_new_tokens``


def default_answer(call: GenerationCall) -> str:
    """``"1"`` or ``"0"``, from the CRC32 of the input: stable across runs and processes, and
    about half of each, like a binary classifier that is right half of the time."""
    return "1" if zlib.crc32(call.input.encode("utf-8")) & 1 else "0"


def _rate_limit(fake: FakeView) -> dict[str, str]:
    """Count the request; the headers for a 200, or ApiError(429) when over the limit."""
    rate = fake.rate_limit
    if rate is None:
        return {}
    with fake._store.lock:
        decision = fake._store.rate_limit.take(
            fake.rate_limit_mode,
            rate,
            fake.rate_limit_burst,
            monotonic=time.monotonic(),
            wall=time.time(),
        )
    headers: dict[str, str] = {}
    if fake.rate_limit_headers != "none":
        headers["x-requests-limit-remaining"] = str(decision.remaining)
    if fake.rate_limit_headers == "all":
        headers["x-requests-limit-rate"] = f"{rate:g}"
    if decision.allowed:
        return headers
    if fake.send_retry_after:
        headers["retry-after"] = str(decision.retry_after)
    raise ApiError(
        429,
        f"Rate limit of {rate:g} requests per second exceeded; try again later.",
        "rate_limit_exceeded",
        headers,
    )


def _generate(fake: FakeView, call: GenerationCall) -> dict[str, Any]:
    """One ``results[]`` entry: the answer cut by ``max_new_tokens`` (a "token" is a word here)
    or by the first of ``stop_sequences``, whichever the generation would reach first."""
    parameters = call.parameters
    text = (fake.answer or default_answer)(call)
    max_new = parameters.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    limit = len(text)  # where the max_new_tokens-th word ends
    words = list(re.finditer(r"\S+", text))
    if isinstance(max_new, int) and len(words) > max_new:
        limit = words[max_new - 1].end() if max_new > 0 else 0
    stops = [s for s in parameters.get("stop_sequences") or [] if isinstance(s, str) and s]
    hits = sorted((text.find(stop), stop) for stop in stops if 0 <= text.find(stop) < limit)
    if hits:
        position, stop = hits[0]
        keep = parameters.get("include_stop_sequence", True) is not False
        text, stop_reason = text[: position + (len(stop) if keep else 0)], "stop_sequence"
    elif limit < len(text):
        text, stop_reason = text[:limit], "max_tokens"
    else:
        stop_reason = "eos_token"
    result: dict[str, Any] = {
        "generated_text": text,
        "generated_token_count": len(text.split()),
        "input_token_count": len(call.input.split()),
        "stop_reason": stop_reason,
        "seed": parameters.get("random_seed", fake.seed),
    }
    return_options = parameters.get("return_options")
    if isinstance(return_options, dict) and return_options.get("input_text"):
        result["input_text"] = call.input
    return result


def _input_and_parameters(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    text = body.get("input")
    if not isinstance(text, str):
        raise ApiError(400, "Field 'input' is required and must be a string.", "missing_field")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ApiError(400, "Field 'parameters' must be an object.")
    return text, parameters


def _respond(model_id: str, result: dict[str, Any], headers: dict[str, str]) -> Response:
    body = {
        "model_id": model_id,
        "model_version": "2.0.0",
        "created_at": iso(time.time()),
        "results": [result],
    }
    return Response.json(body, headers=headers)


async def generate(fake: FakeView, req: Request) -> Response:
    """``POST /ml/v1/text/generation``: a base model; scope in the body."""
    headers = _rate_limit(fake)
    body = req.json_body()
    container_from_body(fake, body)
    model_id = body.get("model_id")
    model = fake.model(model_id) if isinstance(model_id, str) else None
    if model is None or model.withdrawn:
        raise ApiError(
            404, f"Model '{model_id}' is not supported in this region.", "model_not_supported"
        )
    text, parameters = _input_and_parameters(body)
    if fake.generation_latency > 0:
        await anyio.sleep(fake.generation_latency)
    result = _generate(fake, GenerationCall(text, model.model_id, None, parameters))
    return _respond(model.model_id, result, headers)


async def generate_with_deployment(fake: FakeView, req: Request) -> Response:
    """``POST /ml/v1/deployments/{id_or_serving_name}/text/generation``: no scope at all."""
    headers = _rate_limit(fake)
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
    text, parameters = _input_and_parameters(req.json_body())
    if fake.generation_latency > 0:
        await anyio.sleep(fake.generation_latency)
    result = _generate(fake, GenerationCall(text, None, deployment_id, parameters))
    return _respond(base_model_id, result, headers)
