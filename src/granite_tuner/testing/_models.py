"""The foundation models and tuning tasks the fake knows: data only, no endpoints.

Its own module so that `_view` (what route handlers see of the fake) can name `FakeModel`
without importing the endpoint modules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._http import ApiError

__all__ = ["TASKS", "FakeModel", "default_models"]

# task_id -> label. The official SDK turns a label into an enum name (upper case, spaces and
# dashes to "_"), so these labels give exactly the names of its static enum (protocol §10).
TASKS: dict[str, str] = {
    "question_answering": "Question answering",
    "summarization": "Summarization",
    "retrieval_augmented_generation": "Retrieval augmented generation",
    "classification": "Classification",
    "generation": "Generation",
    "code": "Code generation and conversion",
    "extraction": "Extraction",
}

_ALL_TASKS = tuple(TASKS)


@dataclass(frozen=True)
class FakeModel:
    """A foundation model as ``foundation_model_specs`` describes it.

    ``lifecycle`` maps a lifecycle state (``available``, ``deprecated``, ``constricted``,
    ``withdrawn``, ...) to the ISO date it starts; a state whose date has come is current. A
    model that is currently ``withdrawn`` can be neither tuned nor used for generation.
    """

    model_id: str
    label: str = ""
    provider: str = "IBM"
    tunable: bool = True
    lifecycle: Mapping[str, str] = field(
        default_factory=lambda: {"available": "2023-07-18"}, hash=False
    )
    tasks: Sequence[str] = field(default=_ALL_TASKS, hash=False)

    def current_states(self, today: dt.date | None = None) -> set[str]:
        """The lifecycle states whose start date has come."""
        day = (today or dt.datetime.now(dt.UTC).date()).isoformat()
        return {state for state, start in self.lifecycle.items() if start <= day}

    @property
    def withdrawn(self) -> bool:
        return "withdrawn" in self.current_states()

    def functions(self) -> list[str]:
        return ["prompt_tune_trainable", "text_generation"] if self.tunable else ["text_generation"]

    def spec(self) -> dict[str, Any]:
        """The model's entry in ``foundation_model_specs.resources``."""
        short_name = self.model_id.rsplit("/", 1)[-1]
        return {
            "model_id": self.model_id,
            "label": self.label or short_name,
            "provider": self.provider,
            "source": "Hugging Face",
            "short_description": f"{self.label or short_name} (fake model served by FakeWatsonx).",
            "functions": [{"id": function} for function in self.functions()],
            "tasks": [{"id": task} for task in self.tasks],
            "input_tier": "class_1",
            "output_tier": "class_1",
            "number_params": "13b",
            "model_limits": {"max_sequence_length": 8192, "max_output_tokens": 8192},
            "lifecycle": [
                {"id": state, "start_date": start}
                for state, start in sorted(self.lifecycle.items(), key=lambda item: item[1])
            ],
        }

    def has(self, name: str) -> bool:
        """Whether the model has the filter property ``name`` (``function_x``, ``task_x``...)."""
        kind, _, value = name.partition("_")
        if kind == "modelid":
            return self.model_id == value
        if kind == "provider":
            return self.provider.lower() == value.lower()
        if kind == "source":
            return value.lower() == "hugging face"
        if kind == "function":
            return value in self.functions()
        if kind == "task":
            return value in self.tasks
        if kind == "lifecycle":
            return value in self.current_states()
        raise ApiError(400, f"Unsupported filter '{name}'.", "invalid_filter")


def default_models() -> list[FakeModel]:
    """The models a fake serves unless told otherwise."""
    return [
        FakeModel(
            "ibm/granite-13b-instruct-v2",
            label="granite-13b-instruct-v2",
            lifecycle={"available": "2023-12-01"},
        ),
        FakeModel(
            "google/flan-t5-xl",
            label="flan-t5-xl-3b",
            provider="Google",
            lifecycle={"available": "2023-07-07", "deprecated": "2025-01-15"},
        ),
        FakeModel(
            "ibm/granite-3-8b-instruct",
            label="granite-3-8b-instruct",
            tunable=False,
            lifecycle={"available": "2024-10-21"},
        ),
    ]
