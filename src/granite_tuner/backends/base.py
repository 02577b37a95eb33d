"""The seam between the workflow and an engine: what `Tuner` and `Deployment` need.

`Tuner` (and later `Deployment` and `Evaluator`) speak only to this Protocol. A backend
speaks only to its service or engine, and what crosses the seam is this package's own
models (`LabelledSet`, `PromptTuningParameters`, `TuningRun`), never wire JSON.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from granite_tuner.data import LabelledSet
from granite_tuner.errors import ConfigurationError
from granite_tuner.generation import GenerationParameters, GenerationResult
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.runs import TuningRun

__all__ = [
    "FAILED_STATES",
    "READY_STATES",
    "SERVING_NAME_PATTERN",
    "BaseModelInfo",
    "DeploymentInfo",
    "ServingBackend",
    "TuningBackend",
    "check_serving_name",
]


class BaseModelInfo(BaseModel):
    """A model that can be prompt-tuned, and where it is in its lifecycle."""

    model_config = ConfigDict(frozen=True)

    model_id: str
    lifecycle_state: str = "available"
    label: str | None = None


@runtime_checkable
class TuningBackend(Protocol):
    """Uploads training data and runs prompt tuning."""

    @property
    def backend_name(self) -> Literal["watsonx", "local"]: ...

    async def tunable_models(self) -> list[BaseModelInfo]:
        """The base models that can be prompt-tuned here now."""
        ...

    async def upload_training_data(self, data: LabelledSet, *, name: str) -> str:
        """Store the training set; returns the reference a run is started with."""
        ...

    async def delete_training_data(self, data_ref: str) -> None: ...

    async def start_tuning(
        self, *, name: str, base_model: str, data_ref: str, parameters: PromptTuningParameters
    ) -> TuningRun:
        """Start one run. Must never start two, even when an answer is lost and retried."""
        ...

    async def get_tuning_run(self, run_id: str) -> TuningRun:
        """The run's current state; `RunNotFoundError` when there is no such run."""
        ...

    async def find_tuning_runs(self, name: str) -> list[TuningRun]:
        """Runs with exactly this name, newest first."""
        ...

    async def cancel_tuning_run(self, run_id: str) -> None: ...

    async def delete_tuning_run(self, run_id: str) -> None: ...


class DeploymentInfo(BaseModel):
    """A backend's snapshot of one deployment."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str | None = None
    state: str
    serving_name: str | None = None
    model_id: str | None = None
    base_model_id: str | None = None
    created_at: datetime | None = None
    failure_message: str | None = None

    @property
    def is_ready(self) -> bool:
        return self.state in READY_STATES

    @property
    def has_failed(self) -> bool:
        return self.state in FAILED_STATES


#: What watsonx.ai accepts as a serving name (the local backend keeps the same rule).
SERVING_NAME_PATTERN = re.compile(r"^[a-z0-9_]{1,36}$")


def check_serving_name(serving_name: str) -> str:
    """`serving_name` if valid, else a `ConfigurationError` that says what is allowed."""
    if not isinstance(serving_name, str) or not SERVING_NAME_PATTERN.fullmatch(serving_name):
        raise ConfigurationError(
            f"serving_name={serving_name!r} is not valid: use 1 to 36 lower-case letters, digits "
            "or underscores (e.g. 'reviews_pt_1'), or leave it out to get a generated one."
        )
    return serving_name


#: Deployment states (legacy names included) that mean "serving" and "will not serve".
READY_STATES = frozenset({"ready", "DEPLOY_SUCCESS"})
FAILED_STATES = frozenset({"failed", "DEPLOY_FAILED"})


@runtime_checkable
class ServingBackend(Protocol):
    """Deploys tuned models and generates text with them or with base models."""

    @property
    def backend_name(self) -> Literal["watsonx", "local"]: ...

    async def deploy(self, model_id: str, *, name: str, serving_name: str | None) -> DeploymentInfo:
        """Start serving a tuned model. Must never create two, even when retried."""
        ...

    async def get_deployment(self, deployment_id: str) -> DeploymentInfo:
        """The deployment's current state; `DeploymentNotFoundError` when there is none."""
        ...

    async def delete_deployment(self, deployment_id: str) -> None: ...

    async def serving_name_available(self, serving_name: str) -> bool: ...

    async def generate(
        self,
        prompt: str,
        *,
        model_id: str | None = None,
        deployment_id: str | None = None,
        parameters: GenerationParameters | Mapping[str, Any] | None = None,
    ) -> GenerationResult:
        """One completion from a base model (`model_id`) or a deployment (`deployment_id`)."""
        ...
