"""Prompt-tuning trainings (protocol §7): validation, the polled state machine, metrics.

A training is ``queued`` when created. Each ``GET /ml/v4/trainings/{id}`` is one poll: polls
before the ``fake.training_polls``-th show ``running`` and reveal a growing share of the loss
metrics; that poll moves it to ``fake.training_outcome``. Listing does not count as a poll.

Losses are deterministic (seeded by ``fake.seed`` and the training id) and the mean loss of
each epoch is lower than the one before. Epochs are numbered from 0, as the official SDK's
``summary()`` expects (it groups ``status.metrics`` by consecutive epoch starting at 0).
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from ._catalog import paginate
from ._http import ApiError, Request, Response, new_trace_id
from ._models import TASKS
from ._platform import container_from_body, container_from_query
from ._state import Container, TrainingRecord, iso

if TYPE_CHECKING:
    from ._view import FakeView

# field: (type, low, high, server default) -- the ranges of protocol §7.1
NUMERIC_PARAMETERS: dict[str, tuple[type, float, float, float]] = {
    "num_epochs": (int, 1, 50, 20),
    "learning_rate": (float, 0.01, 0.5, 0.3),
    "batch_size": (int, 1, 16, 16),
    "accumulate_steps": (int, 1, 128, 16),
    "max_input_tokens": (int, 1, 256, 256),
    "max_output_tokens": (int, 1, 128, 128),
}
TEXT_PARAMETERS = {"base_model", "task_id", "tuning_type", "init_method", "init_text", "verbalizer"}
DEFAULT_VERBALIZER = "Input: {{input}} Output:"
DEFAULT_RESULTS_REFERENCE = {"type": "container", "location": {"path": "default_tuning_output"}}


def _bad(field: str, message: str) -> ApiError:
    return ApiError(
        400, f"Invalid value for 'prompt_tuning.{field}': {message}", "invalid_parameter"
    )


def _check_prompt_tuning(fake: FakeView, given: Any) -> dict[str, Any]:
    """Validate ``prompt_tuning`` and return it with the server defaults filled in."""
    if not isinstance(given, dict):
        raise ApiError(400, "Field 'prompt_tuning' is required and must be an object.")
    unknown = sorted(set(given) - set(NUMERIC_PARAMETERS) - TEXT_PARAMETERS)
    if unknown:
        raise ApiError(400, f"Unknown field(s) in 'prompt_tuning': {', '.join(unknown)}.")
    filled: dict[str, Any] = {}

    base_model = given.get("base_model")
    model_id = base_model.get("model_id") if isinstance(base_model, dict) else None
    if not isinstance(model_id, str) or not model_id:
        raise _bad("base_model.model_id", "a base model id is required.")
    model = fake.model(model_id)
    if model is None or not model.tunable or model.withdrawn:
        tunable = sorted(m.model_id for m in fake.models if m.tunable and not m.withdrawn)
        raise ApiError(
            400,
            f"Model '{model_id}' is not supported for prompt tuning. "
            f"Supported models: {', '.join(tunable)}.",
            "model_not_supported",
        )
    filled["base_model"] = {"model_id": model_id}

    task_id = given.get("task_id")
    if task_id not in TASKS:
        raise _bad("task_id", f"{task_id!r} is not one of {', '.join(TASKS)}.")
    filled["task_id"] = task_id

    tuning_type = given.get("tuning_type", "prompt_tuning")
    if tuning_type != "prompt_tuning":
        raise _bad("tuning_type", f"{tuning_type!r} is not 'prompt_tuning'.")
    filled["tuning_type"] = tuning_type

    for field, (kind, low, high, default) in NUMERIC_PARAMETERS.items():
        value = given.get(field, default)
        wrong_type = isinstance(value, bool) or not isinstance(value, (int, float))
        if kind is int and not isinstance(value, int):
            wrong_type = True
        if wrong_type:
            raise _bad(field, f"expected {kind.__name__}, got {value!r}.")
        if not low <= value <= high:
            raise _bad(field, f"{value!r} is outside the allowed range [{low:g}, {high:g}].")
        filled[field] = value

    init_method = given.get("init_method", "random")
    if init_method not in ("random", "text"):
        raise _bad("init_method", f"{init_method!r} is not 'random' or 'text'.")
    filled["init_method"] = init_method
    init_text = given.get("init_text")
    if init_method == "text" and (not isinstance(init_text, str) or not init_text.strip()):
        raise _bad("init_text", "init_method 'text' requires a non-empty init_text.")
    if init_text is not None:
        filled["init_text"] = init_text

    verbalizer = given.get("verbalizer", DEFAULT_VERBALIZER)
    if not isinstance(verbalizer, str) or "{{input}}" not in verbalizer:
        raise _bad("verbalizer", "the template must contain '{{input}}'.")
    filled["verbalizer"] = verbalizer
    return filled


def _training_asset_id(reference: Any) -> str:
    """The data asset id of a ``training_data_references`` entry (``location.id`` or href)."""
    if not isinstance(reference, dict) or reference.get("type") != "data_asset":
        raise ApiError(400, "training_data_references[0] must be a reference of type 'data_asset'.")
    location = reference.get("location")
    if isinstance(location, dict):
        if isinstance(location.get("id"), str) and location["id"]:
            return str(location["id"])
        href = location.get("href")
        if isinstance(href, str) and "/v2/assets/" in href:
            return href.split("/v2/assets/", 1)[1].split("?", 1)[0].strip("/")
    raise ApiError(400, "training_data_references[0].location must give the asset id or href.")


def _losses(
    seed: int, training_id: str, epochs: int, per_epoch: int, start: float
) -> list[dict[str, Any]]:
    """``status.metrics`` entries (format (a) of protocol §7.3) for a whole training."""
    rng = random.Random(f"{seed}/{training_id}")  # noqa: S311 - repeatable on purpose
    entries = []
    for epoch in range(epochs):
        scale = 0.75**epoch
        for step in range(per_epoch):
            index = epoch * per_epoch + step
            loss = 2.5 * scale * (1 + rng.uniform(-0.1, 0.1))
            entries.append(
                {
                    "iteration": index + 1,
                    "timestamp": iso(start + index + 1),
                    "ml_metrics": {"loss": round(loss, 6), "epoch": epoch},
                }
            )
    return entries


async def create_training(fake: FakeView, req: Request) -> Response:
    """``POST /ml/v4/trainings`` (scope in the body) -> 201 ``queued``."""
    body = req.json_body()
    container = container_from_body(fake, body)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "Field 'name' is required.", "missing_field")
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ApiError(400, "Field 'tags' must be a list of strings.")
    if "auto_update_model" in body and not isinstance(body["auto_update_model"], bool):
        raise ApiError(400, "Field 'auto_update_model' must be a boolean.")
    prompt_tuning = _check_prompt_tuning(fake, body.get("prompt_tuning"))
    references = body.get("training_data_references")
    if not isinstance(references, list) or not references:
        raise ApiError(400, "Field 'training_data_references' must be a non-empty list.")
    asset_id = _training_asset_id(references[0])
    stored = dict(body)
    stored.setdefault("results_reference", DEFAULT_RESULTS_REFERENCE)
    now = time.time()
    with fake._store.lock:
        asset = fake._store.assets.get(asset_id)
        if asset is None or asset.container != container or not asset.completed:
            raise ApiError(
                400,
                f"Training data asset '{asset_id}' does not exist in this {container.kind} "
                "or its upload was not completed.",
                "invalid_training_data",
            )
        training_id = fake._store.new_id()
        record = TrainingRecord(
            id=training_id,
            name=name,
            description=str(body.get("description", "")),
            tags=list(tags),
            container=container,
            created_at=now,
            modified_at=now,
            body=stored,
            prompt_tuning=prompt_tuning,
            all_metrics=_losses(
                fake.seed,
                training_id,
                prompt_tuning["num_epochs"],
                max(1, fake.metrics_per_epoch),
                now,
            ),
        )
        fake._store.trainings[training_id] = record
        wire = record.wire()
    return Response.json(wire, status=201)


def _training(fake: FakeView, training_id: str, container: Container) -> TrainingRecord:
    """The live record (call with the lock held); 404 outside its container."""
    record = fake._store.trainings.get(training_id)
    if record is None or record.container != container:
        raise ApiError(404, f"Training '{training_id}' was not found.", "training_not_found")
    return record


def _advance(fake: FakeView, record: TrainingRecord, now: float) -> None:
    """One status poll of an unfinished training (call with the lock held)."""
    record.polls += 1
    record.modified_at = now
    needed = max(1, fake.training_polls)
    epochs = record.prompt_tuning["num_epochs"]
    if record.polls < needed:
        record.start_running(now)
        record.visible_metrics = len(record.all_metrics) * record.polls // needed
        epoch = record.metrics[-1]["ml_metrics"]["epoch"] + 1 if record.metrics else 0
        record.message = f"Prompt tuning is running: epoch {epoch} of {epochs}."
        return
    record.start_running(now)
    record.completed_at = now
    if fake.training_outcome == "failed":
        record.state = "failed"
        record.visible_metrics = len(record.all_metrics) // 2
        record.message = fake.training_failure_message
        record.failure = {
            "trace": new_trace_id(),
            "errors": [{"code": "training_failed", "message": fake.training_failure_message}],
        }
        return
    record.state = "completed"
    record.visible_metrics = len(record.all_metrics)
    record.message = "Prompt tuning completed."
    if record.auto_update_model:
        record.model_id = fake._store.new_id()


async def get_training(fake: FakeView, req: Request) -> Response:
    """``GET /ml/v4/trainings/{training_id}``: one poll of the state machine."""
    container = container_from_query(fake, req)
    with fake._store.lock:
        record = _training(fake, req.path_params["training_id"], container)
        if not record.finished:
            _advance(fake, record, time.time())
        wire = record.wire()
    return Response.json(wire)


async def list_trainings(fake: FakeView, req: Request) -> Response:
    """``GET /ml/v4/trainings`` with ``tag.value``, ``state``, ``type`` filters, newest first."""
    container = container_from_query(fake, req)
    tag, state, kind = req.param("tag.value"), req.param("state"), req.param("type")
    with fake._store.lock:
        found = [
            record.wire()
            for record in sorted(
                fake._store.trainings.values(), key=lambda r: r.created_at, reverse=True
            )
            if record.container == container
            and (tag is None or tag in record.tags)
            and (state is None or record.state == state)
            and (kind is None or kind == "prompt_tuning")
        ]
    return Response.json(paginate(req, found))


async def delete_training(fake: FakeView, req: Request) -> Response:
    """``DELETE /ml/v4/trainings/{id}``: cancel (queued/running) or, with ``hard_delete=true``,
    remove. Cancelling a finished training is a 400 "Job already completed with state ..."."""
    container = container_from_query(fake, req)
    with fake._store.lock:
        record = _training(fake, req.path_params["training_id"], container)
        if req.flag("hard_delete"):
            del fake._store.trainings[record.id]
            return Response.empty(204)
        if record.finished:
            raise ApiError(
                400,
                f"Job already completed with state {record.state}.",
                "training_already_completed",
            )
        now = time.time()
        record.state = "canceled"
        record.completed_at = record.modified_at = now
        record.message = "Prompt tuning was canceled."
    return Response.empty(204)
