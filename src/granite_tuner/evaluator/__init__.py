"""Score any async `prompt -> text` target on a labelled set, and compare targets.

The payoff of prompt tuning is the comparison: does the tuned model beat its base, by how much,
and is the difference real? `Evaluator` answers it for whatever can answer a prompt: a tuned
deployment, a base model id called through a client, or any async function.

How a run works, and why:

- **Bounded.** One producer task reads the examples (a list, a file, or a lazy iterator of
  100,000) and feeds a small bounded channel; a fixed pool of `max_concurrency` worker tasks
  takes work from it. There is never one task per prompt, and a lazy input is never read ahead
  by more than the channel holds. With several targets each example becomes one work item per
  target, in the same order, so the targets advance together and share the client's limits.
- **Nothing lost.** Every item ends in exactly one `ItemResult`: the answer, or the failure
  (`error`, `error_type`) when the target raised or missed `item_timeout`. A failing target
  never stops the run; only cancellation (and other `BaseException`s) does, and cancelling
  cancels every call in flight and leaves no task behind.
- **Memory.** `evaluate`/`compare` keep the items for their reports. `stream` hands each item
  to the caller and keeps only a few bytes per item (labels as small integer codes, latency),
  enough for the metrics and the paired McNemar test.
- **Labels.** Answers are parsed into labels (`granite_tuner.metrics`). When the examples come
  lazily and `labels` is not given, labels are learned as examples are read, and item `i` is
  parsed against the labels of items `0..i` only, so the result never depends on timing.
"""

# One module per concern; each imports only those listed after it:
#   _evaluator  the public Evaluator and ResultStream
#   _run        one run: producer, bounded channel, worker pool, per-item answers
#   _targets    turning a target (model id, object with generate, async function) into a call
#   _inputs     opening the data (set, file, list, DataFrame, lazy iterable) and checking items
#   _labels     the known labels and how answers are parsed into them
#   _tally      label codes per item, and the reports and comparisons computed from them
# Names with a leading underscore are private to this package.

from granite_tuner.evaluator._evaluator import Evaluator, ProgressCallback, ResultStream
from granite_tuner.evaluator._inputs import EvaluationData
from granite_tuner.evaluator._labels import LabelParserSpec
from granite_tuner.evaluator._targets import SupportsGenerate, Target

__all__ = [
    "EvaluationData",
    "Evaluator",
    "LabelParserSpec",
    "ProgressCallback",
    "ResultStream",
    "SupportsGenerate",
    "Target",
]
