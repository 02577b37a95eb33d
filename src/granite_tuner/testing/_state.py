"""What the fake remembers: its objects, their state machines, and the request log.

All mutable state lives in one `Store` guarded by one ``threading.Lock``: the app runs
on the server's event-loop thread while tests read ``fake.trainings`` & co. from theirs. The
lock is never held across an ``await``. Tests get deep copies (snapshots), never live records.

The records are plain dataclasses; each has a ``wire()`` method giving the JSON the service
returns for it (protocol §5, §7, §8), so what a test inspects is what a client would receive.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from granite_tuner.backends.base import DeploymentState
from granite_tuner.runs import TrainingState

from ._ratelimit import ServiceLimit


def iso(timestamp: float) -> str:
    """An epoch time as watsonx writes timestamps: ``2024-01-01T12:00:00.123456Z`` (UTC)."""
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Container:
    """The project or space an object belongs to (protocol §2 "scoping")."""

    kind: Literal["project", "space"]
    id: str

    @property
    def key(self) -> str:
        return f"{self.kind}_id"

    def as_json(self) -> dict[str, str]:
        return {self.key: self.id}


# --- the request log -------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it, with what became of it.

    ``status`` is None when no response was sent (a dropped connection); ``fault`` names the
    fault action that hit the request, if any. ``received_at`` and ``answered_at`` (when its
    answer was ready to send; None before that and for a dropped connection) are
    ``time.monotonic()`` readings.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int | None
    fault: str | None
    received_at: float
    answered_at: float | None = None

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class GenerationCall:
    """A text-generation request, as given to ``FakeWatsonx(answer=...)``.

    ``model_id`` is the model named by a base-model request (None for a deployment);
    ``deployment_id`` is the deployment's id (also when the request used its serving name).
    """

    input: str
    model_id: str | None
    deployment_id: str | None
    parameters: dict[str, Any]


# --- data assets -----------------------------------------------------------------------------


@dataclass
class AttachmentRecord:
    """An attachment of a data asset; ``data`` is None until the bytes are uploaded."""

    id: str
    name: str
    mime: str
    signature: str
    created_at: float
    data: bytes | None = None
    completed: bool = False


@dataclass
class AssetRecord:
    """A data asset; it exists from its create call on, even if its upload never completes."""

    id: str
    name: str
    description: str
    mime_type: str
    container: Container
    created_at: float
    modified_at: float
    attachments: list[AttachmentRecord] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        """Whether an attachment was uploaded and completed (the asset can be trained on)."""
        return any(attachment.completed for attachment in self.attachments)

    @property
    def data(self) -> bytes | None:
        """The bytes of the first completed attachment."""
        for attachment in self.attachments:
            if attachment.completed:
                return attachment.data
        return None

    def href(self) -> str:
        return f"/v2/assets/{self.id}?{self.container.key}={self.container.id}"

    def wire(self) -> dict[str, Any]:
        size = sum(len(a.data or b"") for a in self.attachments)
        return {
            "metadata": {
                **self.container.as_json(),
                "usage": {
                    "last_updated_at": iso(self.modified_at),
                    "last_updater_id": "IBMid-fake0000",
                    "last_access_time": iso(self.modified_at),
                    "last_accessor_id": "IBMid-fake0000",
                    "access_count": 0,
                },
                "rov": {"mode": 0, "collaborator_ids": {}},
                "name": self.name,
                "description": self.description,
                "asset_type": "data_asset",
                "origin_country": "us",
                "resource_key": self.name,
                "rating": 0.0,
                "total_ratings": 0,
                "catalog_id": None,
                "created": int(self.created_at * 1000),
                "created_at": iso(self.created_at),
                "owner_id": "IBMid-fake0000",
                "size": size,
                "version": 2.0,
                "asset_state": "available",
                "asset_attributes": ["data_asset"],
                "asset_id": self.id,
                "asset_category": "USER",
                "creator_id": "IBMid-fake0000",
            },
            "entity": {"data_asset": {"mime_type": self.mime_type}},
            "attachments": [
                {
                    "id": attachment.id,
                    "version": 2,
                    "asset_type": "data_asset",
                    "name": attachment.name,
                    "mime": attachment.mime,
                    "is_partitioned": False,
                    "complete": attachment.completed,
                    "size": len(attachment.data or b""),
                    "created_at": iso(attachment.created_at),
                    "object_key": f"data_asset/{attachment.name}",
                    "is_remote": False,
                    "is_managed": True,
                    "is_referenced": False,
                    "is_object_key_read_only": False,
                    "is_user_provided_path_key": True,
                    "transfer_complete": attachment.completed,
                }
                for attachment in self.attachments
            ],
            "href": self.href(),
        }


# --- trainings -------------------------------------------------------------------------------


@dataclass
class TrainingRecord:
    """A prompt-tuning training and its state machine (protocol §7).

    ``queued`` at creation; each status GET counts as a poll; polls before the last one show
    ``running`` with a growing part of ``all_metrics``; the last one moves it to its outcome.
    ``DELETE`` without ``hard_delete`` cancels a queued or running training.
    """

    id: str
    name: str
    description: str
    tags: list[str]
    container: Container
    created_at: float
    body: dict[str, Any]
    prompt_tuning: dict[str, Any]
    all_metrics: list[dict[str, Any]]
    state: TrainingState = "queued"
    polls: int = 0
    visible_metrics: int = 0
    modified_at: float = 0.0
    running_at: float | None = None
    completed_at: float | None = None
    model_id: str | None = None
    failure: dict[str, Any] | None = None
    message: str = "Prompt tuning is queued."

    @property
    def auto_update_model(self) -> bool:
        return bool(self.body.get("auto_update_model", False))

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "failed", "canceled")

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The metrics entries revealed so far (``entity.status.metrics``)."""
        return self.all_metrics[: self.visible_metrics]

    def start_running(self, now: float) -> None:
        if self.running_at is None:
            self.running_at = now
        self.state = "running"

    def wire(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "state": self.state,
            "message": {
                "level": "info" if self.state != "failed" else "error",
                "text": self.message,
            },
        }
        if self.running_at is not None:
            status["running_at"] = iso(self.running_at)
        if self.completed_at is not None:
            status["completed_at"] = iso(self.completed_at)
        if self.metrics:
            status["metrics"] = self.metrics
        if self.failure is not None:
            status["failure"] = self.failure
        results_reference = copy.deepcopy(self.body["results_reference"])
        if self.state == "completed":
            location = results_reference.setdefault("location", {})
            base = location.get("path", "default_tuning_output")
            location["training_status"] = f"{base}/{self.id}/training-status.json"
            location["training_log"] = f"{base}/{self.id}/training.log"
            location["model_request_path"] = f"{base}/{self.id}/assets/model_request.json"
        entity: dict[str, Any] = {
            "training_data_references": self.body["training_data_references"],
            "results_reference": results_reference,
            "prompt_tuning": self.prompt_tuning,
            "auto_update_model": self.auto_update_model,
            "description": self.description,
            "name": self.name,
            "tags": self.tags,
            **self.container.as_json(),
            "status": status,
        }
        if self.model_id is not None:
            entity["model_id"] = self.model_id
        return {
            "metadata": {
                "id": self.id,
                "name": self.name,
                "description": self.description,
                "tags": self.tags,
                "created_at": iso(self.created_at),
                "modified_at": iso(self.modified_at or self.created_at),
                **self.container.as_json(),
                "href": f"/ml/v4/trainings/{self.id}",
            },
            "entity": entity,
        }


