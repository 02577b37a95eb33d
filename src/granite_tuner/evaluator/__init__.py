"""Score any async `prompt -> text` target on a labelled set, and compare targets."""

from granite_tuner.evaluator._evaluator import (
    EvaluationData,
    Evaluator,
    LabelParserSpec,
    ProgressCallback,
    ResultStream,
    SupportsGenerate,
    Target,
)

__all__ = [
    "EvaluationData",
    "Evaluator",
    "LabelParserSpec",
    "ProgressCallback",
    "ResultStream",
    "SupportsGenerate",
    "Target",
]
