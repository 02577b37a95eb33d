"""granite-tuner: async, typed prompt tuning for IBM Granite models, on watsonx.ai or offline.

```python
from granite_tuner import WatsonxClient

async with WatsonxClient.from_env() as client:
    tunable = await client.foundation_models.list(prompt_tunable=True)
```
"""

import logging

from granite_tuner._version import __version__
from granite_tuner.backends.watsonx import RetryPolicy, WatsonxClient
from granite_tuner.data import Example, LabelledSet, aload_examples, load_examples
from granite_tuner.deployment import Deployment
from granite_tuner.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    DataProblem,
    DeploymentError,
    DeploymentFailedError,
    DeploymentNotFoundError,
    DeploymentTimeoutError,
    GraniteTunerError,
    InvalidDataError,
    InvalidParametersError,
    NoCheckpointError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResumeError,
    ResumeMismatchError,
    RunFinishedError,
    RunInUseError,
    RunNotFoundError,
    ServerError,
    ServiceErrorDetail,
    TuningError,
    TuningFailedError,
    TuningTimeoutError,
    UnexpectedResponseError,
    UnsupportedFeatureError,
)
from granite_tuner.evaluator import Evaluator, ResultStream
from granite_tuner.events import (
    EpochCompleted,
    RunFinished,
    RunSubmitted,
    StateChanged,
    StepLogged,
    TuningEvent,
)
from granite_tuner.generation import GenerationParameters, GenerationResult
from granite_tuner.limits import RateLimiter
from granite_tuner.metrics import TokenLabelParser, mcnemar_exact
from granite_tuner.parameters import TASK_IDS, PromptTuningParameters, TaskId
from granite_tuner.reports import ComparisonReport, EvaluationReport, ItemResult
from granite_tuner.runs import CheckpointInfo, MetricPoint, TuningResult, TuningRun
from granite_tuner.tuner import Tuner

__all__ = [
    "TASK_IDS",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "CheckpointInfo",
    "ComparisonReport",
    "ConfigurationError",
    "ConflictError",
    "DataProblem",
    "Deployment",
    "DeploymentError",
    "DeploymentFailedError",
    "DeploymentNotFoundError",
    "DeploymentTimeoutError",
    "EpochCompleted",
    "EvaluationReport",
    "Evaluator",
    "Example",
    "GenerationParameters",
    "GenerationResult",
    "GraniteTunerError",
    "InvalidDataError",
    "InvalidParametersError",
    "ItemResult",
    "LabelledSet",
    "MetricPoint",
    "NoCheckpointError",
    "NotFoundError",
    "PermissionDeniedError",
    "PromptTuningParameters",
    "RateLimitError",
    "RateLimiter",
    "ResultStream",
    "ResumeError",
    "ResumeMismatchError",
    "RetryPolicy",
    "RunFinished",
    "RunFinishedError",
    "RunInUseError",
    "RunNotFoundError",
    "RunSubmitted",
    "ServerError",
    "ServiceErrorDetail",
    "StateChanged",
    "StepLogged",
    "TaskId",
    "TokenLabelParser",
    "Tuner",
    "TuningError",
    "TuningEvent",
    "TuningFailedError",
    "TuningResult",
    "TuningRun",
    "TuningTimeoutError",
    "UnexpectedResponseError",
    "UnsupportedFeatureError",
    "WatsonxClient",
    "__version__",
    "aload_examples",
    "load_examples",
    "mcnemar_exact",
]


def __getattr__(name: str) -> object:
    """`granite_tuner.LocalClient` without importing torch for users who never touch it."""
    if name == "LocalClient":
        from granite_tuner.backends.local import LocalClient

        return LocalClient
    raise AttributeError(f"module 'granite_tuner' has no attribute {name!r}")


# A library does not configure logging; an application that wants our records adds a handler.
logging.getLogger("granite_tuner").addHandler(logging.NullHandler())
