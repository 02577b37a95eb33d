"""Resuming a local run: what is checked before anything changes, and how the record goes on.

`TrainingRunner.resume_tuning` holds the run's lock, then calls `prepare_resume` (in a worker
thread): every check that can refuse the resume runs before the run's record is touched, so a
refused resume changes nothing on disk. A checkpoint carries the run's loss and validation
history as of its step, so the resumed record starts from exactly that history: steps logged
after the checkpoint by the process that died are dropped (they are trained again), and steps
the dead process trained but never wrote to run.json are restored — no gaps, no repeats.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from granite_tuner.backends.local._checkpoints import (
    Checkpoint,
    latest_valid,
    list_checkpoints,
)
from granite_tuner.backends.local._store import Owner, RunRecord, RunStore
from granite_tuner.backends.local._training import TrainingConfig
from granite_tuner.errors import NoCheckpointError, ResumeMismatchError, RunFinishedError
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.runs import CheckpointInfo, MetricPoint, ValidationPoint, loss_per_epoch

__all__ = ["ResumePlan", "checkpoint_infos", "history_json", "prepare_resume"]


@dataclass(frozen=True)
class ResumePlan:
    """A checked resume: the record as the resumed run starts, and the trainer state."""

    record: RunRecord
    config: TrainingConfig
    checkpoint: Checkpoint
    state: dict[str, Any]


def history_json(record: RunRecord) -> str:
    """The record's loss and validation history, as a checkpoint stores it."""
    return json.dumps(
        {
            "metrics": [point.model_dump(mode="json") for point in record.metrics],
            "validation": [point.model_dump(mode="json") for point in record.validation],
        }
    )


def checkpoint_infos(store: RunStore, run_id: str, best_epoch: int | None) -> list[CheckpointInfo]:
    """The run's whole checkpoints as users see them, oldest first (manifests only)."""
    return [c.info(run_id, best_epoch) for c in list_checkpoints(store.run_dir(run_id))]


def prepare_resume(
    store: RunStore,
    run_id: str,
    *,
    base_model: str | None,
    parameters: PromptTuningParameters | None,
) -> ResumePlan:
    """Check that `run_id` can go on from its last whole checkpoint; raise a `ResumeError`
    saying why not otherwise. Writes nothing."""
    record = store.load(run_id)
    if record.state == "completed":
        raise RunFinishedError(
            f"Tuning run {run_id} completed ({record.message or 'all steps done'}); there is "
            "nothing to resume. Deploy it, or one of its checkpoints, or start a new run.",
            run_id=run_id,
        )
    config = TrainingConfig(**record.parameters)
    if base_model is not None and base_model != record.base_model:
        raise ResumeMismatchError(
            f"Tuning run {run_id} tunes {record.base_model!r}, not {base_model!r}; a run goes "
            "on with its own base model. Leave base_model out, or start a new run.",
            run_id=run_id,
        )
    if parameters is not None:
        _check_parameters(run_id, config, parameters)
    found = latest_valid(store.run_dir(run_id))
    if found is None:
        raise NoCheckpointError(
            f"Tuning run {run_id} has no whole checkpoint to resume from (it stopped before "
            "the end of its first epoch, or every checkpoint failed its checksum); start it "
            "again instead.",
            run_id=run_id,
        )
    checkpoint, state = found
    manifest = checkpoint.manifest
    if (
        manifest.parameters != record.parameters
        or manifest.base_model != record.base_model
        or manifest.data_ref != record.data_ref
        or manifest.validation_data_ref != record.validation_data_ref
    ):
        raise ResumeMismatchError(
            f"Checkpoint {checkpoint.folder} was written with other settings, base model or "
            f"data than tuning run {run_id} records (was the run folder edited or copied?); "
            "it is not used.",
            run_id=run_id,
        )
    for ref in (record.data_ref, record.validation_data_ref):
        if ref is not None and not store.has_data(ref):
            raise NoCheckpointError(
                f"The data {ref[:12]}… that tuning run {run_id} trains on is no longer stored "
                "(deleted?); the run cannot go on without it.",
                run_id=run_id,
            )
    return ResumePlan(_resumed(record, checkpoint, state), config, checkpoint, state)


def _check_parameters(
    run_id: str, config: TrainingConfig, parameters: PromptTuningParameters
) -> None:
    """`ResumeMismatchError` naming each setting that differs from the run's.

    Only what `parameters` set is compared: the rest is taken from the run, so a run recorded
    before a later default (its method, position or batch plan) resumes as it was.
    """
    asked = replace(
        TrainingConfig.from_parameters(
            parameters,
            seed=config.seed,
            precision=config.precision,
            selection_metric=config.selection_metric,
            early_stopping_patience=config.early_stopping_patience,
            validation_split=config.validation_split,
            soft_prompt_position=config.soft_prompt_position,
            peft_method=config.peft_method,
        ),
        label_mixed_batches=config.label_mixed_batches,
    ).to_dict()
    recorded = config.to_dict()
    differ = [f"{k}={asked[k]!r} (run: {recorded[k]!r})" for k in asked if asked[k] != recorded[k]]
    if differ:
        raise ResumeMismatchError(
            f"Tuning run {run_id} was started with other parameters: {', '.join(differ)}. A "
            "run goes on with its own settings: leave parameters out, or start a new run.",
            run_id=run_id,
        )


def _resumed(record: RunRecord, checkpoint: Checkpoint, state: dict[str, Any]) -> RunRecord:
    """The record as the resumed run starts: history from the checkpoint, owned by us."""
    history = json.loads(state["history"])
    metrics = [MetricPoint.model_validate(point) for point in history["metrics"]]
    step = checkpoint.manifest.step
    resumed = record.model_copy(
        update={
            "state": "queued",
            "owner": Owner.current(),
            "metrics": metrics,
            "epoch_losses": loss_per_epoch(metrics),
            "validation": [ValidationPoint.model_validate(p) for p in history["validation"]],
            "best_epoch": state["trainer"]["best_epoch"],
            "finished_at": None,
            "failure_message": None,
            "stop_reason": None,
            "message": f"resuming from the checkpoint at step {step}",
        },
        deep=True,
    )
    resumed._last_epoch_size = None  # the running mean of the last epoch is recounted
    return resumed
