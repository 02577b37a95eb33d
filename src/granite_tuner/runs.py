"""What a tuning run looks like to the rest of the package, whichever backend runs it.

A backend reports a run as a `TuningRun` snapshot (state, timestamps, metric points). The
`Tuner` turns the last snapshot into a `TuningResult`: the run, its parameters, and the loss
per epoch computed the way IBM's SDK computes it — consecutive metric points of one epoch
averaged — so the numbers here and in IBM's `summary()` agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING, Any, Literal, get_args, overload

from pydantic import BaseModel, ConfigDict, Field

from granite_tuner import _html

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "FINISHED_STATES",
    "KNOWN_STATES",
    "UNKNOWN_TRAINING_STATE",
    "CheckpointInfo",
    "MetricPoint",
    "TrainingState",
    "TuningResult",
    "TuningRun",
    "ValidationPoint",
    "epoch_groups",
    "loss_per_epoch",
    "training_state",
]

TrainingState = Literal[
    "queued", "pending", "running", "storing", "completed", "failed", "canceled", "error"
]
"""Where a tuning run is, on either backend (watsonx.ai protocol §7.2; `error` is legacy).

A run goes `queued`/`pending` -> `running` -> (`storing`) -> `completed`, `failed` or
`canceled`; the local backend uses a subset.
"""
#: States after which a run changes no more.
FINISHED_STATES: frozenset[TrainingState] = frozenset({"completed", "failed", "canceled", "error"})
#: Every state the protocol documents.
KNOWN_STATES: frozenset[TrainingState] = frozenset(get_args(TrainingState))
#: What a state this version does not know becomes: the run is treated as still going (a
#: newer service may add states; waiting on is safe, stopping early would not be).
UNKNOWN_TRAINING_STATE: TrainingState = "running"


def training_state(value: object) -> tuple[TrainingState, str | None]:
    """A service's state as `(state, service_state)`: a known state as is (and None), anything
    else as `UNKNOWN_TRAINING_STATE` with the service's own value kept for logs and users."""
    for known in KNOWN_STATES:
        if value == known:
            return known, None
    return UNKNOWN_TRAINING_STATE, str(value)


class MetricPoint(BaseModel):
    """One logged training step: which iteration and epoch, and the loss then."""

    model_config = ConfigDict(defer_build=True, frozen=True)

    iteration: int | None = None
    epoch: int | None = None
    loss: float | None = None
    timestamp: datetime | None = None


class ValidationPoint(BaseModel):
    """The soft prompt's score on the validation data at the end of one epoch (from 0)."""

    model_config = ConfigDict(defer_build=True, frozen=True)

    epoch: int
    iteration: int | None = None
    loss: float
    accuracy: float | None = None
    #: The epoch kept as best after this validation.
    best_epoch: int | None = None


class CheckpointInfo(BaseModel):
    """One kept checkpoint of a local run: where training was, and how good it was then.

    `step` (the optimizer steps done, from 1) names it: `Deployment.create(client, result,
    checkpoint=step)` serves its soft prompt, and `model_id` is the id that deploys it.
    """

    model_config = ConfigDict(defer_build=True, frozen=True)

    step: int
    #: The epoch (from 0) the step belongs to; `end_of_epoch` when it is that epoch's last.
    epoch: int
    end_of_epoch: bool
    #: Mean training loss of the epoch's steps up to this one.
    training_loss: float | None = None
    #: The validation score taken at the end of the epoch (None mid-epoch or without
    #: validation).
    validation_loss: float | None = None
    validation_accuracy: float | None = None
    #: Whether this is the best epoch's checkpoint (by the run's selection metric).
    best: bool = False
    model_id: str
    created_at: datetime | None = None


