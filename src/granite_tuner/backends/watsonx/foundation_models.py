"""The foundation models the service offers, and which of them can be prompt-tuned (§4, §10)."""

from __future__ import annotations

from granite_tuner.backends.watsonx import _endpoints as ep
from granite_tuner.backends.watsonx._pagination import list_all
from granite_tuner.backends.watsonx._transport import Transport
from granite_tuner.backends.watsonx.models import FoundationModel

__all__ = ["FoundationModels"]

_TUNABLE_FILTER = "function_prompt_tune_trainable,!lifecycle_withdrawn:and"


class FoundationModels:
    """`client.foundation_models`: the live model list (it changes per region and over time)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def list(self, *, prompt_tunable: bool = False) -> list[FoundationModel]:
        """All offered models, or only the prompt-tunable ones that are not withdrawn."""
        return await list_all(
            self._transport,
            ep.MODEL_SPECS,
            FoundationModel.from_wire,
            params={"filters": _TUNABLE_FILTER if prompt_tunable else "!lifecycle_withdrawn"},
            operation="Listing foundation models",
        )
