"""Online deployments of tuned models (protocol §8).

``POST /ml/v4/deployments`` answers 202 ``initializing``; the deployment reaches
``fake.deployment_outcome`` (``ready`` or ``failed``) on its ``fake.deployment_polls``-th
``GET``. A deployment can be reached for generation by its id or by its serving name.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from ._catalog import paginate
from ._http import ApiError, Request, Response, new_trace_id
from ._platform import container_from_body, container_from_query
from ._state import Container, DeploymentRecord

if TYPE_CHECKING:
    from ._view import FakeView

SERVING_NAME = re.compile(r"^[a-z0-9_]{1,36}$")
FAILURE_MESSAGE = "Deployment failed: the model could not be loaded (injected by FakeWatsonx)."


def _serving_name(body: dict[str, Any]) -> str | None:
    online = body.get("online")
    if not isinstance(online, dict):
        raise ApiError(400, "Field 'online' is required and must be an object.", "missing_field")
    parameters = online.get("parameters") or {}
    name = parameters.get("serving_name") if isinstance(parameters, dict) else None
    if name is None:
        return None
    if not isinstance(name, str) or not SERVING_NAME.match(name):
        raise ApiError(
            400,
            f"Invalid serving_name {name!r}: it must match ^[a-z0-9_]{{1,36}}$.",
            "invalid_serving_name",
        )
    return name


def _taken(fake: FakeView, serving_name: str) -> bool:
    """Whether a deployment uses this serving name (call with the lock held)."""
    return any(d.serving_name == serving_name for d in fake._store.deployments.values())


async def create_deployment(fake: FakeView, req: Request) -> Response:
    """``POST /ml/v4/deployments``: ``asset.id`` must be the ``model_id`` of a completed
    training in the same project/space."""
    body = req.json_body()
    container = container_from_body(fake, body)
    in_query = req.param("project_id") or req.param("space_id")
    if in_query and container_from_query(fake, req) != container:
        raise ApiError(400, "The query and the body name different projects or spaces.")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "Field 'name' is required.", "missing_field")
    asset = body.get("asset")
    asset_id = asset.get("id") if isinstance(asset, dict) else None
    if not isinstance(asset_id, str) or not asset_id:
        raise ApiError(400, "Field 'asset.id' is required.", "missing_field")
    serving_name = _serving_name(body)
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ApiError(400, "Field 'tags' must be a list of strings.")
    now = time.time()
    with fake._store.lock:
        training = next(
            (
                t
                for t in fake._store.trainings.values()
                if t.model_id == asset_id and t.container == container
            ),
            None,
        )
        if training is None:
            raise ApiError(404, f"Model '{asset_id}' was not found.", "model_not_found")
        if serving_name is not None and _taken(fake, serving_name):
            raise ApiError(
                409,
                f"Serving name '{serving_name}' is already used by another deployment.",
                "serving_name_not_unique",
            )
        record = DeploymentRecord(
            id=fake._store.new_id(),
            name=name,
            description=str(body.get("description", "")),
            tags=list(tags),
            container=container,
            created_at=now,
            modified_at=now,
            asset_id=asset_id,
            base_model_id=training.prompt_tuning["base_model"]["model_id"],
            serving_name=serving_name,
            base_url=req.base_url,
            body=body,
        )
        fake._store.deployments[record.id] = record
        wire = record.wire()
    return Response.json(wire, status=202)


def _deployment(fake: FakeView, deployment_id: str, container: Container) -> DeploymentRecord:
    record = fake._store.deployments.get(deployment_id)
    if record is None or record.container != container:
        raise ApiError(404, f"Deployment '{deployment_id}' was not found.", "deployment_not_found")
    return record


async def get_deployment(fake: FakeView, req: Request) -> Response:
    """``GET /ml/v4/deployments/{id}``: one poll of the state machine."""
    container = container_from_query(fake, req)
    with fake._store.lock:
        record = _deployment(fake, req.path_params["deployment_id"], container)
        if record.state == "initializing":
            record.polls += 1
            record.modified_at = time.time()
            if record.polls >= max(1, fake.deployment_polls):
                if fake.deployment_outcome == "failed":
                    record.state = "failed"
                    record.failure = {
                        "trace": new_trace_id(),
                        "errors": [{"code": "deployment_failed", "message": FAILURE_MESSAGE}],
                    }
                else:
                    record.state = "ready"
        wire = record.wire()
    return Response.json(wire)


async def list_deployments(fake: FakeView, req: Request) -> Response:
    """``GET /ml/v4/deployments`` with ``tag.value``, ``name``, ``serving_name`` filters.

    ``serving_name=X&conflict=true`` checks availability: 409 if taken, else 204.
    """
    serving_name = req.param("serving_name")
    if serving_name is not None and req.flag("conflict"):
        with fake._store.lock:
            taken = _taken(fake, serving_name)
        if taken:
            raise ApiError(
                409, f"Serving name '{serving_name}' is already in use.", "serving_name_not_unique"
            )
        return Response.empty(204)
    container = container_from_query(fake, req)
    tag, name = req.param("tag.value"), req.param("name")
    with fake._store.lock:
        found = [
            record.wire()
            for record in sorted(
                fake._store.deployments.values(), key=lambda r: r.created_at, reverse=True
            )
            if record.container == container
            and (tag is None or tag in record.tags)
            and (name is None or record.name == name)
            and (serving_name is None or record.serving_name == serving_name)
        ]
    return Response.json(paginate(req, found))


async def delete_deployment(fake: FakeView, req: Request) -> Response:
    """``DELETE /ml/v4/deployments/{id}`` -> 204."""
    container = container_from_query(fake, req)
    with fake._store.lock:
        record = _deployment(fake, req.path_params["deployment_id"], container)
        del fake._store.deployments[record.id]
    return Response.empty(204)
