"""Prompt-tuning parameters, checked before a run is started (protocol §7.1).

A run that the service rejects after an upload, or worse one that trains for hours with a value
the user did not mean, is money lost. `PromptTuningParameters` holds the parameters with the
ranges watsonx.ai documents and raises `InvalidParametersError` naming the field, the value given
and what is allowed, for every way of building it: keyword arguments, `model_validate` and
`model_validate_json`. Fields left `None` are not sent, so the service picks its own default.

The same object drives the offline backend, which reads the same names with the same meanings
(plus `num_virtual_tokens`, which watsonx.ai does not take).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self, TypeVar, get_args

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from granite_tuner.errors import InvalidParametersError

__all__ = ["TASK_IDS", "InitMethod", "PromptTuningParameters", "TaskId"]

TaskId = Literal[
    "classification",
    "question_answering",
    "summarization",
    "retrieval_augmented_generation",
    "generation",
    "code",
    "extraction",
]
TASK_IDS: tuple[str, ...] = get_args(TaskId)

InitMethod = Literal["random", "text"]

# Strict numbers: `True` must not become 1 epoch, nor "0.3" a learning rate by accident.
# (A strict float still accepts an int, so `learning_rate=1` works.)
StrictInt = Annotated[int, Field(strict=True)]
StrictFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]

# The error type our cross-field rules raise inside pydantic, so that they keep their field.
_RULE_ERROR = "granite_tuner_parameter_rule"

_T = TypeVar("_T")


class CheckedParameters(BaseModel):
    """A frozen parameters model whose every way in raises `InvalidParametersError`."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    #: What one field is called in messages ("prompt-tuning parameter").
    noun: ClassVar[str] = "parameter"
    #: Who checks the ranges, for messages ("watsonx.ai accepts 1 to 50").
    range_authority: ClassVar[str] = "allowed"
    #: Fields whose range is this package's own, not the service's.
    own_ranges: ClassVar[frozenset[str]] = frozenset()

    # Why wrappers and not a validator: pydantic turns any ValueError raised during validation
    # into its own ValidationError, and InvalidParametersError is a ValueError, so no validator
    # (not even a mode="wrap" one) can let it out. So each public way in is wrapped, and
    # `_translate` turns pydantic's errors into ours. Because __init__ is overridden, pydantic's
    # model_validate* call it too, and hand back our error wrapped as a "value_error";
    # `_translate` unwraps it. __init__ is hidden from type checkers so that the pydantic mypy
    # plugin keeps checking keyword names. Limits: as a field of another model, a bad value
    # surfaces as that model's ValidationError (carrying our message); model_construct and
    # model_copy(update=...) skip validation, as for any pydantic model.
    if not TYPE_CHECKING:

        def __init__(self, **data: Any) -> None:
            _translating(lambda: super(CheckedParameters, self).__init__(**data), type(self))

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Like `BaseModel.model_validate`, raising `InvalidParametersError`."""
        return _translating(
            lambda: super(CheckedParameters, cls).model_validate(obj, *args, **kwargs), cls
        )

    @classmethod
    def model_validate_json(cls, json_data: Any, *args: Any, **kwargs: Any) -> Self:
        """Like `BaseModel.model_validate_json`, raising `InvalidParametersError`."""
        return _translating(
            lambda: super(CheckedParameters, cls).model_validate_json(json_data, *args, **kwargs),
            cls,
        )

    @classmethod
    def model_validate_strings(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Values given as text (command line, environment): numbers are parsed, then checked.

        Pydantic's own strings mode is lost behind a custom __init__, so the numeric fields
        are converted here; text that is no number is left for the usual error message.
        """
        if isinstance(obj, Mapping):
            obj = {key: _parse_number(cls, key, value) for key, value in obj.items()}
        return cls.model_validate(obj, *args, **kwargs)


class PromptTuningParameters(CheckedParameters):
    """The tuning parameters of one prompt-tuning run; `None` means "the service decides"."""

    noun: ClassVar[str] = "prompt-tuning parameter"
    range_authority: ClassVar[str] = "watsonx.ai accepts"
    own_ranges: ClassVar[frozenset[str]] = frozenset({"num_virtual_tokens"})

    task_id: TaskId = "classification"
    num_epochs: Annotated[StrictInt | None, Field(ge=1, le=50)] = None
    learning_rate: Annotated[StrictFloat | None, Field(ge=0.00001, le=0.5)] = None
    batch_size: Annotated[StrictInt | None, Field(ge=1, le=16)] = None
    accumulate_steps: Annotated[StrictInt | None, Field(ge=1, le=128)] = None
    max_input_tokens: Annotated[StrictInt | None, Field(ge=1, le=256)] = None
    max_output_tokens: Annotated[StrictInt | None, Field(ge=1, le=128)] = None
    init_method: InitMethod | None = None
    init_text: str | None = None
    verbalizer: str | None = None
    num_virtual_tokens: Annotated[StrictInt | None, Field(ge=1, le=1000)] = None

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        """Rules that involve the value of a field, or two fields together."""
        if self.init_method == "text" and (self.init_text is None or not self.init_text.strip()):
            rule_violation(
                "init_text",
                "init_method='text' needs init_text: give the text whose embedding starts the "
                "soft prompt (e.g. a short description of the task), or use init_method='random'.",
            )
        if self.init_text is not None and self.init_method != "text":
            rule_violation(
                "init_text",
                f"init_text is only used with init_method='text' (init_method is "
                f"{self.init_method!r}); set init_method='text' or leave init_text out.",
            )
        if self.verbalizer is not None and "{{input}}" not in self.verbalizer:
            rule_violation(
                "verbalizer",
                f"verbalizer={self.verbalizer!r} has no '{{{{input}}}}' placeholder, so the "
                "model would never see the input; write e.g. 'Input: {{input}} Output:'.",
            )
        return self

    def to_watsonx(self) -> dict[str, Any]:
        """The optional `prompt_tuning` fields of a watsonx.ai training request (§7.1).

        Only fields that were set; `task_id` (the client adds it) and `num_virtual_tokens`
        (offline only) are left out.
        """
        return self.model_dump(exclude_none=True, exclude={"task_id", "num_virtual_tokens"})


