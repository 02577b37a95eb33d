"""What an evaluation produces: per-item results, metrics, and comparisons, ready to keep or share.

These are plain pydantic models, so a report survives a JSON round-trip unchanged and can be
reloaded later to compare with a new run. Each report exports itself the ways people read
results: `to_json` (everything), `to_csv` and `to_pandas` (one row per item, for digging into
mistakes), `to_markdown` (the numbers, for a pull request or a notebook). Files are written
atomically: a reader never sees half a report, and a crash never leaves one behind.

The numbers are computed in `granite_tuner.metrics`; this module only holds and renders them.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from granite_tuner._files import write_atomic

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ITEM_COLUMNS",
    "ComparisonReport",
    "Counts",
    "EvaluationReport",
    "ItemResult",
    "LabelScores",
    "LatencyStats",
    "Metrics",
    "PairwiseComparison",
    "Scores",
]

#: The columns of `to_csv` / `to_pandas`, in order: the fields of `ItemResult`.
ITEM_COLUMNS = (
    "index",
    "target",
    "input",
    "expected",
    "output",
    "predicted",
    "correct",
    "latency_s",
    "attempts",
    "error",
    "error_type",
)


class ItemResult(BaseModel):
    """The outcome of one example on one target.

    Either the target answered (`output` holds its raw text, `predicted` the label parsed from
    it, or None when no label could be read), or the call failed (`error` and `error_type` say
    why, `output` and `predicted` are None). `correct` is true only for a parsed label equal to
    `expected`. `attempts` counts the HTTP attempts the call took (1 when nothing was counted).
    """

    model_config = ConfigDict(frozen=True)

    index: int
    target: str
    input: str
    expected: str
    output: str | None = None
    predicted: str | None = None
    correct: bool = False
    latency_s: float
    attempts: int = 1
    error: str | None = None
    error_type: str | None = None

    @property
    def failed(self) -> bool:
        """Whether the call itself failed (as opposed to answering something unparseable)."""
        return self.error_type is not None


class Scores(BaseModel):
    """Precision, recall and F1 under one averaging."""

    model_config = ConfigDict(frozen=True)

    precision: float
    recall: float
    f1: float


class LabelScores(Scores):
    """Scores of one label, and how many examples have it as their expected output."""

    label: str
    support: int


class Counts(BaseModel):
    """Where the items ended: answered or failed, and of the answered, parsed or not."""

    model_config = ConfigDict(frozen=True)

    total: int
    completed: int  # the target answered
    failed: int  # the call failed (error, timeout); counted as wrong
    unparsed: int  # answered, but no label could be read from the answer; counted as wrong
    correct: int


class LatencyStats(BaseModel):
    """Seconds per answered call (failed calls are left out); None when nothing was answered."""

    model_config = ConfigDict(frozen=True)

    mean_s: float | None = None
    median_s: float | None = None
    p95_s: float | None = None


class Metrics(BaseModel):
    """Scores of one target on one labelled set.

    `precision`, `recall` and `f1` are the headline scores under `average`: "binary" (for
    `positive_label`) when there are exactly two labels and one is the positive label, "macro"
    otherwise. `macro` and `weighted` are always given too. Items that failed or could not be
    parsed count as wrong everywhere.

    `confusion_matrix[i][j]` counts examples whose expected label is `labels[i]` and whose
    prediction is `columns[j]`; `columns` is `labels` plus a last "unparsed" column (no label:
    unparsed or failed) when some item has no prediction.
    """

    model_config = ConfigDict(frozen=True)

    accuracy: float
    precision: float
    recall: float
    f1: float
    average: Literal["binary", "macro"]
    positive_label: str | None = None
    macro: Scores
    weighted: Scores
    per_label: list[LabelScores]
    labels: list[str]
    columns: list[str]
    confusion_matrix: list[list[int]]
    counts: Counts
    latency: LatencyStats


class PairwiseComparison(BaseModel):
    """One target against the baseline, paired example by example.

    Differences are `target - baseline`. The exact McNemar test looks only at the examples where
    the two disagree: `b` (baseline right, target wrong) and `c` (baseline wrong, target right).
    A small `p_value` says the difference in accuracy is unlikely to be chance.
    """

    model_config = ConfigDict(frozen=True)

    baseline: str
    target: str
    accuracy_difference: float
    f1_difference: float
    b: int
    c: int
    p_value: float

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the accuracy difference is significant at level `alpha`."""
        return self.p_value < alpha


