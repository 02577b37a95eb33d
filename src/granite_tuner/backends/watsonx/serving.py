"""The watsonx.ai side of the serving seam: the part of `WatsonxClient` that deploys and
generates. `WatsonxClient` holds one `WatsonxServing` and delegates its `ServingBackend`
methods to it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from granite_tuner.backends.base import DeploymentInfo, deployment_state
from granite_tuner.backends.watsonx.deployments import Deployments
from granite_tuner.backends.watsonx.generation import Generation
from granite_tuner.backends.watsonx.models import Deployment as WireDeployment
from granite_tuner.errors import DeploymentNotFoundError, NotFoundError
from granite_tuner.generation import (
    GenerationParameters,
    GenerationResult,
    checked_generation_parameters,
)

__all__ = ["WatsonxServing", "deployment_to_info"]


def deployment_to_info(deployment: WireDeployment) -> DeploymentInfo:
    """The package's view of a watsonx.ai deployment."""
    failure = "; ".join(str(e) for e in deployment.failure)
    state, service_state = deployment_state(deployment.state)
    return DeploymentInfo(
        id=deployment.id,
        name=deployment.name,
        state=state,
        service_state=service_state,
        serving_name=deployment.serving_name,
        model_id=deployment.asset_id,
        base_model_id=deployment.base_model_id,
        created_at=deployment.created_at,
        failure_message=failure or None,
    )


class WatsonxServing:
    """The `ServingBackend` operations on watsonx.ai, built on the REST resources it is given."""

    def __init__(self, *, deployments: Deployments, generation: Generation) -> None:
        self.deployments = deployments
        self.generation = generation

    async def deploy(
        self, model_id: str, *, name: str, serving_name: str | None, request_tag: str | None = None
    ) -> DeploymentInfo:
        created = await self.deployments.create(
            model_id=model_id, name=name, serving_name=serving_name, request_tag=request_tag
        )
        return deployment_to_info(created)

    async def find_deployment_by_tag(self, request_tag: str) -> DeploymentInfo | None:
        found = await self.deployments.find_by_tag(request_tag)
        return deployment_to_info(found) if found is not None else None

    async def get_deployment(self, deployment_id: str) -> DeploymentInfo:
        try:
            deployment = await self.deployments.get(deployment_id)
        except NotFoundError as exc:
            raise DeploymentNotFoundError(
                f"There is no deployment {deployment_id!r} in this project or space.",
                deployment_id=deployment_id,
            ) from exc
        return deployment_to_info(deployment)

    async def list_deployments(self) -> list[DeploymentInfo]:
        infos = [deployment_to_info(d) for d in await self.deployments.list()]
        return sorted(
            infos, key=lambda d: d.created_at.timestamp() if d.created_at else 0.0, reverse=True
        )

    async def delete_deployment(self, deployment_id: str) -> None:
        await self.deployments.delete(deployment_id)

    async def serving_name_available(self, serving_name: str) -> bool:
        return await self.deployments.serving_name_available(serving_name)

    async def generate(
        self,
        prompt: str,
        *,
        model_id: str | None = None,
        deployment_id: str | None = None,
        parameters: GenerationParameters | Mapping[str, Any] | None = None,
    ) -> GenerationResult:
        checked = checked_generation_parameters(parameters)
        return await self.generation.generate(
            prompt,
            model_id=model_id,
            deployment_id=deployment_id,
            parameters=checked.to_watsonx() if checked is not None else None,
        )