def _parse_number(model: type[CheckedParameters], field: Any, value: Any) -> Any:
    """`value` as an int or float when `field` holds one and the text is one, else unchanged."""
    info = model.model_fields.get(field) if isinstance(field, str) else None
    if info is None or not isinstance(value, str):
        return value
    kinds = {get_args(arg)[0] if get_args(arg) else arg for arg in get_args(info.annotation)}
    for kind in (int, float):
        if kind in kinds:
            try:
                return kind(value.strip())
            except ValueError:
                return value
    return value


def rule_violation(field: str, message: str) -> None:
    raise PydanticCustomError(_RULE_ERROR, "{message}", {"field": field, "message": message})


def _translating(call: Callable[[], _T], model: type[CheckedParameters]) -> _T:
    try:
        return call()
    except ValidationError as exc:
        raise _translate(exc, model) from None


def _translate(exc: ValidationError, model: type[CheckedParameters]) -> InvalidParametersError:
    """One `InvalidParametersError` for all of pydantic's errors; `field` is the first one's."""
    for error in exc.errors():
        inner = error.get("ctx", {}).get("error")
        if isinstance(inner, InvalidParametersError):
            return inner  # already translated by __init__, wrapped by an outer model_validate*
    found = [_describe(error, model) for error in exc.errors()]
    field = found[0][0]
    if len(found) == 1:
        return InvalidParametersError(found[0][1], field=field)
    lines = "\n".join(f"  - {message}" for _, message in found)
    return InvalidParametersError(f"{len(found)} invalid {model.noun}s:\n{lines}", field=field)


def _describe(error: ErrorDetails, model: type[CheckedParameters]) -> tuple[str | None, str]:
    """(field, message) for one pydantic error: what was given and what is allowed."""
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == _RULE_ERROR:
        return str(ctx["field"]), str(ctx["message"])
    loc = error["loc"]
    if not loc:
        return None, f"{model.noun}s must be a mapping of names to values, not {_given(error)}."
    field = str(loc[0])
    value = error.get("input")
    fields = model.model_fields
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(field, list(fields), n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return field, (
            f"{field!r} is not a {model.noun}.{hint} Known parameters: {', '.join(fields)}."
        )
    if kind == "literal_error":
        choices = get_args(fields[field].annotation)
        allowed = _flatten_literals(choices)
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return field, (
            f"{field}={value!r} is not valid; choose one of: "
            f"{', '.join(repr(a) for a in allowed)}.{hint}"
        )
    bounds = _bounds(model, field)
    if kind in {"greater_than_equal", "less_than_equal"} and bounds is not None:
        who = "allowed" if field in model.own_ranges else model.range_authority
        low, high = bounds
        return field, f"{field}={value!r} is out of range: {who} {_num(low)} to {_num(high)}."
    if kind in {"int_type", "int_from_float", "int_parsing"}:
        range_text = f" from {_num(bounds[0])} to {_num(bounds[1])}" if bounds else ""
        return field, f"{field}={value!r} is not an integer: give a whole number{range_text}."
    if kind in {"float_type", "float_parsing", "finite_number"}:
        range_text = f" from {_num(bounds[0])} to {_num(bounds[1])}" if bounds else ""
        return field, f"{field}={value!r} is not a usable number: give a number{range_text}."
    if kind == "string_type":
        return field, f"{field}={value!r} is not a string: give text."
    return field, f"{field}={value!r} is not valid: {error['msg']}."


def _flatten_literals(args: tuple[Any, ...]) -> list[Any]:
    """The values of a `Literal[...] | None` annotation, in order."""
    values: list[Any] = []
    for arg in args:
        inner = get_args(arg)
        if inner:
            values.extend(_flatten_literals(inner))
        elif arg is not type(None):
            values.append(arg)
    return values


def _bounds(model: type[CheckedParameters], field: str) -> tuple[float, float] | None:
    """The (min, max) declared on a field, read from its `Field(ge=..., le=...)`."""
    info = model.model_fields.get(field)
    if info is None:
        return None
    low = next((m.ge for m in info.metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in info.metadata if isinstance(m, annotated_types.Le)), None)
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return None
    return float(low), float(high)


def _num(value: float) -> str:
    """1.0 -> '1', 1e-05 -> '0.00001': bounds as people write them."""
    if math.isfinite(value) and value.is_integer():
        return str(int(value))
    return format(Decimal(repr(value)), "f")


def _given(error: ErrorDetails) -> str:
    return type(error.get("input")).__name__
