"""`WatsonxClient`: one async client for IBM watsonx.ai, safe to share across tasks.

The client is composed, not inherited: it builds its parts — the HTTP transport with its
authenticator, one object per REST resource, and the tuning and serving parts that map the
workflow onto those resources — hands each what it needs, and implements `TuningBackend` and
`ServingBackend` by delegating to them.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from granite_tuner._retry import RetryPolicy
from granite_tuner._version import __version__
from granite_tuner.backends.base import BaseModelInfo, DeploymentInfo
from granite_tuner.backends.watsonx._settings import (
    WatsonxSettings,
    ca_bundle_from_env,
    resolve_settings,
)
from granite_tuner.backends.watsonx._transport import Transport
from granite_tuner.backends.watsonx.assets import Assets
from granite_tuner.backends.watsonx.auth import (
    Authenticator,
    IAMAuthenticator,
    StaticTokenAuthenticator,
)
from granite_tuner.backends.watsonx.deployments import Deployments
from granite_tuner.backends.watsonx.foundation_models import FoundationModels
from granite_tuner.backends.watsonx.generation import Generation
from granite_tuner.backends.watsonx.serving import WatsonxServing
from granite_tuner.backends.watsonx.trainings import Trainings
from granite_tuner.backends.watsonx.tuning import DEFAULT_BASE_MODEL, WatsonxTuning
from granite_tuner.data import LabelledSet
from granite_tuner.errors import ConfigurationError, UnsupportedFeatureError
from granite_tuner.generation import GenerationParameters, GenerationResult
from granite_tuner.limits import RateLimiter
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.runs import CheckpointInfo, TuningRun
from granite_tuner.validation import ValidationOptions

__all__ = ["WatsonxClient"]

_NO_CHECKPOINTS = (
    "The watsonx backend cannot {what} a tuning run: watsonx.ai keeps no checkpoints of a "
    "run (it runs to the end on the service; wait on it again with Tuner.attach). Tune with "
    "the local backend (LocalClient) for checkpoints and resume."
)

DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
#: httpx's own keep-alive expiry (5 s). httpcore checks every pooled connection, asking each
#: idle one whether its socket is readable, whenever a request arrives or leaves, so a
#: connection the pool no longer needs costs CPU on every request until it expires. A longer
#: expiry (30 s before 2026-12-06) kept the surplus of a burst for a whole evaluation.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=50, keepalive_expiry=5)


def _ssl_context(verify: bool | str | ssl.SSLContext) -> ssl.SSLContext | bool:
    """httpx wants a context for custom CAs; a path is turned into one here."""
    if isinstance(verify, str):
        try:
            return ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"verify={verify!r} is not a readable CA bundle: {exc}"
            ) from None
    return verify


def _http_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    """The httpx timeout for `timeout=`: seconds per request (positive), or httpx's own."""
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigurationError(
            f"timeout must be a positive, finite number of seconds per request (or an "
            f"httpx.Timeout, or None for the default of 120 s), got {timeout!r}."
        )
    return httpx.Timeout(float(timeout), connect=min(10.0, float(timeout)))


