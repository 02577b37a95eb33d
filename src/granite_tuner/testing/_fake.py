"""``FakeWatsonx``: the knobs, the state a test inspects, and how to serve it."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

from ._app import FakeApp
from ._faults import FaultSet
from ._models import FakeModel, default_models
from ._ratelimit import RATE_LIMIT_MODES, RateLimitMode
from ._server import ServerHandle, serve_in_thread
from ._state import (
    AssetRecord,
    DeploymentRecord,
    GenerationCall,
    RecordedRequest,
    Store,
    TrainingRecord,
)
from ._tokens import TokenIssuer

logger = logging.getLogger("granite_tuner.testing")


class FakeWatsonx:
    """An in-process watsonx.ai (ML + data platform + IAM) for tests.

    Every constructor argument is also a plain attribute that a test may change while the
    fake runs (``fake.training_polls = 10**9`` keeps trainings running). See the package
    docstring for an example and the protocol each endpoint speaks.

    Args:
        project_id: the project the fake knows; any other project id gets 403.
        space_id: an optional space the fake also knows.
        api_keys: API keys IAM accepts; None accepts any non-empty key.
        token_lifetime: seconds an issued token is valid (its JWT ``exp``).
        models: the foundation models served (default: `default_models`).
        generation_latency: seconds slept before answering each text-generation request.
        rate_limit: text-generation requests per second; None: unlimited.
        rate_limit_mode: how requests are counted: ``token_bucket``, ``sliding_window`` (one
            second per admitted request) or ``fixed_window`` (whole wall-clock seconds); see
            ``_ratelimit``.
        rate_limit_burst: bucket capacity of ``token_bucket`` (default: ``ceil(rate_limit)``).
        rate_limit_headers: which ``x-requests-limit-*`` headers answers carry under a limit:
            ``remaining`` (as watsonx.ai is seen to send), ``all`` (also
            ``x-requests-limit-rate``, the limit in requests per second) or ``none``.
        send_retry_after: send ``Retry-After`` (whole seconds, >= 1) with a 429.
        training_polls: a training reaches its end state on its Nth status GET.
        training_outcome: ``completed`` or ``failed``.
        training_failure_message: ``status.failure`` message of a failed training.
        metrics_per_epoch: ``status.metrics`` entries per epoch.
        deployment_polls: a deployment reaches its end state on its Nth GET.
        deployment_outcome: ``ready`` or ``failed``.
        answer: generated text for a `GenerationCall`; default: ``"1"`` or ``"0"``
            from a CRC32 of the input (see ``_generation.default_answer``).
        seed: seeds ids, losses and fault probabilities, so runs repeat.
    """

    def __init__(
        self,
        *,
        project_id: str = "p-1",
        space_id: str | None = None,
        api_keys: Sequence[str] | None = None,
        token_lifetime: float = 3600.0,
        models: Sequence[FakeModel] | None = None,
        generation_latency: float = 0.0,
        rate_limit: float | None = None,
        rate_limit_mode: RateLimitMode = "token_bucket",
        rate_limit_burst: int | None = None,
        rate_limit_headers: Literal["remaining", "all", "none"] = "remaining",
        send_retry_after: bool = True,
        training_polls: int = 2,
        training_outcome: Literal["completed", "failed"] = "completed",
        training_failure_message: str = "Training failed: out of memory",
        metrics_per_epoch: int = 2,
        deployment_polls: int = 1,
        deployment_outcome: Literal["ready", "failed"] = "ready",
        answer: Callable[[GenerationCall], str] | None = None,
        seed: int = 0,
    ) -> None:
        self.project_id = project_id
        self.space_id = space_id
        self.api_keys = list(api_keys) if api_keys is not None else None
        self.token_lifetime = token_lifetime
        self.models: list[FakeModel] = list(models) if models is not None else default_models()
        self.generation_latency = generation_latency
        self.rate_limit = rate_limit
        if rate_limit_mode not in RATE_LIMIT_MODES:
            raise ValueError(f"rate_limit_mode must be one of {RATE_LIMIT_MODES}")
        self.rate_limit_mode: RateLimitMode = rate_limit_mode
        self.rate_limit_burst = rate_limit_burst
        if rate_limit_headers not in ("remaining", "all", "none"):
            raise ValueError("rate_limit_headers must be 'remaining', 'all' or 'none'")
        self.rate_limit_headers: Literal["remaining", "all", "none"] = rate_limit_headers
        self.send_retry_after = send_retry_after
        self.training_polls = training_polls
        self.training_outcome: Literal["completed", "failed"] = training_outcome
        self.training_failure_message = training_failure_message
        self.metrics_per_epoch = metrics_per_epoch
        self.deployment_polls = deployment_polls
        self.deployment_outcome: Literal["ready", "failed"] = deployment_outcome
        self.answer = answer
        self.seed = seed
        self.faults = FaultSet(seed)
        self._tokens = TokenIssuer()
        self._store = Store(seed)
        self.app = FakeApp(self)

    # --- serving -----------------------------------------------------------------------------

    @contextmanager
    def serve(
        self, *, tls: bool = False, host: str = "127.0.0.1", port: int = 0
    ) -> Iterator[ServerHandle]:
        """Serve the fake on a real socket in a background thread (HTTPS with a test CA when
        ``tls``). ``server.url`` serves the ML and platform roles, IAM at
        ``server.url + "/identity/token"``, and the upload URLs."""
        with serve_in_thread(self.app, tls=tls, host=host, port=port) as server:
            logger.debug("FakeWatsonx serving at %s", server.url)
            yield server

    # --- tokens ------------------------------------------------------------------------------

    def issue_token(self, lifetime: float | None = None) -> str:
        """A valid bearer token, as an IAM API-key exchange would return."""
        token, _ = self._tokens.issue(self.token_lifetime if lifetime is None else lifetime)
        return token

    def expire_tokens(self) -> None:
        """Every token issued so far now gets 401 ``authentication_token_expired``."""
        self._tokens.expire_all()

    # --- what a test inspects ----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, in arrival order (IAM, uploads, faulted and dropped ones too)."""
        with self._store.lock:
            return list(self._store.requests)

    def count(self, method: str, path_regex: str) -> int:
        """How many recorded requests have this method and a path matching ``path_regex``."""
        pattern = re.compile(path_regex)
        return sum(
            1
            for request in self.requests
            if request.method == method.upper() and pattern.search(request.path)
        )

    @property
    def trainings(self) -> dict[str, TrainingRecord]:
        """Snapshot of the trainings (hard-deleted ones are gone)."""
        with self._store.lock:
            return copy.deepcopy(self._store.trainings)

    @property
    def assets(self) -> dict[str, AssetRecord]:
        """Snapshot of the data assets, including ones whose upload never completed."""
        with self._store.lock:
            return copy.deepcopy(self._store.assets)

    @property
    def deployments(self) -> dict[str, DeploymentRecord]:
        """Snapshot of the deployments."""
        with self._store.lock:
            return copy.deepcopy(self._store.deployments)

    @property
    def iam_exchanges(self) -> int:
        """The number of successful API-key exchanges at the IAM endpoint."""
        with self._store.lock:
            return self._store.iam_exchanges

    def model(self, model_id: str) -> FakeModel | None:
        """The served model with this id, if any."""
        return next((model for model in self.models if model.model_id == model_id), None)
