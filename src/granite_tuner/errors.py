"""Every error granite-tuner raises, in one tree.

```
GraniteTunerError
├── ConfigurationError              settings or credentials are missing or malformed (fix the call)
│   └── UnsupportedFeatureError     this backend or machine cannot do what was asked
├── InvalidDataError                training or evaluation data failed its checks (lists them)
├── InvalidParametersError          a tuning or generation parameter is out of range (names it)
├── TuningError                     a tuning run did not give a model
│   ├── TuningFailedError           the run ended failed or canceled (carries the service's message)
│   ├── TuningTimeoutError          the caller's timeout passed first (the run goes on)
│   ├── RunNotFoundError            no run with that id or name to attach to
│   └── ResumeError                 a local run cannot be resumed as asked (nothing changed)
│       ├── RunFinishedError        the run completed: there is nothing to resume
│       ├── RunInUseError           another process (or this client) is training the run
│       ├── ResumeMismatchError     other parameters or base model than the run's
│       └── NoCheckpointError       no whole checkpoint to resume from
├── DeploymentError                 a deployment did not become ready
│   ├── DeploymentFailedError       the service reports it failed (carries its message)
│   ├── DeploymentTimeoutError      the caller's timeout passed first
│   └── DeploymentNotFoundError     no such deployment (local deployments live in memory)
├── GenerationError                 a local model failed to generate (the cause is chained)
└── APIError                        talking to the service failed
    ├── APIConnectionError          no usable answer: refused, TLS failure, connection dropped
    │   └── APITimeoutError         no answer in time
    ├── UnexpectedResponseError     a success status with a body we cannot read
    └── APIStatusError              the service answered with an error status
        ├── BadRequestError         400: the service rejected what was sent
        ├── AuthenticationError     401, or the API-key exchange failed
        ├── PermissionDeniedError   403
        ├── NotFoundError           404
        ├── ConflictError           409
        ├── RateLimitError          429 after the retry budget (carries retry_after)
        └── ServerError             5xx after the retry budget
```

Messages say what happened and what to do. Service error bodies
(`{"trace": ..., "errors": [{"code", "message", "more_info"}]}`) are parsed into
`ServiceErrorDetail` objects, never pasted raw, and every message passes through the secret
redactor, so no API key or bearer token can reach a traceback or a log.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from granite_tuner._secrets import redact

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ConflictError",
    "DataProblem",
    "DeploymentError",
    "DeploymentFailedError",
    "DeploymentNotFoundError",
    "DeploymentTimeoutError",
    "GenerationError",
    "GraniteTunerError",
    "InvalidDataError",
    "InvalidParametersError",
    "NoCheckpointError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResumeError",
    "ResumeMismatchError",
    "RunFinishedError",
    "RunInUseError",
    "RunNotFoundError",
    "ServerError",
    "ServiceErrorDetail",
    "TuningError",
    "TuningFailedError",
    "TuningTimeoutError",
    "UnexpectedResponseError",
    "UnsupportedFeatureError",
]


class ServiceErrorDetail(BaseModel):
    """One entry of a watsonx error body's `errors[]`."""

    model_config = ConfigDict(defer_build=True, extra="allow", frozen=True)

    code: str | None = None
    message: str
    more_info: str | None = None
    target: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _redacted(cls, data: Any) -> Any:
        """A service that echoes the request (a key, a token) must not leak it through us:
        every string in the entry, however deep, passes through the redactor."""
        return _redact_deep(data)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


