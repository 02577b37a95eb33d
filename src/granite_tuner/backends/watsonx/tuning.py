"""The watsonx.ai side of the tuning seam: the part of `WatsonxClient` that tunes.

Maps the workflow's steps onto the REST resources — training data becomes a data asset
(re-used when an identical file was uploaded before), a run becomes a prompt-tuning
training — and the service's objects onto the package's own `TuningRun`. `WatsonxClient`
holds one `WatsonxTuning` and delegates its `TuningBackend` methods to it.
"""

from __future__ import annotations

import re
from typing import Any

from granite_tuner._secrets import get_logger
from granite_tuner.backends.base import BaseModelInfo
from granite_tuner.backends.watsonx.assets import Assets
from granite_tuner.backends.watsonx.foundation_models import FoundationModels
from granite_tuner.backends.watsonx.models import Training
from granite_tuner.backends.watsonx.trainings import Trainings
from granite_tuner.data import LabelledSet
from granite_tuner.errors import NotFoundError, RunNotFoundError
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.runs import MetricPoint, TuningRun, training_state
from granite_tuner.validation import ValidationOptions, check_backend_accepts

__all__ = ["DEFAULT_BASE_MODEL", "WatsonxTuning", "training_to_run"]

logger = get_logger("granite_tuner.watsonx")

_NOT_PARAMETERS = frozenset({"base_model", "task_id", "tuning_type"})
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")

#: The base model a `Tuner` on watsonx.ai uses when none is named: the Granite model IBM
#: documents for prompt tuning (protocol §10). Whether it can be tuned in your region now is
#: checked against the live list, like any other.
DEFAULT_BASE_MODEL = "ibm/granite-13b-instruct-v2"


def _data_refs(training: Training) -> tuple[str, ...]:
    """The data-asset ids a training was started with (its `training_data_references`)."""
    entity = training.raw.get("entity")
    references: Any = entity.get("training_data_references") if isinstance(entity, dict) else None
    ids: list[str] = []
    for reference in references if isinstance(references, list) else []:
        location = reference.get("location") if isinstance(reference, dict) else None
        asset_id = location.get("id") if isinstance(location, dict) else None
        if isinstance(asset_id, str) and asset_id:
            ids.append(asset_id)
    return tuple(ids)


def training_to_run(training: Training) -> TuningRun:
    """The package's view of a watsonx.ai training."""
    failure = "; ".join(str(e) for e in training.failure)
    finished_at = training.completed_at
    if finished_at is None and training.is_finished:
        finished_at = training.modified_at
    state, service_state = training_state(training.state)
    return TuningRun(
        id=training.id,
        name=training.name,
        state=state,
        service_state=service_state,
        base_model=training.base_model,
        task_id=training.task_id,
        model_id=training.model_id,
        parameters={k: v for k, v in training.prompt_tuning.items() if k not in _NOT_PARAMETERS},
        created_at=training.created_at,
        started_at=training.running_at,
        finished_at=finished_at,
        metrics=tuple(
            MetricPoint(iteration=m.iteration, epoch=m.epoch, loss=m.loss, timestamp=m.timestamp)
            for m in training.metrics
        ),
        message=training.message,
        failure_message=failure or None,
        data_refs=_data_refs(training),
    )


def _newest_first(runs: list[TuningRun]) -> list[TuningRun]:
    return sorted(
        runs, key=lambda r: r.created_at.timestamp() if r.created_at else 0.0, reverse=True
    )


class WatsonxTuning:
    """The `TuningBackend` operations on watsonx.ai, built on the REST resources it is given."""

    def __init__(
        self, *, assets: Assets, trainings: Trainings, foundation_models: FoundationModels
    ) -> None:
        self.assets = assets
        self.trainings = trainings
        self.foundation_models = foundation_models

    async def tunable_models(self) -> list[BaseModelInfo]:
        models = await self.foundation_models.list(prompt_tunable=True)
        return [
            BaseModelInfo(model_id=m.model_id, lifecycle_state=m.lifecycle_state, label=m.label)
            for m in models
        ]

    async def upload_training_data(self, data: LabelledSet, *, name: str) -> str:
        """Upload as JSONL. The asset is named by the content hash alone, so an identical set
        uploaded before (by this or any other run, whatever its name) is found and re-used."""
        asset_name = f"granite-tuner-data-{data.content_hash()[:32]}.jsonl"
        for existing in await self.assets.find_by_name(asset_name):
            if existing.attachments:
                logger.info("Re-using data asset %s (%s): same content", existing.id, asset_name)
                return existing.id
        asset = await self.assets.upload(
            data.to_jsonl(),
            name=asset_name,
            file_name=asset_name,
            description=f"Training data for {_UNSAFE_NAME_CHARACTERS.sub('-', name)[:60]}",
        )
        return asset.id

    async def delete_training_data(self, data_ref: str) -> None:
        await self.assets.delete(data_ref)

    async def start_tuning(
        self,
        *,
        name: str,
        base_model: str,
        data_ref: str,
        parameters: PromptTuningParameters,
        request_tag: str | None = None,
        validation: ValidationOptions | None = None,
    ) -> TuningRun:
        """Start a prompt-tuning training. watsonx.ai takes no validation data and has no
        early stopping, so a `validation` that asks for anything is an
        `UnsupportedFeatureError` (nothing is sent)."""
        if validation is not None:
            check_backend_accepts(
                "watsonx", False, validation, has_data=validation.data_ref is not None
            )
        if parameters.num_virtual_tokens is not None:
            logger.warning("watsonx.ai chooses the number of virtual tokens; ignoring %d",
                           parameters.num_virtual_tokens)  # fmt: skip
        training = await self.trainings.create(
            name=name,
            base_model=base_model,
            task_id=parameters.task_id,
            data_asset_id=data_ref,
            parameters=parameters.to_watsonx(),
            request_tag=request_tag,
        )
        return training_to_run(training)

    async def find_tuning_run_by_tag(self, request_tag: str) -> TuningRun | None:
        training = await self.trainings.find_by_tag(request_tag)
        return training_to_run(training) if training is not None else None

    async def get_tuning_run(self, run_id: str) -> TuningRun:
        try:
            training = await self.trainings.get(run_id)
        except NotFoundError as exc:
            raise RunNotFoundError(
                f"There is no tuning run {run_id!r} in this project or space."
            ) from exc
        return training_to_run(training)

    async def find_tuning_runs(self, name: str) -> list[TuningRun]:
        return _newest_first(
            [training_to_run(t) for t in await self.trainings.list() if t.name == name]
        )

    async def list_tuning_runs(self) -> list[TuningRun]:
        return _newest_first([training_to_run(t) for t in await self.trainings.list()])

    async def cancel_tuning_run(self, run_id: str) -> None:
        await self.trainings.cancel(run_id)

    async def delete_tuning_run(self, run_id: str) -> None:
        await self.trainings.delete(run_id)
