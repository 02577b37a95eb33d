"""Labelled example sets: load, check and normalise training and evaluation data."""

from granite_tuner.data._reading import (
    TRAINING_LIMITS,
    DataFormat,
    Example,
    LabelledSet,
    Purpose,
    TrainingLimits,
    aload_examples,
    load_examples,
)

__all__ = [
    "TRAINING_LIMITS",
    "DataFormat",
    "Example",
    "LabelledSet",
    "Purpose",
    "TrainingLimits",
    "aload_examples",
    "load_examples",
]
