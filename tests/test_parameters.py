"""Prompt-tuning parameters: every bad value is an InvalidParametersError naming field and range."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from granite_tuner import GraniteTunerError, InvalidParametersError
from granite_tuner.parameters import TASK_IDS, PromptTuningParameters

Build = Callable[[dict[str, Any]], PromptTuningParameters]

# Every way a caller builds parameters must raise our error, not pydantic's.
BUILDERS: dict[str, Build] = {
    "init": lambda values: PromptTuningParameters(**values),
    "model_validate": PromptTuningParameters.model_validate,
    "model_validate_json": lambda values: PromptTuningParameters.model_validate_json(
        json.dumps(values)
    ),
}


@pytest.fixture(params=list(BUILDERS))
def build(request: pytest.FixtureRequest) -> Build:
    return BUILDERS[request.param]


def rejected(build: Build, values: dict[str, Any]) -> InvalidParametersError:
    with pytest.raises(InvalidParametersError) as caught:
        build(values)
    error = caught.value
    assert not isinstance(error, ValidationError)
    assert isinstance(error, GraniteTunerError)
    assert isinstance(error, ValueError)
    assert error.__cause__ is None  # pydantic's traceback is not chained onto ours
    return error


# (field, minimum, maximum, outside below, outside above, who)
BOUNDS = [
    ("num_epochs", 1, 50, 0, 51, "watsonx.ai accepts 1 to 50"),
    ("learning_rate", 0.00001, 0.5, 0.000009, 0.51, "watsonx.ai accepts 0.00001 to 0.5"),
    ("batch_size", 1, 16, 0, 17, "watsonx.ai accepts 1 to 16"),
    ("accumulate_steps", 1, 128, 0, 129, "watsonx.ai accepts 1 to 128"),
    ("max_input_tokens", 1, 256, 0, 257, "watsonx.ai accepts 1 to 256"),
    ("max_output_tokens", 1, 128, 0, 129, "watsonx.ai accepts 1 to 128"),
    ("num_virtual_tokens", 1, 1000, 0, 1001, "allowed 1 to 1000"),
]


@pytest.mark.parametrize(
    ("field", "minimum", "maximum", "below", "above", "allowed"),
    BOUNDS,
    ids=[b[0] for b in BOUNDS],
)
def test_every_numeric_field_accepts_its_bounds_and_rejects_just_outside(
    build: Build,
    field: str,
    minimum: float,
    maximum: float,
    below: float,
    above: float,
    allowed: str,
) -> None:
    assert getattr(build({field: minimum}), field) == minimum
    assert getattr(build({field: maximum}), field) == maximum
    for value in (below, above):
        error = rejected(build, {field: value})
        assert error.field == field
        assert str(error) == f"{field}={value!r} is out of range: {allowed}."


def test_the_message_names_field_value_and_range() -> None:
    with pytest.raises(InvalidParametersError) as caught:
        PromptTuningParameters(num_epochs=500)
    assert str(caught.value) == "num_epochs=500 is out of range: watsonx.ai accepts 1 to 50."
    assert caught.value.field == "num_epochs"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("num_epochs", True, "not an integer"),
        ("num_epochs", "5", "not an integer"),
        ("batch_size", 2.5, "not an integer"),
        ("batch_size", None, None),
        ("learning_rate", "0.3", "not a usable number"),
        ("learning_rate", float("nan"), "not a usable number"),
        ("learning_rate", float("inf"), "not a usable number"),
        ("init_text", 3, "not a string"),
        ("verbalizer", ["{{input}}"], "not a string"),
    ],
)
def test_values_of_the_wrong_type_are_rejected(
    field: str, value: object, expected: str | None
) -> None:
    if expected is None:
        assert getattr(PromptTuningParameters(**{field: value}), field) is None
        return
    error = rejected(BUILDERS["init"], {field: value})
    assert error.field == field
    assert f"{field}={value!r}" in str(error)
    assert expected in str(error)


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("num_epoch", "num_epochs"), ("epochs", "num_epochs"), ("learningrate", "learning_rate")],
)
def test_an_unknown_field_is_named_with_the_close_match(
    build: Build, typo: str, suggestion: str
) -> None:
    error = rejected(build, {typo: 3})
    assert error.field == typo
    assert f"{typo!r} is not a prompt-tuning parameter" in str(error)
    assert f"Did you mean {suggestion!r}?" in str(error)


def test_an_unknown_field_without_a_close_match_lists_the_known_ones() -> None:
    error = rejected(BUILDERS["init"], {"lr": 0.3})
    assert "Did you mean" not in str(error)
    assert "learning_rate" in str(error)


def test_task_ids() -> None:
    assert TASK_IDS == (
        "classification",
        "question_answering",
        "summarization",
        "retrieval_augmented_generation",
        "generation",
        "code",
        "extraction",
    )
    assert PromptTuningParameters().task_id == "classification"
    for task_id in TASK_IDS:
        assert PromptTuningParameters.model_validate({"task_id": task_id}).task_id == task_id


def test_a_wrong_task_id_lists_the_valid_ones(build: Build) -> None:
    error = rejected(build, {"task_id": "clasification"})
    assert error.field == "task_id"
    message = str(error)
    assert "task_id='clasification' is not valid" in message
    for task_id in TASK_IDS:
        assert repr(task_id) in message
    assert "Did you mean 'classification'?" in message


def test_a_wrong_init_method_lists_the_valid_ones() -> None:
    error = rejected(BUILDERS["init"], {"init_method": "txt"})
    assert error.field == "init_method"
    assert "choose one of: 'random', 'text'." in str(error)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"init_method": "text"}, "init_method='text' needs init_text"),
        ({"init_method": "text", "init_text": "   "}, "init_method='text' needs init_text"),
        ({"init_method": "random", "init_text": "Classify"}, "only used with init_method='text'"),
        ({"init_text": "Classify"}, "only used with init_method='text'"),
    ],
)
def test_init_text_rules(build: Build, values: dict[str, Any], expected: str) -> None:
    error = rejected(build, values)
    assert error.field == "init_text"
    assert expected in str(error)


def test_init_text_with_init_method_text_is_accepted() -> None:
    parameters = PromptTuningParameters(init_method="text", init_text="Classify the review.")
    assert parameters.init_text == "Classify the review."
    assert PromptTuningParameters(init_method="random").init_text is None


@pytest.mark.parametrize("verbalizer", ["Input: Output:", "Input: {input} Output:", ""])
def test_a_verbalizer_needs_the_input_placeholder(build: Build, verbalizer: str) -> None:
    error = rejected(build, {"verbalizer": verbalizer})
    assert error.field == "verbalizer"
    assert "{{input}}" in str(error)


def test_a_verbalizer_with_the_placeholder_is_accepted() -> None:
    verbalizer = "Review: {{input}} Satisfied (1/0):"
    assert PromptTuningParameters(verbalizer=verbalizer).verbalizer == verbalizer


def test_several_problems_are_reported_together() -> None:
    error = rejected(BUILDERS["model_validate"], {"num_epochs": 0, "batch_size": 99, "foo": 1})
    assert error.field == "num_epochs"
    message = str(error)
    assert message.startswith("3 invalid prompt-tuning parameters:")
    assert "num_epochs=0" in message
    assert "batch_size=99" in message
    assert "'foo'" in message


def test_something_that_is_not_a_mapping_is_rejected() -> None:
    error = rejected(BUILDERS["model_validate"], [1, 2])  # type: ignore[arg-type]
    assert error.field is None
    assert "mapping" in str(error)


def test_model_validate_strings_parses_numbers() -> None:
    parameters = PromptTuningParameters.model_validate_strings(
        {"num_epochs": "7", "learning_rate": "0.1", "task_id": "generation"}
    )
    assert (parameters.num_epochs, parameters.learning_rate) == (7, 0.1)
    with pytest.raises(InvalidParametersError, match="not an integer"):
        PromptTuningParameters.model_validate_strings({"num_epochs": "seven"})
    with pytest.raises(InvalidParametersError, match="out of range"):
        PromptTuningParameters.model_validate_strings({"num_epochs": "70"})


def test_to_watsonx_sends_only_what_was_set() -> None:
    assert PromptTuningParameters().to_watsonx() == {}
    parameters = PromptTuningParameters(
        task_id="summarization",
        num_epochs=20,
        learning_rate=0.3,
        batch_size=8,
        accumulate_steps=16,
        max_input_tokens=256,
        max_output_tokens=8,
        init_method="text",
        init_text="Summarise the review.",
        verbalizer="Input: {{input}} Output:",
        num_virtual_tokens=20,
    )
    assert parameters.to_watsonx() == {
        "num_epochs": 20,
        "learning_rate": 0.3,
        "batch_size": 8,
        "accumulate_steps": 16,
        "max_input_tokens": 256,
        "max_output_tokens": 8,
        "init_method": "text",
        "init_text": "Summarise the review.",
        "verbalizer": "Input: {{input}} Output:",
    }


def test_json_round_trip() -> None:
    parameters = PromptTuningParameters(
        task_id="extraction", num_epochs=3, learning_rate=0.00001, num_virtual_tokens=8
    )
    assert PromptTuningParameters.model_validate_json(parameters.model_dump_json()) == parameters
    assert PromptTuningParameters.model_validate(parameters.model_dump()) == parameters


def test_parameters_are_frozen() -> None:
    parameters = PromptTuningParameters(num_epochs=3)
    with pytest.raises(ValueError, match="frozen"):
        parameters.num_epochs = 4  # type: ignore[misc]
