"""Text generation on a base model or on a deployment (protocol §9)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from granite_tuner.backends.watsonx import _endpoints as ep
from granite_tuner.backends.watsonx._transport import Transport
from granite_tuner.backends.watsonx.models import generation_result_from_wire
from granite_tuner.errors import ConfigurationError
from granite_tuner.generation import GenerationResult

__all__ = ["Generation"]


class Generation:
    """`client.generation`: one prompt, one request (the service has no batch endpoint)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def generate(
        self,
        prompt: str,
        *,
        model_id: str | None = None,
        deployment_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> GenerationResult:
        """Generate from `model_id` (a base model) or `deployment_id` (e.g. a tuned model).

        Repeating a generation creates nothing, so every transient failure is retried.
        """
        if (model_id is None) == (deployment_id is None):
            raise ConfigurationError("Pass exactly one of model_id= or deployment_id=.")
        body: dict[str, Any] = {"input": prompt}
        if parameters:
            body["parameters"] = {k: v for k, v in parameters.items() if v is not None}
        if deployment_id is not None:
            return await self._transport.request_json(
                "POST",
                ep.DEPLOYMENT_TEXT_GENERATION,
                path={"deployment_id": deployment_id},
                json=body,
                parse=generation_result_from_wire,
                safe_to_repeat=True,
                operation=f"Generating with deployment {deployment_id}",
            )
        assert model_id is not None
        return await self._transport.request_json(
            "POST",
            ep.TEXT_GENERATION,
            json={"model_id": model_id, **body},
            parse=generation_result_from_wire,
            safe_to_repeat=True,
            operation=f"Generating with {model_id}",
        )
