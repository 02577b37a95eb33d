"""Text generation, whichever backend serves it: the parameters and the result.

`GenerationParameters` holds the decoding settings watsonx.ai documents (protocol §9.1) with
their ranges, checked before anything is sent; `GenerationResult` is the answer to one prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from granite_tuner.errors import ConfigurationError
from granite_tuner.parameters import CheckedParameters, StrictFloat, StrictInt, rule_violation

__all__ = [
    "DecodingMethod",
    "GenerationParameters",
    "GenerationResult",
    "checked_generation_parameters",
]

DecodingMethod = Literal["greedy", "sample"]


class GenerationParameters(CheckedParameters):
    """Decoding settings for one generation; `None` leaves the choice to the backend."""

    noun: ClassVar[str] = "generation parameter"
    range_authority: ClassVar[str] = "watsonx.ai accepts"

    decoding_method: DecodingMethod | None = None
    max_new_tokens: Annotated[StrictInt | None, Field(ge=0, le=32_768)] = None
    min_new_tokens: Annotated[StrictInt | None, Field(ge=0, le=32_768)] = None
    stop_sequences: tuple[str, ...] | None = Field(default=None, max_length=6)
    include_stop_sequence: bool | None = None
    temperature: Annotated[StrictFloat | None, Field(ge=0.0, le=2.0)] = None
    top_k: Annotated[StrictInt | None, Field(ge=1, le=100)] = None
    top_p: Annotated[StrictFloat | None, Field(ge=0.0, le=1.0)] = None
    random_seed: Annotated[StrictInt | None, Field(ge=1, le=4_294_967_295)] = None
    repetition_penalty: Annotated[StrictFloat | None, Field(ge=1.0, le=2.0)] = None
    time_limit: Annotated[StrictInt | None, Field(ge=1, le=3_600_000)] = None
    truncate_input_tokens: Annotated[StrictInt | None, Field(ge=1, le=131_072)] = None

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        if (
            self.min_new_tokens is not None
            and self.max_new_tokens is not None
            and self.min_new_tokens > self.max_new_tokens
        ):
            rule_violation(
                "min_new_tokens",
                f"min_new_tokens={self.min_new_tokens} is more than "
                f"max_new_tokens={self.max_new_tokens}; lower it or raise max_new_tokens.",
            )
        if self.stop_sequences is not None and any(not s for s in self.stop_sequences):
            rule_violation("stop_sequences", "stop_sequences must not contain an empty string.")
        return self

    def to_watsonx(self) -> dict[str, Any]:
        """The `parameters` object of a generation request (only the fields that are set)."""
        values = self.model_dump(exclude_none=True)
        if "stop_sequences" in values:
            values["stop_sequences"] = list(values["stop_sequences"])
        return values


def checked_generation_parameters(
    parameters: GenerationParameters | Mapping[str, Any] | None,
) -> GenerationParameters | None:
    """A plain mapping checked as `GenerationParameters`, so a typo fails before any work.

    What every backend's `generate` does with the parameters it is given.
    """
    if parameters is None or isinstance(parameters, GenerationParameters):
        return parameters
    if not isinstance(parameters, Mapping):
        raise ConfigurationError(
            "parameters must be GenerationParameters or a mapping of its fields, not "
            f"{type(parameters).__name__}."
        )
    return GenerationParameters.model_validate(dict(parameters))


class GenerationResult(BaseModel):
    """The answer to one prompt."""

    model_config = ConfigDict(defer_build=True, frozen=True)

    text: str
    generated_token_count: int | None = None
    input_token_count: int | None = None
    #: Why generation stopped, as the backend says it: e.g. `max_tokens`, `eos_token`,
    #: `stop_sequence`, `time_limit`, `cancelled`. A plain string, because watsonx.ai may add
    #: reasons and an answer must not fail to parse over one.
    stop_reason: str | None = None
    seed: int | None = None
    model_id: str | None = None
