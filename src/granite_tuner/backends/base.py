"""The seam between the workflow and an engine: what `Tuner` and `Deployment` need.

`Tuner`, `Deployment`, `Evaluator` and the CLI speak only to these Protocols: they name every
operation those need, so nothing outside a backend casts to a concrete client. A backend speaks
only to its service or engine, and what crosses the seam is this package's own models
(`LabelledSet`, `PromptTuningParameters`, `TuningRun`, `DeploymentInfo`), never wire JSON.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from pydantic import BaseModel, ConfigDict

from granite_tuner.data import LabelledSet
from granite_tuner.errors import ConfigurationError
from granite_tuner.generation import GenerationParameters, GenerationResult
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.runs import CheckpointInfo, TuningRun
from granite_tuner.validation import ValidationOptions

__all__ = [
    "FAILED_STATES",
    "ID_PATTERN",
    "MAX_RUN_NAME_LENGTH",
    "READY_STATES",
    "REQUEST_TAG_PREFIX",
    "SERVING_NAME_PATTERN",
    "UNKNOWN_DEPLOYMENT_STATE",
    "Backend",
    "BaseModelInfo",
    "DeploymentInfo",
    "DeploymentState",
    "ServingBackend",
    "SoftPromptSource",
    "TuningBackend",
    "check_id",
    "check_request_tag",
    "check_run_name",
    "check_serving_name",
    "deployment_state",
    "new_request_tag",
]


#: What a service id looks like (watsonx.ai's are UUIDs, the local backend's too). Anything
#: else (a `/`, `..`, spaces, `?`) could make a request hit another resource than the one
#: named, so it is refused before anything is sent.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def check_id(value: object, what: str = "id") -> str:
    """`value` if it has the shape of a service id, else a `ConfigurationError` (nothing sent)."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or ".." in value:
        shown = value if isinstance(value, str) else type(value).__name__
        raise ConfigurationError(
            f"{what}={shown!r} is not a valid id: ids are 1 to 128 letters, digits, "
            "'-', '_', '.' or ':' (such as a UUID). Check the id you passed."
        )
    return value


#: Every create carries a tag `granite-tuner.request.<32 hex>`; when its answer is lost, the
#: object is looked up by that tag instead of being created a second time.
REQUEST_TAG_PREFIX = "granite-tuner.request."
_REQUEST_TAG = re.compile(r"^granite-tuner\.request\.[0-9a-f]{32}$")


def new_request_tag() -> str:
    """A fresh request tag for one create (kept across the caller's own retries)."""
    return REQUEST_TAG_PREFIX + uuid.uuid4().hex


def check_request_tag(tag: object) -> str:
    """`tag` if it has the shape `new_request_tag` gives, else a `ConfigurationError`."""
    if not isinstance(tag, str) or not _REQUEST_TAG.fullmatch(tag):
        raise ConfigurationError(
            f"request tag {tag!r} is not valid: use the tag from error.request_tag or "
            "new_request_tag() (`granite-tuner.request.` and 32 hex digits)."
        )
    return tag


class BaseModelInfo(BaseModel):
    """A model that can be prompt-tuned, and where it is in its lifecycle."""

    model_config = ConfigDict(defer_build=True, frozen=True)

    model_id: str
    lifecycle_state: str = "available"
    label: str | None = None


@runtime_checkable
class TuningBackend(Protocol):
    """Uploads training data and runs prompt tuning."""

    @property
    def backend_name(self) -> Literal["watsonx", "local"]: ...

    @property
    def default_base_model(self) -> str:
        """The base model to tune when the caller names none."""
        ...

    @property
    def supports_validation(self) -> bool:
        """Whether `start_tuning` can use `validation=` (checked before anything is uploaded)."""
        ...

    @property
    def supports_checkpoints(self) -> bool:
        """Whether runs keep checkpoints that `list_checkpoints` lists and `resume_tuning`
        goes on from (where false, both raise `UnsupportedFeatureError`)."""
        ...

    async def tunable_models(self) -> list[BaseModelInfo]:
        """The base models that can be prompt-tuned here now."""
        ...

    async def upload_training_data(self, data: LabelledSet, *, name: str) -> str:
        """Store the training set; returns the reference a run is started with."""
        ...

    async def delete_training_data(self, data_ref: str) -> None: ...

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
        """Start one run, findable by `request_tag` (generated when not given). Must never
        start two, even when an answer is lost and retried. `validation` (held-out data, early
        stopping) raises `UnsupportedFeatureError` where `supports_validation` is false."""
        ...

    async def find_tuning_run_by_tag(self, request_tag: str) -> TuningRun | None:
        """The run a create with this request tag started, or None if none did."""
        ...

    async def get_tuning_run(self, run_id: str) -> TuningRun:
        """The run's current state; `RunNotFoundError` when there is no such run."""
        ...

    async def find_tuning_runs(self, name: str) -> list[TuningRun]:
        """Runs with exactly this name, newest first."""
        ...

    async def list_tuning_runs(self) -> list[TuningRun]:
        """Every run this backend can see, newest first."""
        ...

    async def cancel_tuning_run(self, run_id: str) -> None: ...

    async def delete_tuning_run(self, run_id: str) -> None: ...

    async def list_checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        """The run's kept checkpoints, oldest first; each one's `model_id` deploys it."""
        ...

    async def resume_tuning(
        self,
        run_id: str,
        *,
        base_model: str | None = None,
        parameters: PromptTuningParameters | None = None,
    ) -> TuningRun:
        """Go on with a stopped run from its last whole checkpoint. `base_model` and
        `parameters`, when given, must be the run's own (else `ResumeMismatchError`); a
        completed run gives `RunFinishedError`, one trained elsewhere `RunInUseError`."""
        ...


