"""What every handler is given: the settings, the served models and the limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from granite_tuner.errors import (
    ConfigurationError,
    DeploymentError,
    DeploymentNotFoundError,
    GenerationError,
    GraniteTunerError,
    InvalidParametersError,
)
from granite_tuner.server._wire import WireError

if TYPE_CHECKING:
    from granite_tuner.server._auth import Keys
    from granite_tuner.server._config import ServeConfig
    from granite_tuner.server._limits import KeyLimits
    from granite_tuner.server._registry import Registry

__all__ = ["Context", "wire_error"]


@dataclass
class Context:
    config: ServeConfig
    keys: Keys
    limits: KeyLimits
    registry: Registry | None = None
    ready: bool = False
    requests: int = field(default=0)

    def served(self) -> Registry:
        if self.registry is None or not self.ready:
            raise WireError(503, "The server is starting or stopping; retry shortly.", "not_ready")
        return self.registry


def wire_error(exc: GraniteTunerError) -> WireError:
    """The HTTP answer to an error of the local backend."""
    if isinstance(exc, InvalidParametersError):
        return WireError(400, exc.message, "invalid_parameters", param=exc.field)
    if isinstance(exc, DeploymentNotFoundError):
        return WireError(404, exc.message, "deployment_not_found")
    if isinstance(exc, DeploymentError):
        return WireError(409, exc.message, "deployment_not_ready")
    if isinstance(exc, ConfigurationError):  # the client is closed: the server is stopping
        return WireError(503, exc.message, "not_ready")
    if isinstance(exc, GenerationError):
        return WireError(500, exc.message, "generation_failed")
    return WireError(500, exc.message, "internal_error")
