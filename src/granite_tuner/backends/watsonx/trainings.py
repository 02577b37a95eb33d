"""Prompt-tuning trainings: create (never twice), read, list, cancel, delete (protocol §7)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from granite_tuner.backends.watsonx import _endpoints as ep
from granite_tuner.backends.watsonx._pagination import list_all
from granite_tuner.backends.watsonx._transport import Transport
from granite_tuner.backends.watsonx.models import Training
from granite_tuner.errors import BadRequestError

__all__ = ["REQUEST_TAG_PREFIX", "Trainings"]

#: Each create carries a tag `granite-tuner.request.<uuid>`: if the answer is lost, the
#: training is found again by that tag instead of being created a second time.
REQUEST_TAG_PREFIX = "granite-tuner.request."
_MAX_NAME_LENGTH = 100


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
    ) -> Training:
        """Start a prompt-tuning run. `parameters` are the optional `prompt_tuning` fields of
        §7.1 (num_epochs, learning_rate, ...); None values are left to the service."""
        request_tag = REQUEST_TAG_PREFIX + uuid.uuid4().hex
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
            "name": name[:_MAX_NAME_LENGTH],
            "description": description,
        }

        async def find_existing() -> Training | None:
            found = await self.list(tag=request_tag)
            return found[0] if found else None

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