# --- deployments -----------------------------------------------------------------------------


@dataclass
class DeploymentRecord:
    """An online deployment of a tuned model (protocol §8): ``initializing`` until its Nth GET."""

    id: str
    name: str
    description: str
    tags: list[str]
    container: Container
    created_at: float
    asset_id: str
    base_model_id: str
    serving_name: str | None
    base_url: str
    body: dict[str, Any]
    state: DeploymentState = "initializing"
    polls: int = 0
    modified_at: float = 0.0
    failure: dict[str, Any] | None = None

    def inference_urls(self) -> list[str]:
        urls = [f"{self.base_url}/ml/v1/deployments/{self.id}/text/generation"]
        if self.serving_name:
            urls.append(f"{self.base_url}/ml/v1/deployments/{self.serving_name}/text/generation")
        return urls

    def wire(self) -> dict[str, Any]:
        status: dict[str, Any] = {"state": self.state}
        if self.state == "ready":
            status["inference"] = [{"url": url} for url in self.inference_urls()]
            status["serving_urls"] = self.inference_urls()
        if self.failure is not None:
            status["failure"] = self.failure
        online: dict[str, Any] = {"parameters": {"serving_name": self.serving_name}}
        if not self.serving_name:
            online = {}
        return {
            "metadata": {
                "id": self.id,
                "name": self.name,
                "description": self.description,
                "tags": self.tags,
                "created_at": iso(self.created_at),
                "modified_at": iso(self.modified_at or self.created_at),
                **self.container.as_json(),
            },
            "entity": {
                "asset": {"id": self.asset_id},
                "base_model_id": self.base_model_id,
                "online": online,
                "deployed_asset_type": "prompt_tune",
                "name": self.name,
                "description": self.description,
                "tags": self.tags,
                **self.container.as_json(),
                "status": status,
            },
        }


# --- the store -------------------------------------------------------------------------------


class Store:
    """Every mutable thing the fake keeps, behind one lock.

    Handlers take ``store.lock`` for the few statements that read or change records; they do
    not ``await`` while holding it.
    """

    def __init__(self, seed: int) -> None:
        self.lock = threading.Lock()
        self.assets: dict[str, AssetRecord] = {}
        self.trainings: dict[str, TrainingRecord] = {}
        self.deployments: dict[str, DeploymentRecord] = {}
        self.requests: list[RecordedRequest] = []
        self.iam_exchanges = 0
        self.rate_limit = ServiceLimit()
        self._ids = random.Random(seed)  # noqa: S311 - seeded so test runs repeat

    def new_id(self) -> str:
        """A lowercase uuid4, drawn from the seeded RNG (call with the lock held)."""
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))