def _redact_deep(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {_redact_deep(k): _redact_deep(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_deep(v) for v in value)
    return value


class GraniteTunerError(Exception):
    """Base class of every error this package raises."""

    def __init__(self, message: str) -> None:
        self.message = redact(message)
        super().__init__(self.message)


class ConfigurationError(GraniteTunerError, ValueError):
    """The caller's settings are missing or malformed; nothing was sent."""


class UnsupportedFeatureError(ConfigurationError):
    """The backend or this machine cannot do what was asked (validation data on watsonx.ai,
    bf16 on a CPU without it); the message says what to use instead. Nothing was sent."""


class InvalidDataError(GraniteTunerError, ValueError):
    """Data failed its checks before anything was sent.

    `problems` holds every problem found (up to a cap), each naming the file, line and field
    where it could; the message shows the first few.
    """

    def __init__(self, message: str, *, problems: tuple[DataProblem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class DataProblem(BaseModel):
    """One thing wrong (or worth a warning) in a data set."""

    model_config = ConfigDict(defer_build=True, frozen=True)

    code: str
    message: str
    source: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.source or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        return f"{where}: {self.message}" if where else self.message


class InvalidParametersError(GraniteTunerError, ValueError):
    """A parameter is missing or out of range; `field` names it. Nothing was sent."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TuningError(GraniteTunerError):
    """A tuning run did not give a model; `run_id` says which run, when there is one."""

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class TuningFailedError(TuningError):
    """The run ended `failed` or `canceled`. `result` holds everything known about it."""

    def __init__(self, message: str, *, run_id: str, result: Any = None) -> None:
        super().__init__(message, run_id=run_id)
        self.result = result


class TuningTimeoutError(TuningError, TimeoutError):
    """The caller's timeout passed before the run finished. The run itself goes on (unless
    cancelling was asked for): attach to it again later with its `run_id`."""


class RunNotFoundError(TuningError, LookupError):
    """There is no tuning run with the given id or name."""


class ResumeError(TuningError):
    """A local run cannot be resumed as asked. Nothing was changed: not the run's record, not
    its checkpoints."""


class RunFinishedError(ResumeError):
    """The run completed, so there is nothing to resume; deploy it (or one of its
    checkpoints) instead, or start a new run."""


class RunInUseError(ResumeError):
    """Another process, or this client, is training the run now (it holds the run's lock)."""


class ResumeMismatchError(ResumeError, ValueError):
    """The resume asked for other parameters or another base model than the run was started
    with; a run only goes on with its own settings."""


class NoCheckpointError(ResumeError):
    """The run has no whole checkpoint to go on from (it died before its first one, or every
    one failed its checksum)."""


class DeploymentError(GraniteTunerError):
    """A deployment did not become ready; `deployment_id` says which one."""

    def __init__(self, message: str, *, deployment_id: str | None = None) -> None:
        super().__init__(message)
        self.deployment_id = deployment_id


class DeploymentFailedError(DeploymentError):
    """The service reports the deployment `failed`."""


class DeploymentTimeoutError(DeploymentError, TimeoutError):
    """The caller's timeout passed before the deployment was ready; it may still become ready."""


class GenerationError(GraniteTunerError):
    """Generation failed for this request (the model raised, or the client closed first).

    `deployment_id` says which deployment served it (`None` for a base model); the model's own
    exception, if any, is the `__cause__`.
    """

    def __init__(
        self, message: str, *, deployment_id: str | None = None, model_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.deployment_id = deployment_id
        self.model_id = model_id


class DeploymentNotFoundError(DeploymentError, LookupError):
    """There is no deployment with that id (a local deployment lives only as long as its client)."""


class APIError(GraniteTunerError):
    """A request to the service failed.

    `may_have_been_processed` tells whether the service may have acted on the request
    even though we have no answer: true for dropped connections after sending, read
    timeouts, 5xx answers and success statuses with a broken body. A create is never
    repeated blindly when it is true. Whether and when a request is retried is decided in
    one place, `granite_tuner._retry.decide`, from these facts.
    """

    may_have_been_processed: bool = False
    #: The request tag of a create this error interrupted (the object may exist under it).
    request_tag: str | None = None

    def __init__(self, message: str, *, method: str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.method = method
        self.url = redact(url) if url is not None else None

    def add_request_tag(self, request_tag: str, how_to_find: str) -> None:
        """Mark a create that may have reached the service: its tag, and how to find it."""
        self.request_tag = request_tag
        self.message = redact(f"{self.message} {how_to_find}")
        self.args = (self.message,)


class APIConnectionError(APIError):
    """No usable answer arrived: connection refused or dropped, TLS failure, broken body.

    `transient` is false for failures that trying again cannot fix (a certificate that
    does not verify, an unknown transport error).
    """

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        url: str | None = None,
        may_have_been_processed: bool = False,
        transient: bool = True,
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.may_have_been_processed = may_have_been_processed
        self.transient = transient


class APITimeoutError(APIConnectionError):
    """The service did not answer within the configured timeout."""


class UnexpectedResponseError(APIError):
    """The service answered with success but the body was not what the protocol promises."""

    may_have_been_processed = True  # a success status: the service did act

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        url: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.status_code = status_code


class APIStatusError(APIError):
    """The service answered with an error status.

    Carries the status, the parsed `errors[]` and the `trace` id to quote to IBM support.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        method: str | None = None,
        url: str | None = None,
        errors: tuple[ServiceErrorDetail, ...] = (),
        trace: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.status_code = status_code
        self.errors = errors
        self.trace = redact(trace) if trace is not None else None
        self.retry_after = retry_after

    @property
    def codes(self) -> tuple[str, ...]:
        """The service's error codes, e.g. `("authentication_token_expired",)`."""
        return tuple(e.code for e in self.errors if e.code)


class BadRequestError(APIStatusError):
    """400: the service rejected the request's content."""


class AuthenticationError(APIStatusError):
    """401, or the IAM API-key exchange was refused."""


class PermissionDeniedError(APIStatusError):
    """403: the credentials are valid but may not touch this project, space or object."""


class NotFoundError(APIStatusError):
    """404: no such object (or it was deleted)."""


class ConflictError(APIStatusError):
    """409: the object already exists or is in a state that forbids the request."""


class RateLimitError(APIStatusError):
    """429: too many requests, still after the retry budget."""


class ServerError(APIStatusError):
    """5xx: the service failed, still after the retry budget."""

    may_have_been_processed = True
