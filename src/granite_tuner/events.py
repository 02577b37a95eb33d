"""Progress of a tuning run as typed events, for callbacks, streams and progress bars.

A long wait reports what happens — the run was submitted, its state changed, a step was
logged, an epoch ended with its mean loss, the run finished — as small pydantic models that
share a `kind` field, so a consumer can `match` on the class or serialise them as JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from granite_tuner.runs import TrainingState

__all__ = [
    "EpochCompleted",
    "RunFinished",
    "RunSubmitted",
    "StateChanged",
    "StepLogged",
    "TuningEvent",
]


def _now() -> datetime:
    return datetime.now(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(defer_build=True, frozen=True)

    run_id: str
    at: datetime = Field(default_factory=_now, description="When the event was seen.")


class RunSubmitted(_Event):
    """The run was created (or attached to, when `attached` is true)."""

    kind: Literal["submitted"] = "submitted"
    name: str | None = None
    base_model: str | None = None
    attached: bool = False


class StateChanged(_Event):
    """The service reports a new state (`queued`, `running`, `completed`, ...).

    A state this version does not know comes as `running`, with the service's own value in
    `service_state`.
    """

    kind: Literal["state_changed"] = "state_changed"
    previous: TrainingState | None
    state: TrainingState
    message: str | None = None
    service_state: str | None = None


class StepLogged(_Event):
    """A new metric point: the loss at one training iteration."""

    kind: Literal["step"] = "step"
    iteration: int | None
    epoch: int | None
    loss: float | None


class EpochCompleted(_Event):
    """An epoch ended; `mean_loss` is the mean of its logged losses.

    When the run validates (the local backend), the soft prompt's validation loss and accuracy
    after this epoch come too, and `best_epoch` is the epoch kept so far.
    """

    kind: Literal["epoch_completed"] = "epoch_completed"
    epoch: int
    mean_loss: float
    num_epochs: int | None = None
    validation_loss: float | None = None
    validation_accuracy: float | None = None
    best_epoch: int | None = None


class RunFinished(_Event):
    """The run reached a final state; no more events follow."""

    kind: Literal["finished"] = "finished"
    state: TrainingState
    final_loss: float | None = None
    model_id: str | None = None
    best_epoch: int | None = None
    stop_reason: str | None = None


TuningEvent = Annotated[
    RunSubmitted | StateChanged | StepLogged | EpochCompleted | RunFinished,
    Field(discriminator="kind"),
]
