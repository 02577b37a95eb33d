"""What a route handler sees of the fake: the knobs a test sets, and the shared state.

`FakeWatsonx` fits this protocol. Handlers name it instead of `FakeWatsonx`, so the route
modules never import `_fake` (which imports `_app`, which imports them): no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from ._faults import FaultSet
    from ._models import FakeModel
    from ._ratelimit import RateLimitMode
    from ._state import GenerationCall, Store
    from ._tokens import TokenIssuer

__all__ = ["FakeView"]


class FakeView(Protocol):
    """The attributes of `FakeWatsonx` that the endpoints read (see its docstring for each)."""

    project_id: str
    space_id: str | None
    api_keys: list[str] | None
    token_lifetime: float
    models: list[FakeModel]
    generation_latency: float
    rate_limit: float | None
    rate_limit_mode: RateLimitMode
    rate_limit_burst: int | None
    rate_limit_headers: Literal["remaining", "all", "none"]
    send_retry_after: bool
    training_polls: int
    training_outcome: Literal["completed", "failed"]
    training_failure_message: str
    metrics_per_epoch: int
    deployment_polls: int
    deployment_outcome: Literal["ready", "failed"]
    answer: Callable[[GenerationCall], str] | None
    seed: int
    faults: FaultSet
    _tokens: TokenIssuer
    _store: Store

    def model(self, model_id: str) -> FakeModel | None:
        """The served model with this id, if any."""
        ...
