"""Typed views of the watsonx.ai objects the workflow reads.

The service wraps objects as `{"metadata": {...}, "entity": {...}}` and adds fields over
time. Each model here is flat, names things the way this project does, ignores fields it
does not know, and keeps the raw JSON in `raw` for anything else a caller needs. `from_wire`
is the only code that knows the wire layout.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from granite_tuner.backends.watsonx._responses import parse_error_item
from granite_tuner.errors import ServiceErrorDetail
from granite_tuner.generation import GenerationResult

__all__ = [
    "TERMINAL_TRAINING_STATES",
    "DataAsset",
    "Deployment",
    "FoundationModel",
    "GenerationResult",
    "LifecycleStage",
    "Training",
    "TrainingMetric",
    "generation_result_from_wire",
]

#: Training states after which nothing changes any more (§7.2; `error` is legacy).
TERMINAL_TRAINING_STATES = frozenset({"completed", "failed", "canceled", "error"})


class _WireModel(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore", frozen=True)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _failure(value: Any) -> tuple[tuple[ServiceErrorDetail, ...], str | None]:
    """Read a `failure` object: the error body of §2, or a bare list of errors."""
    failure = _dict(value)
    details = tuple(
        d for d in (parse_error_item(e) for e in _list(failure.get("errors"))) if d is not None
    )
    trace = failure.get("trace")
    return details, trace if isinstance(trace, str) else None


class AssetAttachment(_WireModel):
    id: str
    name: str | None = None
    mime: str | None = None


class DataAsset(_WireModel):
    """A data asset in a project or space (the uploaded training file)."""

    id: str
    name: str
    asset_type: str = "data_asset"
    description: str | None = None
    created_at: datetime | None = None
    attachments: tuple[AssetAttachment, ...] = ()
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def href(self) -> str:
        """The reference a training uses for its data (`/v2/assets/<id>`)."""
        return f"/v2/assets/{self.id}"

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> DataAsset:
        metadata = _dict(body.get("metadata"))
        attachments = [
            {
                "id": a.get("id") or a.get("attachment_id"),
                "name": a.get("name"),
                "mime": a.get("mime"),
            }
            for a in _list(body.get("attachments"))
            if isinstance(a, dict)
        ]
        return cls.model_validate(
            {
                "id": metadata.get("asset_id") or metadata.get("guid"),
                "name": metadata.get("name"),
                "asset_type": metadata.get("asset_type", "data_asset"),
                "description": metadata.get("description"),
                "created_at": metadata.get("created_at"),
                "attachments": attachments,
                "raw": body,
            }
        )


class TrainingMetric(_WireModel):
    """One logged training iteration (format (a) inline or (b) from a metrics file, §7.3)."""

    iteration: int | None = None
    epoch: int | None = None
    loss: float | None = None
    timestamp: datetime | None = None

    @classmethod
    def from_wire(cls, entry: dict[str, Any]) -> TrainingMetric:
        values = _dict(entry.get("ml_metrics")) or _dict(entry.get("data"))
        loss = values.get("loss", values.get("value"))
        return cls.model_validate(
            {
                "iteration": entry.get("iteration", values.get("iteration")),
                "epoch": values.get("epoch"),
                "loss": loss,
                "timestamp": entry.get("timestamp") or values.get("timestamp"),
            }
        )


class Training(_WireModel):
    """A prompt-tuning training run as the service reports it."""

    id: str
    name: str | None = None
    state: str
    tags: tuple[str, ...] = ()
    base_model: str | None = None
    task_id: str | None = None
    prompt_tuning: dict[str, Any] = Field(default_factory=dict)
    model_id: str | None = None
    auto_update_model: bool | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None
    running_at: datetime | None = None
    completed_at: datetime | None = None
    message: str | None = None
    metrics: tuple[TrainingMetric, ...] = ()
    failure: tuple[ServiceErrorDetail, ...] = ()
    failure_trace: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def is_finished(self) -> bool:
        return self.state in TERMINAL_TRAINING_STATES

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Training:
        metadata = _dict(body.get("metadata"))
        entity = _dict(body.get("entity"))
        status = _dict(entity.get("status"))
        tuning = _dict(entity.get("prompt_tuning"))
        base = _dict(tuning.get("base_model"))
        failure, trace = _failure(status.get("failure"))
        message = _dict(status.get("message")).get("text")
        return cls.model_validate(
            {
                "id": metadata.get("id") or metadata.get("guid"),
                "name": metadata.get("name"),
                "state": status.get("state"),
                "tags": [t for t in _list(metadata.get("tags")) if isinstance(t, str)],
                "base_model": base.get("model_id") or base.get("name"),
                "task_id": tuning.get("task_id"),
                "prompt_tuning": tuning,
                "model_id": entity.get("model_id"),
                "auto_update_model": entity.get("auto_update_model"),
                "created_at": metadata.get("created_at"),
                "modified_at": metadata.get("modified_at"),
                "running_at": status.get("running_at"),
                "completed_at": status.get("completed_at"),
                "message": message if isinstance(message, str) else None,
                "metrics": [
                    TrainingMetric.from_wire(m)
                    for m in _list(status.get("metrics"))
                    if isinstance(m, dict)
                ],
                "failure": failure,
                "failure_trace": trace,
                "raw": body,
            }
        )


class Deployment(_WireModel):
    """An online deployment (of a tuned model)."""

    id: str
    name: str | None = None
    state: str
    serving_name: str | None = None
    asset_id: str | None = None
    base_model_id: str | None = None
    tags: tuple[str, ...] = ()
    inference_urls: tuple[str, ...] = ()
    created_at: datetime | None = None
    failure: tuple[ServiceErrorDetail, ...] = ()
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def is_ready(self) -> bool:
        return self.state in ("ready", "DEPLOY_SUCCESS")

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Deployment:
        metadata = _dict(body.get("metadata"))
        entity = _dict(body.get("entity"))
        status = _dict(entity.get("status"))
        online = _dict(_dict(entity.get("online")).get("parameters"))
        urls = [u.get("url") for u in _list(status.get("inference")) if isinstance(u, dict)]
        urls += [u for u in _list(status.get("serving_urls")) if isinstance(u, str)]
        failure, _ = _failure(status.get("failure"))
        return cls.model_validate(
            {
                "id": metadata.get("id"),
                "name": metadata.get("name"),
                "state": status.get("state"),
                "serving_name": online.get("serving_name"),
                "asset_id": _dict(entity.get("asset")).get("id"),
                "base_model_id": entity.get("base_model_id"),
                "tags": [t for t in _list(metadata.get("tags")) if isinstance(t, str)],
                "inference_urls": [u for u in urls if isinstance(u, str)],
                "created_at": metadata.get("created_at"),
                "failure": failure,
                "raw": body,
            }
        )


def _parse_date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


class LifecycleStage(_WireModel):
    id: str
    start_date: str | None = None
    alternative_model_ids: tuple[str, ...] = ()


class FoundationModel(_WireModel):
    """A foundation model the service offers (from `/ml/v1/foundation_model_specs`)."""

    model_id: str
    label: str | None = None
    provider: str | None = None
    functions: tuple[str, ...] = ()
    lifecycle: tuple[LifecycleStage, ...] = ()

    @property
    def prompt_tunable(self) -> bool:
        return "prompt_tune_trainable" in self.functions

    @property
    def lifecycle_state(self) -> str:
        """The latest lifecycle stage that has started (`available`, `deprecated`, ...)."""
        today = datetime.now(UTC).date()
        state = "available"
        for stage in self.lifecycle:
            started = _parse_date(stage.start_date)
            if started is None or started <= today:
                state = stage.id
        return state

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> FoundationModel:
        return cls.model_validate(
            {
                "model_id": body.get("model_id"),
                "label": body.get("label"),
                "provider": body.get("provider"),
                "functions": [
                    f.get("id") for f in _list(body.get("functions")) if isinstance(f, dict)
                ],
                "lifecycle": [s for s in _list(body.get("lifecycle")) if isinstance(s, dict)],
            }
        )


def generation_result_from_wire(body: dict[str, Any]) -> GenerationResult:
    """The first result of a text-generation answer (§9.2)."""
    results = _list(body.get("results"))
    if not results or not isinstance(results[0], dict):
        raise ValueError("no results[0] in the generation answer")
    first = results[0]
    return GenerationResult.model_validate(
        {
            "text": first.get("generated_text"),
            "generated_token_count": first.get("generated_token_count"),
            "input_token_count": first.get("input_token_count"),
            "stop_reason": first.get("stop_reason"),
            "seed": first.get("seed"),
            "model_id": body.get("model_id"),
        }
    )
