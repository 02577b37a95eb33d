"""granite-tuner: async, typed prompt tuning for IBM Granite models, on watsonx.ai or offline.

```python
from granite_tuner import WatsonxClient

async with WatsonxClient.from_env() as client:
    tunable = await client.foundation_models.list(prompt_tunable=True)
```
"""

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
    GraniteTunerError,
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
    "Deployment",
    "FoundationModel",
    "GenerationResult",
    "GraniteTunerError",
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
