"""Prompt-tuning trainings: create (never twice), read, list, cancel, delete (protocol §7)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from granite_tuner.backends.base import (
    REQUEST_TAG_PREFIX,
    check_request_tag,
    check_run_name,
    new_request_tag,
)
from granite_tuner.backends.watsonx import _endpoints as ep
from granite_tuner.backends.watsonx._pagination import list_all
from granite_tuner.backends.watsonx._transport import Transport
from granite_tuner.backends.watsonx.models import Training
from granite_tuner.errors import BadRequestError

__all__ = ["REQUEST_TAG_PREFIX", "Trainings"]


class Trainings:
    """`client.trainings`: the training runs of the client's project or space."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def create(
        self,
        *,
        name: str,
        base_model: str,
        task_id: str,
        data_asset_id: str,
        parameters: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        description: str = "Prompt tuning with granite-tuner",
        auto_update_model: bool = True,
        request_tag: str | None = None,
    ) -> Training:
        """Start a prompt-tuning run. `parameters` are the optional `prompt_tuning` fields of
        §7.1 (num_epochs, learning_rate, ...); None values are left to the service. The create
        carries `request_tag` (generated when not given): `find_by_tag` finds the run again."""
        check_run_name(name)
        request_tag = new_request_tag() if request_tag is None else check_request_tag(request_tag)
        prompt_tuning: dict[str, Any] = {
            "base_model": {"model_id": base_model},
            "task_id": task_id,
            "tuning_type": "prompt_tuning",
        }
        prompt_tuning.update({k: v for k, v in (parameters or {}).items() if v is not None})
        body: dict[str, Any] = {
            "training_data_references": [
                {
                    "type": "data_asset",
                    "location": {"href": f"/v2/assets/{data_asset_id}", "id": data_asset_id},
                }
            ],
            "results_reference": {
                "type": "container",
                "location": {"path": "default_tuning_output"},
            },
            "tags": ["prompt_tuning", *tags, request_tag],
            "prompt_tuning": prompt_tuning,
            "auto_update_model": auto_update_model,
            "name": name,
            "description": description,
        }

        async def find_existing() -> Training | None:
            return await self.find_by_tag(request_tag)

        return await self._transport.request_json(
            "POST",
            ep.TRAINING_CREATE,
            json=body,
            parse=Training.from_wire,
            expect=frozenset({201}),
            find_existing=find_existing,
            operation="Creating the prompt-tuning training",
        )

    async def get(self, training_id: str) -> Training:
        return await self._transport.request_json(
            "GET",
            ep.TRAINING,
            path={"training_id": training_id},
            parse=Training.from_wire,
            operation=f"Reading training {training_id}",
        )

    async def find_by_tag(self, request_tag: str) -> Training | None:
        """The training a create with this request tag started, or None."""
        found = await self.list(tag=check_request_tag(request_tag))
        return found[0] if found else None

    async def list(
        self, *, tag: str | None = None, state: str | None = None, limit: int = 200
    ) -> list[Training]:
        """Prompt-tuning trainings of the scope, optionally only those with a tag or state."""
        return await list_all(
            self._transport,
            ep.TRAININGS,
            Training.from_wire,
            params={"tag.value": tag, "state": state, "type": "prompt_tuning"},
            operation="Listing trainings",
            limit=limit,
        )

    async def cancel(self, training_id: str) -> None:
        """Stop a queued or running training; a finished one is left as it is."""
        try:
            await self._transport.request_no_content(
                "DELETE",
                ep.TRAINING,
                path={"training_id": training_id},
                operation=f"Canceling training {training_id}",
            )
        except BadRequestError as exc:
            # The service refuses to cancel what already ended; that is the goal anyway.
            if "already completed" not in exc.message:
                raise

    async def delete(self, training_id: str) -> None:
        """Remove a training and its record for good (`hard_delete=true`)."""
        await self._transport.request_no_content(
            "DELETE",
            ep.TRAINING,
            path={"training_id": training_id},
            params={"hard_delete": "true"},
            operation=f"Deleting training {training_id}",
        )