class EvaluationReport(BaseModel):
    """One target's evaluation: its metrics and (unless it was streamed) every item's result."""

    model_config = ConfigDict(frozen=True)

    target: str
    metrics: Metrics
    items: list[ItemResult]
    started_at: datetime
    finished_at: datetime

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> EvaluationReport:
        """Read a report written by `to_json`."""
        return cls.model_validate_json(Path(path).read_bytes())

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the whole report as JSON, atomically; return the path."""
        return _write_atomically(path, self.model_dump_json(indent=2))

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write one row per item (a streamed report has none), atomically; return the path."""
        return _write_atomically(path, _items_csv(self.items))

    def to_pandas(self) -> pd.DataFrame:
        """The items as a DataFrame, one row each, columns as in `ITEM_COLUMNS`."""
        return _items_frame(self.items)

    def to_markdown(self) -> str:
        """The metrics and the confusion matrix as Markdown tables."""
        m = self.metrics
        rows = [
            ("items", str(m.counts.total)),
            ("accuracy", _number(m.accuracy)),
            (f"precision ({_average_name(m)})", _number(m.precision)),
            (f"recall ({_average_name(m)})", _number(m.recall)),
            (f"F1 ({_average_name(m)})", _number(m.f1)),
        ]
        if m.average == "binary":
            rows.append(("F1 (macro)", _number(m.macro.f1)))
        rows += [
            ("F1 (weighted)", _number(m.weighted.f1)),
            ("failed", str(m.counts.failed)),
            ("unparsed", str(m.counts.unparsed)),
            ("latency mean (s)", _seconds(m.latency.mean_s)),
            ("latency median (s)", _seconds(m.latency.median_s)),
            ("latency p95 (s)", _seconds(m.latency.p95_s)),
        ]
        metrics_table = _table(["metric", self.target], rows)
        confusion = _table(
            ["expected \\ predicted", *m.columns],
            [
                (label, *(str(n) for n in row))
                for label, row in zip(m.labels, m.confusion_matrix, strict=True)
            ],
        )
        return f"{metrics_table}\n\nConfusion matrix ({self.target}):\n\n{confusion}\n"


class ComparisonReport(BaseModel):
    """Several targets on the same examples, each compared with the baseline."""

    model_config = ConfigDict(frozen=True)

    baseline: str
    reports: dict[str, EvaluationReport]
    comparisons: list[PairwiseComparison]
    started_at: datetime
    finished_at: datetime

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> ComparisonReport:
        """Read a report written by `to_json`."""
        return cls.model_validate_json(Path(path).read_bytes())

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the whole report as JSON, atomically; return the path."""
        return _write_atomically(path, self.model_dump_json(indent=2))

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write one row per item and target (the `target` column says which), atomically."""
        return _write_atomically(path, _items_csv(self._all_items()))

    def to_pandas(self) -> pd.DataFrame:
        """Every target's items in one DataFrame (long format: a `target` column)."""
        return _items_frame(self._all_items())

    def to_markdown(self) -> str:
        """One row per target, then each difference from the baseline with its p-value."""
        targets = _table(
            ["target", "accuracy", "F1", "precision", "recall", "failed", "unparsed"],
            [
                (
                    name + (" (baseline)" if name == self.baseline else ""),
                    _number(r.metrics.accuracy),
                    _number(r.metrics.f1),
                    _number(r.metrics.precision),
                    _number(r.metrics.recall),
                    str(r.metrics.counts.failed),
                    str(r.metrics.counts.unparsed),
                )
                for name, r in self.reports.items()
            ],
        )
        if not self.comparisons:
            return targets + "\n"
        differences = _table(
            ["comparison", "Δ accuracy", "Δ F1", "b", "c", "McNemar p"],
            [
                (
                    f"{c.target} vs {c.baseline}",
                    _signed(c.accuracy_difference),
                    _signed(c.f1_difference),
                    str(c.b),
                    str(c.c),
                    f"{c.p_value:.4g}",
                )
                for c in self.comparisons
            ],
        )
        note = (
            "b: baseline right and target wrong; c: baseline wrong and target right; "
            "McNemar p: exact two-sided test of b against c."
        )
        return f"{targets}\n\n{differences}\n\n{note}\n"

    def _all_items(self) -> list[ItemResult]:
        return [item for report in self.reports.values() for item in report.items]


# --- rendering and writing ---------------------------------------------------------------------


def _number(value: float) -> str:
    return f"{value:.4f}"


def _signed(value: float) -> str:
    return f"{value:+.4f}"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _average_name(metrics: Metrics) -> str:
    if metrics.average == "binary":
        return f"binary, positive {metrics.positive_label!r}"
    return "macro"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _items_csv(items: Sequence[ItemResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ITEM_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for item in items:
        writer.writerow(item.model_dump())
    return buffer.getvalue()


def _items_frame(items: Sequence[ItemResult]) -> pd.DataFrame:
    import pandas as pd  # optional: only needed by the caller who asks for a DataFrame

    return pd.DataFrame([item.model_dump() for item in items], columns=list(ITEM_COLUMNS))


def _write_atomically(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` as UTF-8, atomically."""
    return write_atomic(path, text.encode("utf-8"))
