"""The one seam between the workflow and an engine: what `Tuner` needs from a backend.

`Tuner` (and later `Deployment` and `Evaluator`) speak only to this Protocol. A backend
speaks only to its service or engine, and what crosses the seam is this package's own
models (`LabelledSet`, `PromptTuningParameters`, `TuningRun`), never wire JSON.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from granite_tuner.data import LabelledSet
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.runs import TuningRun

__all__ = ["BaseModelInfo", "TuningBackend"]


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

    async def get_tuning_run(self, run_id: str) -> TuningRun: ...

    async def find_tuning_runs(self, name: str) -> list[TuningRun]:
        """Runs with exactly this name, newest first."""
        ...

    async def cancel_tuning_run(self, run_id: str) -> None: ...

    async def delete_tuning_run(self, run_id: str) -> None: ...
