"""Labelled example sets: load, check and normalise training and evaluation data.

A prompt-tuning run costs money and hours; a typo in its training file should cost neither.
`load_examples` reads a file (JSONL, JSON array or CSV), a list of dicts or a pandas DataFrame and
checks everything watsonx.ai needs (protocol §6) before anything is uploaded. It either returns a
`LabelledSet` or raises one `InvalidDataError` that lists every problem found (up to a cap), each
with its file, line and field and what to fix. Findings that do not stop a run (duplicates, class
imbalance, inputs likely to be truncated, numbers read as labels, ignored keys) are kept in
`LabelledSet.warnings` and logged on the `granite_tuner.data` logger.

What is uploaded is `LabelledSet.to_jsonl()`, never the original file, so what was checked is
exactly what is sent, whatever format it came in.
"""

# One module per concern, each importing only those above it in this list:
#   _model    Example, LabelledSet, TrainingLimits (imports nothing from this package)
#   _report   the validation report that readers and rules add problems and warnings to
#   _reading  files, lists and DataFrames into raw records (JSON Lines, JSON array, CSV)
#   _rules    what a valid example is, and the whole-set warnings
#   _loading  load_examples / aload_examples: the pipeline that ties the others together
# Names with a leading underscore are private to this package.

from granite_tuner.data._loading import aload_examples, load_examples
from granite_tuner.data._model import (
    TRAINING_LIMITS,
    DataFormat,
    Example,
    LabelledSet,
    Purpose,
    TrainingLimits,
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