class TuningRun(BaseModel):
    """A backend's snapshot of one tuning run."""

    model_config = ConfigDict(defer_build=True, frozen=True)

    id: str
    name: str | None = None
    state: TrainingState
    #: The state as the service sent it, when this version does not know it (`state` is then
    #: `UNKNOWN_TRAINING_STATE`); None otherwise.
    service_state: str | None = None
    base_model: str | None = None
    task_id: str | None = None
    model_id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    metrics: tuple[MetricPoint, ...] = ()
    message: str | None = None
    failure_message: str | None = None
    #: Validation scores, one per validated epoch (local backend; empty elsewhere).
    validation: tuple[ValidationPoint, ...] = ()
    #: The epoch (from 0) whose soft prompt was kept, when the run validated.
    best_epoch: int | None = None
    #: Why training ended: every epoch done, or early stopping (local backend).
    stop_reason: str | None = None
    #: The training- and validation-data references the run was started with.
    data_refs: tuple[str, ...] = ()
    #: The checkpoints kept on disk, oldest first (local backend; empty elsewhere).
    checkpoints: tuple[CheckpointInfo, ...] = ()

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES


def epoch_groups(points: Sequence[MetricPoint]) -> list[tuple[int, list[MetricPoint]]]:
    """Consecutive points with the same epoch, in order (points without a loss are skipped)."""
    groups: list[tuple[int, list[MetricPoint]]] = []
    for point in points:
        if point.loss is None or point.epoch is None:
            continue
        if groups and groups[-1][0] == point.epoch:
            groups[-1][1].append(point)
        else:
            groups.append((point.epoch, [point]))
    return groups


def loss_per_epoch(points: Sequence[MetricPoint]) -> list[float]:
    """Mean loss of each epoch, as IBM's SDK computes it for `summary()` and its plots."""
    return [fmean(p.loss for p in group if p.loss is not None) for _, group in epoch_groups(points)]