DeploymentState = Literal["initializing", "ready", "failed"]
"""Where a deployment is, on either backend: `initializing` -> `ready`, or `failed`.

watsonx.ai's legacy `DEPLOY_*` names (protocol §8) are read as these.
"""
#: What a state this version does not know becomes: not ready yet, so a caller waits on.
UNKNOWN_DEPLOYMENT_STATE: DeploymentState = "initializing"
_LEGACY_DEPLOYMENT_STATES: dict[str, DeploymentState] = {
    "DEPLOY_IN_PROGRESS": "initializing",
    "DEPLOY_SUCCESS": "ready",
    "DEPLOY_FAILED": "failed",
}


def deployment_state(value: object) -> tuple[DeploymentState, str | None]:
    """A service's state as `(state, service_state)`: a known (or legacy) state as the state it
    means (and None), anything else as `UNKNOWN_DEPLOYMENT_STATE` with the value kept."""
    for known in get_args(DeploymentState):
        if value == known:
            return known, None
    if isinstance(value, str) and value in _LEGACY_DEPLOYMENT_STATES:
        return _LEGACY_DEPLOYMENT_STATES[value], None
    return UNKNOWN_DEPLOYMENT_STATE, str(value)


class DeploymentInfo(BaseModel):
    """A backend's snapshot of one deployment."""

    model_config = ConfigDict(defer_build=True, frozen=True)

    id: str
    name: str | None = None
    state: DeploymentState
    #: The state as the service sent it, when this version does not know it (`state` is then
    #: `UNKNOWN_DEPLOYMENT_STATE`); None otherwise.
    service_state: str | None = None
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


#: Longest run name watsonx.ai stores (it cuts longer ones; both backends refuse them instead, so
#: that a run is always found again by the name it was given).
MAX_RUN_NAME_LENGTH = 100
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def check_run_name(name: object) -> str:
    """`name` if a service can store it as given, else a `ConfigurationError` that says why."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(
            f"name={name!r} is not a usable run name: give a non-empty string, or leave it out "
            "to get a generated one."
        )
    if len(name) > MAX_RUN_NAME_LENGTH:
        raise ConfigurationError(
            f"name is {len(name)} characters long; a run name has at most {MAX_RUN_NAME_LENGTH} "
            "(watsonx.ai would cut it, and the run could not be found again by its name)."
        )
    if _CONTROL_CHARACTERS.search(name) or name != name.strip():
        raise ConfigurationError(
            f"name={name!r} has control characters (such as a line break) or leading or "
            "trailing spaces; the service refuses such names. Use printable characters."
        )
    return name


#: Deployment states that mean "serving" and "will not serve".
READY_STATES: frozenset[DeploymentState] = frozenset({"ready"})
FAILED_STATES: frozenset[DeploymentState] = frozenset({"failed"})


@runtime_checkable
class ServingBackend(Protocol):
    """Deploys tuned models and generates text with them or with base models."""

    @property
    def backend_name(self) -> Literal["watsonx", "local"]: ...

    async def deploy(
        self, model_id: str, *, name: str, serving_name: str | None, request_tag: str | None = None
    ) -> DeploymentInfo:
        """Start serving a tuned model, findable by `request_tag` (generated when not given).
        Must never create two, even when retried."""
        ...

    async def find_deployment_by_tag(self, request_tag: str) -> DeploymentInfo | None:
        """The deployment a create with this request tag made, or None if none did."""
        ...

    async def get_deployment(self, deployment_id: str) -> DeploymentInfo:
        """The deployment's current state; `DeploymentNotFoundError` when there is none."""
        ...

    async def list_deployments(self) -> list[DeploymentInfo]:
        """Every deployment this backend can see, newest first."""
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


@runtime_checkable
class SoftPromptSource(Protocol):
    """An optional capability: a backend that hands out a tuned soft prompt's weights.

    The local backend does (experiment trackers keep it as an artifact); watsonx.ai keeps its
    tuned prompts to itself, so `WatsonxClient` does not have this method.
    """

    async def soft_prompt(self, run_id: str) -> bytes | None:
        """The run's kept soft prompt as a safetensors file's bytes; None before there is one."""
        ...


@runtime_checkable
class Backend(TuningBackend, ServingBackend, Protocol):
    """Both seams at once, as `WatsonxClient` and `LocalClient` provide them (what the CLI
    and code that works with either client take)."""
