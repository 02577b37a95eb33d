"""The watsonx.ai backend: an async REST client for IBM watsonx.ai (httpx, pydantic, anyio)."""

from granite_tuner._retry import RetryPolicy
from granite_tuner.backends.watsonx.client import WatsonxClient
from granite_tuner.backends.watsonx.models import (
    DataAsset,
    Deployment,
    FoundationModel,
    Training,
    TrainingMetric,
)
from granite_tuner.generation import GenerationResult

__all__ = [
    "DataAsset",
    "Deployment",
    "FoundationModel",
    "GenerationResult",
    "RetryPolicy",
    "Training",
    "TrainingMetric",
    "WatsonxClient",
]