class TuningResult(BaseModel):
    """Everything known about a finished (or last seen) tuning run. Round-trips through JSON."""

    model_config = ConfigDict(defer_build=True, frozen=True)

    run_id: str
    name: str | None = None
    backend: Literal["watsonx", "local"]
    state: TrainingState
    model_id: str | None = None
    base_model: str | None = None
    task_id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    data_ref: str | None = Field(default=None, description="The uploaded training data's id.")
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    metrics: tuple[MetricPoint, ...] = ()
    failure_message: str | None = None
    warnings: tuple[str, ...] = ()
    validation: tuple[ValidationPoint, ...] = ()
    best_epoch: int | None = Field(
        default=None, description="The epoch (from 0) whose soft prompt was kept and deployed."
    )
    stop_reason: str | None = Field(
        default=None, description="Why training ended: all epochs done, or early stopping."
    )
    checkpoints: tuple[CheckpointInfo, ...] = Field(
        default=(),
        description="The checkpoints kept (local backend), oldest first; any can be deployed.",
    )

    @classmethod
    def from_run(
        cls,
        run: TuningRun,
        *,
        backend: Literal["watsonx", "local"],
        data_ref: str | None = None,
        warnings: Sequence[str] = (),
    ) -> TuningResult:
        return cls(
            run_id=run.id,
            name=run.name,
            backend=backend,
            state=run.state,
            model_id=run.model_id,
            base_model=run.base_model,
            task_id=run.task_id,
            parameters=run.parameters,
            data_ref=data_ref,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            metrics=run.metrics,
            failure_message=run.failure_message,
            warnings=tuple(warnings),
            validation=run.validation,
            best_epoch=run.best_epoch,
            stop_reason=run.stop_reason,
            checkpoints=run.checkpoints,
        )

    @property
    def succeeded(self) -> bool:
        return self.state == "completed"

    @property
    def loss_per_epoch(self) -> list[float]:
        """Mean loss of each epoch, in order."""
        return loss_per_epoch(self.metrics)

    @property
    def epochs_completed(self) -> int:
        """Epochs known to be whole: every logged one of a completed run; of any other run,
        the last logged epoch may have stopped part-way and is not counted."""
        logged = len(epoch_groups(self.metrics))
        return logged if self.succeeded else max(logged - 1, 0)

    @property
    def validation_loss_per_epoch(self) -> list[float]:
        """Validation loss after each epoch, in order (empty without validation)."""
        return [point.loss for point in self.validation]

    @property
    def validation_accuracy_per_epoch(self) -> list[float | None]:
        """Validation accuracy after each epoch (None where not measured, e.g. free text)."""
        return [point.accuracy for point in self.validation]

    def checkpoint(self, step: int | None = None) -> CheckpointInfo:
        """The kept checkpoint at `step`; by default the best one when the run validated, else
        the last. `LookupError` saying which are kept when there is no such checkpoint."""
        if not self.checkpoints:
            raise LookupError(f"Tuning run {self.run_id} kept no checkpoints.")
        if step is None:
            best = [c for c in self.checkpoints if c.best]
            return best[-1] if best else self.checkpoints[-1]
        for kept in self.checkpoints:
            if kept.step == step:
                return kept
        steps = ", ".join(str(c.step) for c in self.checkpoints)
        raise LookupError(
            f"Tuning run {self.run_id} has no checkpoint at step {step}; kept: {steps}."
        )

    @property
    def final_loss(self) -> float | None:
        """Mean loss of the last epoch: the `loss` column of IBM's `summary()`."""
        losses = self.loss_per_epoch
        return losses[-1] if losses else None

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from start (or creation) to finish, when both are known."""
        start = self.started_at or self.created_at
        if start is None or self.finished_at is None:
            return None
        return (self.finished_at - start).total_seconds()

    @overload
    def plot_learning_curve(self, path: None = None) -> Figure: ...
    @overload
    def plot_learning_curve(self, path: str | Path) -> Path: ...

    def plot_learning_curve(self, path: str | Path | None = None) -> Figure | Path:
        """The loss per epoch (and validation figures) and the loss over time.

        With `path`, writes a PNG there and returns the path (works outside Jupyter). Without,
        returns the matplotlib `Figure`, which a notebook shows inline.
        """
        from granite_tuner._plotting import learning_curve_figure, save_learning_curve

        if path is None:
            return learning_curve_figure(self)
        return save_learning_curve(self, Path(path))

    def __repr__(self) -> str:
        loss = "None" if self.final_loss is None else f"{self.final_loss:.4f}"
        return (
            f"TuningResult(run_id={self.run_id!r}, state={self.state!r}, "
            f"base_model={self.base_model!r}, epochs={self.epochs_completed}, final_loss={loss})"
        )

    def __str__(self) -> str:
        return repr(self)

    def _repr_html_(self) -> str:
        """A table of the figures that matter, for Jupyter (every value escaped)."""
        losses = self.loss_per_epoch
        accuracies = self.validation_accuracy_per_epoch
        duration = self.duration_seconds
        rows: list[tuple[str, object]] = [
            ("run id", self.run_id),
            ("name", self.name),
            ("state", self.state),
            ("backend", self.backend),
            ("base model", self.base_model),
            ("tuned model id", self.model_id),
            ("epochs done", self.epochs_completed if losses else None),
            ("final loss", None if self.final_loss is None else f"{self.final_loss:.4f}"),
            ("loss per epoch", " → ".join(f"{x:.3f}" for x in losses) if losses else None),
            (
                "validation loss",
                " → ".join(f"{x:.3f}" for x in self.validation_loss_per_epoch) or None,
            ),
            (
                "validation accuracy",
                " → ".join("-" if a is None else f"{a:.3f}" for a in accuracies)
                if any(a is not None for a in accuracies)
                else None,
            ),
            ("kept epoch", None if self.best_epoch is None else self.best_epoch + 1),
            ("stopped", self.stop_reason),
            ("duration", None if duration is None else f"{duration:.0f} s"),
            ("failure", self.failure_message),
        ]
        parts = [_html.fields(rows), *(f"warning: {w}" for w in self.warnings)]
        return str(_html.block(f"Tuning run {self.name or self.run_id}", *parts))
