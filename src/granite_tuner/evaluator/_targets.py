"""Target resolution: reduce whatever the caller gave as a target to one async call.

Why a module of its own: a target can be a model id (called through the client), an object
with `generate` (such as a `Deployment`) or an async function taking the prompt alone, the
prompt and the parameters, or `parameters=` as a keyword. Working out how to call it, and
checking that it can be called at all, is done once per run here, so the worker pool only
ever sees `_Target.call(prompt, parameters)`. Imports nothing from this package.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Protocol, TypeAlias, runtime_checkable

from granite_tuner._secrets import get_logger
from granite_tuner.backends.base import ServingBackend
from granite_tuner.errors import ConfigurationError
from granite_tuner.generation import GenerationParameters

_logger = get_logger("granite_tuner.evaluator")


class SupportsGenerate(Protocol):
    """Anything with `async generate(prompt, parameters=None)` answering a str or `.text`."""

    def generate(self, *args: Any, **kwargs: Any) -> Awaitable[Any]: ...


#: What can be evaluated: a base model id (needs a client), an object with `generate`, or an
#: async callable `prompt -> str` (or `(prompt, parameters) -> str`; `.text` results are fine).
Target: TypeAlias = str | SupportsGenerate | Callable[..., Awaitable[Any]]


@dataclasses.dataclass(frozen=True)
class _Target:
    """A target reduced to one call, and whether the evaluator's rate limiter applies to it."""

    name: str
    call: Callable[[str, Mapping[str, Any] | None], Awaitable[object]]
    limited: bool


class _NotAsyncTargetError(ConfigurationError):
    """A target answered without an awaitable: a mistake in the call, so the run stops."""


@runtime_checkable
class _ServedTarget(Protocol):
    """A target served by one of our backends, such as a `Deployment`: `generate` goes through
    `client`, so the generation parameters can be checked before the first call."""

    client: ServingBackend

    @property
    def id(self) -> str: ...

    def generate(self, prompt: str, parameters: Any = None) -> Awaitable[Any]: ...


def _resolve_target(
    name: str, target: object, client: Any, parameters: Mapping[str, Any] | None
) -> _Target:
    """Reduce a target to one `async (prompt, parameters) -> str | .text` call."""
    if isinstance(target, str):
        generate = getattr(client, "generate", None)
        if client is None or not callable(generate):
            raise ConfigurationError(
                f"Target {name!r} is a model id ({target!r}); give the Evaluator a client "
                "with generate() to call it, e.g. Evaluator(client)."
            )
        _check_generation_parameters(parameters, client)
        return _Target(name, partial(_call_model, generate, target), limited=False)
    method = getattr(target, "generate", None)
    if isinstance(target, _ServedTarget):
        _check_generation_parameters(parameters, target.client)
    if callable(method):  # e.g. a Deployment: its client applies the service's limits
        function: Callable[..., object] = method
        limited = False
    elif callable(target):
        function, limited = target, True
    else:
        raise ConfigurationError(
            f"Target {name!r} is a {type(target).__name__}; give an async function "
            "prompt -> str, an object with async generate(prompt, parameters), or a model id."
        )
    style = _calling_style(name, function)
    if style == "prompt" and parameters:
        _logger.warning(
            "Target %s takes only a prompt, so the generation parameters are not passed to it.",
            name,
        )
    return _Target(name, partial(_call_function, name, function, style), limited=limited)


def _check_generation_parameters(parameters: Mapping[str, Any] | None, client: object) -> None:
    """Parameters bound for one of our backends are checked once, before any call, so a typo
    fails the run at once (`InvalidParametersError`) instead of failing every item."""
    if parameters is not None and isinstance(client, ServingBackend):
        GenerationParameters.model_validate(parameters)


def _calling_style(name: str, function: Callable[..., object]) -> str:
    """How to pass (prompt, parameters): "positional", "keyword" or "prompt" alone."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins have no signature: pass the prompt only
        return "prompt"
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in signature.parameters.values() if p.kind in kinds]
    keyword = signature.parameters.get("parameters")
    args: tuple[None, ...] = (None,)
    kwargs: dict[str, None] = {}
    if len(positional) >= 2:
        style, args = "positional", (None, None)
    elif keyword is not None and keyword.kind is inspect.Parameter.KEYWORD_ONLY:
        style, kwargs = "keyword", {"parameters": None}
    else:
        style = "prompt"
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        raise ConfigurationError(
            f"Target {name!r} cannot be called with a prompt: its signature is {signature}."
        ) from None
    return style


async def _call_function(
    name: str,
    function: Callable[..., object],
    style: str,
    prompt: str,
    parameters: Mapping[str, Any] | None,
) -> object:
    if style == "positional":
        result = function(prompt, parameters)
    elif style == "keyword":
        result = function(prompt, parameters=parameters)
    else:
        result = function(prompt)
    if not inspect.isawaitable(result):
        raise _NotAsyncTargetError(
            f"Target {name!r} returned a {type(result).__name__} instead of an awaitable; "
            "give an async function (a blocking call would stall every other request)."
        )
    return await result


async def _call_model(
    generate: Callable[..., Awaitable[object]],
    model_id: str,
    prompt: str,
    parameters: Mapping[str, Any] | None,
) -> object:
    return await generate(prompt, model_id=model_id, parameters=parameters)


def _text_of(result: object) -> str:
    if isinstance(result, str):
        return result
    text = getattr(result, "text", None)
    if isinstance(text, str):
        return text
    raise TypeError(
        f"The target answered a {type(result).__name__}; answer a str or an object with .text."
    )


def _named_targets(
    targets: Mapping[str, Target] | None, named: Mapping[str, Target]
) -> dict[str, Target]:
    merged: dict[str, Target] = dict(targets or {})
    for name, target in named.items():
        if name in merged:
            raise ConfigurationError(f"Target {name!r} is given twice; give each name once.")
        merged[name] = target
    if not merged:
        raise ConfigurationError("No targets: give at least one, e.g. compare(data, tuned=...).")
    for name in merged:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"Target names must be non-empty strings, not {name!r}.")
    return merged


def _baseline(targets: Mapping[str, Target], baseline: str | None) -> str:
    if baseline is None:
        return next(iter(targets))
    if baseline not in targets:
        raise ConfigurationError(
            f"baseline={baseline!r} is not one of the targets: {', '.join(map(repr, targets))}."
        )
    return baseline
