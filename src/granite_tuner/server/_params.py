"""Request parameters of both APIs, turned into the project's `GenerationParameters`.

watsonx `parameters` keep their names and ranges (checked by `GenerationParameters`); keys the
local server cannot honour but that change nothing about the answer's text (`length_penalty`
aside, which does) are dropped. Chat and OpenAI requests map onto the same settings:
`max_tokens` / `max_completion_tokens` -> `max_new_tokens`, `stop` -> `stop_sequences` (not
included in the answer, as OpenAI does), `seed` -> `random_seed`, `temperature` > 0 ->
sampling. Decoding is greedy unless a temperature above 0 is given: a tuned soft prompt is most
often a classifier, whose answers should not change from call to call. Options that would
change the answer and are not implemented (`logprobs`, penalties, tools, `n` > 1) get 400
rather than being ignored.
"""

from __future__ import annotations

from typing import Any

from granite_tuner.errors import InvalidParametersError
from granite_tuner.generation import GenerationParameters
from granite_tuner.server._wire import WireError

__all__ = ["chat_parameters", "watsonx_parameters"]

# watsonx keys accepted and ignored: they do not change the generated text.
_IGNORED_WATSONX = {"return_options", "prompt_variables"}
_MAX_SEED = 4_294_967_295


def _checked(values: dict[str, Any], max_new_tokens: int) -> GenerationParameters:
    requested = values.get("max_new_tokens")
    if isinstance(requested, int) and requested > max_new_tokens:
        raise WireError(
            400,
            f"max_new_tokens={requested} is above this server's limit of {max_new_tokens}.",
            "max_tokens_exceeded",
            param="max_new_tokens",
        )
    try:
        return GenerationParameters.model_validate(values)
    except InvalidParametersError as exc:
        raise WireError(400, exc.message, "invalid_parameters", param=exc.field) from None


def watsonx_parameters(raw: object, *, max_new_tokens: int) -> tuple[GenerationParameters, bool]:
    """`parameters` of a text-generation request; and whether `input_text` is to be echoed."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise WireError(400, "Field 'parameters' must be an object.", param="parameters")
    options = raw.get("return_options")
    echo = isinstance(options, dict) and options.get("input_text") is True
    if raw.get("length_penalty") is not None:
        raise WireError(
            400, "length_penalty is not supported by this server.", param="length_penalty"
        )
    values = {k: v for k, v in raw.items() if k not in _IGNORED_WATSONX and k != "length_penalty"}
    return _checked(values, max_new_tokens), echo


def _reject_if_set(body: dict[str, Any], name: str, default: object) -> None:
    value = body.get(name)
    if value is not None and value != default:
        raise WireError(400, f"{name}={value!r} is not supported by this server.", param=name)


def chat_parameters(
    body: dict[str, Any], *, default_max_tokens: int, max_new_tokens: int
) -> GenerationParameters:
    """The decoding settings of a watsonx chat or an OpenAI (chat) completion request."""
    for name, default in (
        ("n", 1),
        ("logprobs", False),
        ("top_logprobs", None),
        ("frequency_penalty", 0),
        ("presence_penalty", 0),
        ("logit_bias", None),
        ("tools", None),
        ("tool_choice", None),
        ("tool_choice_option", None),
        ("echo", False),
        ("best_of", 1),
        ("suffix", None),
    ):
        _reject_if_set(body, name, default)
    format_ = body.get("response_format")
    if format_ is not None and not (isinstance(format_, dict) and format_.get("type") == "text"):
        raise WireError(400, "Only the text response_format is supported.", param="response_format")
    tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    values: dict[str, Any] = {"max_new_tokens": default_max_tokens if tokens is None else tokens}
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature:
        values["decoding_method"] = "sample"
        values["temperature"] = float(temperature)
        if body.get("top_p") is not None:
            values["top_p"] = body["top_p"]
    elif temperature is not None and temperature != 0:
        raise WireError(400, "temperature must be a number from 0 to 2.", param="temperature")
    seed = body.get("seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise WireError(400, "seed must be an integer.", param="seed")
        values["random_seed"] = seed % _MAX_SEED + 1
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise WireError(400, "stop must be a string or a list of strings.", param="stop")
        if stops:
            values["stop_sequences"] = tuple(stops)
            values["include_stop_sequence"] = False
    if body.get("time_limit") is not None:
        values["time_limit"] = body["time_limit"]
    return _checked(values, max_new_tokens)
