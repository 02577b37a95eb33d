"""Online deployments of tuned models: create (never twice), read, list, delete (§8)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from granite_tuner.backends.base import check_request_tag, check_serving_name, new_request_tag
from granite_tuner.backends.watsonx import _endpoints as ep
from granite_tuner.backends.watsonx._pagination import list_all
from granite_tuner.backends.watsonx._transport import Transport
from granite_tuner.backends.watsonx.models import Deployment
from granite_tuner.errors import ConflictError

__all__ = ["Deployments"]


class Deployments:
    """`client.deployments`: online deployments in the client's project or space."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def create(
        self,
        *,
        model_id: str,
        name: str,
        serving_name: str | None = None,
        description: str | None = None,
        tags: Sequence[str] = (),
        base_model_id: str | None = None,
        request_tag: str | None = None,
    ) -> Deployment:
        """Deploy a stored (tuned) model. Returns at once; the state starts `initializing`.
        The create carries `request_tag` (generated when not given): `find_by_tag` finds it."""
        if serving_name is not None:
            check_serving_name(serving_name)
        request_tag = new_request_tag() if request_tag is None else check_request_tag(request_tag)
        online: dict[str, Any] = (
            {"parameters": {"serving_name": serving_name}} if serving_name else {}
        )
        body: dict[str, Any] = {
            "name": name,
            "online": online,
            "asset": {"id": model_id},
            "tags": [*tags, request_tag],
        }
        if description is not None:
            body["description"] = description
        if base_model_id is not None:
            body["base_model_id"] = base_model_id

        async def find_existing() -> Deployment | None:
            return await self.find_by_tag(request_tag)

        return await self._transport.request_json(
            "POST",
            ep.DEPLOYMENT_CREATE,
            json=body,
            parse=Deployment.from_wire,
            expect=frozenset({201, 202}),
            find_existing=find_existing,
            operation=f"Creating deployment {name!r}",
        )

    async def get(self, deployment_id: str) -> Deployment:
        return await self._transport.request_json(
            "GET",
            ep.DEPLOYMENT,
            path={"deployment_id": deployment_id},
            parse=Deployment.from_wire,
            operation=f"Reading deployment {deployment_id}",
        )

    async def find_by_tag(self, request_tag: str) -> Deployment | None:
        """The deployment a create with this request tag made, or None."""
        found = await self.list(tag=check_request_tag(request_tag))
        return found[0] if found else None

    async def list(
        self, *, tag: str | None = None, serving_name: str | None = None
    ) -> list[Deployment]:
        return await list_all(
            self._transport,
            ep.DEPLOYMENTS,
            Deployment.from_wire,
            params={"tag.value": tag, "serving_name": serving_name},
            operation="Listing deployments",
        )

    async def serving_name_available(self, serving_name: str) -> bool:
        """Whether no deployment uses `serving_name` yet (the service answers 409 if taken)."""
        check_serving_name(serving_name)
        try:
            await self._transport.request_no_content(
                "GET",
                ep.DEPLOYMENTS,
                params={"serving_name": serving_name, "conflict": "true"},
                expect=frozenset({200, 204}),
                operation=f"Checking serving name {serving_name!r}",
            )
        except ConflictError:
            return False
        return True

    async def delete(self, deployment_id: str) -> None:
        await self._transport.request_no_content(
            "DELETE",
            ep.DEPLOYMENT,
            path={"deployment_id": deployment_id},
            operation=f"Deleting deployment {deployment_id}",
        )
