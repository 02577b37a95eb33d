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

__all__ = [
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
    "FoundationModel",
    "GenerationResult",
    "GraniteTunerError",
    "InvalidDataError",
    "InvalidParametersError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "ServiceErrorDetail",
    "Training",
    "TrainingMetric",
    "UnexpectedResponseError",
    "WatsonxClient",
    "__version__",
]

# A library does not configure logging; an application that wants our records adds a handler.
logging.getLogger("granite_tuner").addHandler(logging.NullHandler())
