"""granite-tuner: async, typed prompt tuning for IBM Granite models, on watsonx.ai or offline.

```python
from granite_tuner import WatsonxClient

async with WatsonxClient.from_env() as client:
    tunable = await client.foundation_models.list(prompt_tunable=True)
```
"""

import logging

from granite_tuner._version import __version__
from granite_tuner.backends.watsonx import (
    DataAsset,
    Deployment,
    FoundationModel,
    GenerationResult,
    RetryPolicy,
    Training,
    TrainingMetric,
    WatsonxClient,
)
from granite_tuner.data import Example, LabelledSet, aload_examples, load_examples
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
    GraniteTunerError,
    InvalidDataError,
    InvalidParametersError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServiceErrorDetail,
    UnexpectedResponseError,
)
from granite_tuner.parameters import TASK_IDS, PromptTuningParameters, TaskId

__all__ = [
    "TASK_IDS",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ConflictError",
    "DataAsset",
    "DataProblem",
    "Deployment",
    "Example",
    "FoundationModel",
    "GenerationResult",
    "GraniteTunerError",
    "InvalidDataError",
    "InvalidParametersError",
    "LabelledSet",
    "NotFoundError",
    "PermissionDeniedError",
    "PromptTuningParameters",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "ServiceErrorDetail",
    "TaskId",
    "Training",
    "TrainingMetric",
    "UnexpectedResponseError",
    "WatsonxClient",
    "__version__",
    "aload_examples",
    "load_examples",
]

# A library does not configure logging; an application that wants our records adds a handler.
logging.getLogger("granite_tuner").addHandler(logging.NullHandler())