class WatsonxClient:
    """An async client for watsonx.ai: credentials, scope, retries and the REST resources.

    ```python
    async with WatsonxClient(api_key=..., url="https://us-south.ml.cloud.ibm.com",
                             project_id=...) as client:
        models = await client.foundation_models.list(prompt_tunable=True)
    ```

    Arguments left out are read from the environment (`WATSONX_URL`, `WATSONX_APIKEY`,
    `WATSONX_TOKEN`, `WATSONX_PROJECT_ID`, `WATSONX_SPACE_ID`, `WATSONX_IAM_URL`, and
    `WATSONX_CA_BUNDLE` for `verify=`), or from an `ibm_watsonx_ai.Credentials` passed as
    `credentials=`. An API key is exchanged at IAM
    and refreshed ahead of expiry; a token is used as is. Pass `http_client=` to share your
    own `httpx.AsyncClient` (it is then yours to close). TLS verification is on unless you
    pass `verify=False`; `verify=` also takes a CA bundle path or an `ssl.SSLContext`.
    Text generation goes through `rate_limiter` (by default one that only obeys the service's
    429s); give `RateLimiter(requests_per_second=...)` to stay within your plan's limit.

    Args:
        url: the watsonx.ai ML URL of your region (`WATSONX_URL`), such as
            `https://us-south.ml.cloud.ibm.com`.
        api_key: an IBM Cloud API key (`WATSONX_APIKEY`), exchanged at IAM and refreshed.
        token: or a bearer token used as is (`WATSONX_TOKEN`).
        project_id: the project to work in (`WATSONX_PROJECT_ID`)...
        space_id: ...or a deployment space (`WATSONX_SPACE_ID`).
        platform_url: the data-platform URL; derived from `url` for IBM Cloud regions.
        iam_url: the IAM token endpoint (`WATSONX_IAM_URL`); default IBM Cloud's.
        credentials: an `ibm_watsonx_ai.Credentials`, read field by field.
        verify: TLS verification: True, a CA bundle path (`WATSONX_CA_BUNDLE`), an
            `ssl.SSLContext`, or False.
        timeout: seconds per HTTP request (connect at most 10 s), or an `httpx.Timeout`;
            default 120 s, 10 s to connect. Waits for runs and deployments have their own
            `timeout` on `Tuner` and `Deployment`.
        retry: the `RetryPolicy` for transient failures (default: 6 attempts, backoff with
            jitter, `Retry-After` obeyed).
        rate_limiter: paces text generation (see above).
        api_version: the `version` query parameter sent with every ML request.
        http_client: your own `httpx.AsyncClient`, left open on `aclose()`.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        api_key: str | None = None,
        token: str | None = None,
        project_id: str | None = None,
        space_id: str | None = None,
        platform_url: str | None = None,
        iam_url: str | None = None,
        credentials: Any = None,
        verify: bool | str | ssl.SSLContext | None = None,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        rate_limiter: RateLimiter | None = None,
        api_version: str | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        http_timeout = _http_timeout(timeout)  # arguments first: nothing is built on a bad one
        self.settings: WatsonxSettings = resolve_settings(
            url=url,
            api_key=api_key,
            token=token,
            project_id=project_id,
            space_id=space_id,
            platform_url=platform_url,
            iam_url=iam_url,
            credentials=credentials,
            api_version=api_version,
        )
        if verify is None:
            credentials_verify = getattr(credentials, "verify", None)
            if credentials_verify is not None:
                verify = credentials_verify
            else:
                verify = ca_bundle_from_env() or True
        self.retry = retry or RetryPolicy()
        #: Paces text generation (all targets of this client share it); adapts to 429s.
        self.rate_limiter = rate_limiter or RateLimiter()
        self._owns_http = http_client is None
        if http_client is None:
            http_client = httpx.AsyncClient(
                verify=_ssl_context(verify),
                timeout=http_timeout,
                limits=DEFAULT_LIMITS,
                headers={"User-Agent": f"granite-tuner/{__version__}"},
                follow_redirects=False,
            )
        self._http = http_client
        auth: Authenticator
        if self.settings.api_key is not None:
            auth = IAMAuthenticator(
                self.settings.api_key.get_secret_value(),
                http=http_client,
                iam_url=self.settings.iam_url,
                retry=self.retry,
            )
        else:
            assert self.settings.token is not None
            auth = StaticTokenAuthenticator(self.settings.token.get_secret_value())
        self.auth = auth
        self._transport = Transport(
            http=http_client,
            ml_url=self.settings.url,
            platform_url=self.settings.platform_url,
            scope=self.settings.scope,
            api_version=self.settings.api_version,
            auth=auth,
            retry=self.retry,
            limiter=self.rate_limiter,
        )
        self.assets = Assets(self._transport)
        self.trainings = Trainings(self._transport)
        self.deployments = Deployments(self._transport)
        self.foundation_models = FoundationModels(self._transport)
        self.generation = Generation(self._transport)
        self._tuning = WatsonxTuning(
            assets=self.assets,
            trainings=self.trainings,
            foundation_models=self.foundation_models,
        )
        self._serving = WatsonxServing(deployments=self.deployments, generation=self.generation)

    @property
    def backend_name(self) -> Literal["watsonx"]:
        return "watsonx"

    @property
    def default_base_model(self) -> str:
        """`ibm/granite-13b-instruct-v2`, the Granite model IBM documents for prompt tuning."""
        return DEFAULT_BASE_MODEL

    @property
    def supports_validation(self) -> bool:
        """False: watsonx.ai takes no validation data and has no early stopping."""
        return False

    @property
    def supports_checkpoints(self) -> bool:
        """False: watsonx.ai keeps no checkpoints of a tuning run to list, deploy or resume."""
        return False

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """A client configured from the `WATSONX_*` environment variables (and `overrides`)."""
        return cls(**overrides)

    def __repr__(self) -> str:
        scope = self.settings.scope
        how = "api_key" if self.settings.api_key is not None else "token"
        return f"WatsonxClient(url={self.settings.url!r}, {scope.field}={scope.id!r}, auth={how})"

    # --- TuningBackend ----------------------------------------------------------------------

    async def tunable_models(self) -> list[BaseModelInfo]:
        """The foundation models this instance can prompt-tune, from the live catalogue."""
        return await self._tuning.tunable_models()

    async def upload_training_data(self, data: LabelledSet, *, name: str) -> str:
        """Upload as JSONL, or re-use the data asset of an identical set uploaded before."""
        return await self._tuning.upload_training_data(data, name=name)

    async def delete_training_data(self, data_ref: str) -> None:
        await self._tuning.delete_training_data(data_ref)

    async def start_tuning(
        self,
        *,
        name: str,
        base_model: str,
        data_ref: str,
        parameters: PromptTuningParameters,
        request_tag: str | None = None,
        validation: ValidationOptions | None = None,
    ) -> TuningRun:
        """Start one prompt-tuning training (never two); `validation` is refused here."""
        return await self._tuning.start_tuning(
            name=name,
            base_model=base_model,
            data_ref=data_ref,
            parameters=parameters,
            request_tag=request_tag,
            validation=validation,
        )

    async def find_tuning_run_by_tag(self, request_tag: str) -> TuningRun | None:
        return await self._tuning.find_tuning_run_by_tag(request_tag)

    async def get_tuning_run(self, run_id: str) -> TuningRun:
        return await self._tuning.get_tuning_run(run_id)

    async def find_tuning_runs(self, name: str) -> list[TuningRun]:
        return await self._tuning.find_tuning_runs(name)

    async def list_tuning_runs(self) -> list[TuningRun]:
        return await self._tuning.list_tuning_runs()

    async def cancel_tuning_run(self, run_id: str) -> None:
        await self._tuning.cancel_tuning_run(run_id)

    async def delete_tuning_run(self, run_id: str) -> None:
        await self._tuning.delete_tuning_run(run_id)

    async def list_checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        """Always `UnsupportedFeatureError`: the service keeps no checkpoints."""
        raise UnsupportedFeatureError(_NO_CHECKPOINTS.format(what="list the checkpoints of"))

    async def resume_tuning(
        self,
        run_id: str,
        *,
        base_model: str | None = None,
        parameters: PromptTuningParameters | None = None,
    ) -> TuningRun:
        """Always `UnsupportedFeatureError`: a service run is never interrupted by this
        program (wait on it again with `Tuner.attach`), and has no checkpoints to go on from."""
        raise UnsupportedFeatureError(_NO_CHECKPOINTS.format(what="resume"))

    # --- ServingBackend ---------------------------------------------------------------------

    async def deploy(
        self, model_id: str, *, name: str, serving_name: str | None, request_tag: str | None = None
    ) -> DeploymentInfo:
        return await self._serving.deploy(
            model_id, name=name, serving_name=serving_name, request_tag=request_tag
        )

    async def find_deployment_by_tag(self, request_tag: str) -> DeploymentInfo | None:
        return await self._serving.find_deployment_by_tag(request_tag)

    async def get_deployment(self, deployment_id: str) -> DeploymentInfo:
        return await self._serving.get_deployment(deployment_id)

    async def list_deployments(self) -> list[DeploymentInfo]:
        return await self._serving.list_deployments()

    async def delete_deployment(self, deployment_id: str) -> None:
        await self._serving.delete_deployment(deployment_id)

    async def serving_name_available(self, serving_name: str) -> bool:
        return await self._serving.serving_name_available(serving_name)

    async def generate(
        self,
        prompt: str,
        *,
        model_id: str | None = None,
        deployment_id: str | None = None,
        parameters: GenerationParameters | Mapping[str, Any] | None = None,
    ) -> GenerationResult:
        """Generate text with a base model (`model_id`) or a deployment (`deployment_id`).

        Goes through the client's `rate_limiter`; `parameters` are `GenerationParameters`
        or their fields as a dict (for example `{"max_new_tokens": 2}`).
        """
        return await self._serving.generate(
            prompt, model_id=model_id, deployment_id=deployment_id, parameters=parameters
        )

    # --- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pool (unless the caller passed its own `http_client`)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
