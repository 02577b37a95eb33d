"""What an evaluation produces: per-item results, metrics, and comparisons, ready to keep or share.

These are plain pydantic models, so a report survives a JSON round-trip unchanged and can be
reloaded later to compare with a new run. Each report exports itself the ways people read
results: `to_json` (everything), `to_csv` and `to_pandas` (one row per item, for digging into
mistakes), `to_markdown` (the numbers, for a pull request or a notebook), and `summary_to_csv` /
`summary_to_pandas` (one row per target: the scores with their Wilson 95% intervals and
McNemar's p-value). Files are written atomically: a reader never sees half a report, and a
crash never leaves one behind.

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

from granite_tuner import _html
from granite_tuner._files import write_atomic

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ITEM_COLUMNS",
    "SUMMARY_COLUMNS",
    "ComparisonReport",
    "ConfidenceInterval",
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


#: The columns of `summary_to_csv` / `summary_to_pandas`: one row per target, the headline
#: scores with their Wilson 95% intervals and, for a target compared with the baseline, the
#: differences and McNemar's p-value (empty for the baseline itself).
SUMMARY_COLUMNS = (
    "target",
    "baseline",
    "items",
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "precision",
    "precision_ci_low",
    "precision_ci_high",
    "recall",
    "recall_ci_low",
    "recall_ci_high",
    "f1",
    "failed",
    "unparsed",
    "accuracy_difference",
    "f1_difference",
    "mcnemar_p",
)


class ConfidenceInterval(BaseModel):
    """A confidence interval for a proportion: `low <= value <= high`, at `confidence`.

    Built by `granite_tuner.metrics.wilson_interval` from `successes` out of `trials`; with no
    trials at all nothing is known, and the interval is the whole range [0, 1].
    """

    model_config = ConfigDict(defer_build=True, frozen=True)

    low: float
    high: float
    confidence: float = 0.95
    successes: int
    trials: int
    method: Literal["wilson"] = "wilson"

    def __str__(self) -> str:
        return f"[{self.low:.3f}, {self.high:.3f}]"


class ItemResult(BaseModel):
    """The outcome of one example on one target.

    Either the target answered (`output` holds its raw text, `predicted` the label parsed from
    it, or None when no label could be read), or the call failed (`error` and `error_type` say
    why, `output` and `predicted` are None). `correct` is true only for a parsed label equal to
    `expected`. `attempts` counts the HTTP attempts the call took (1 when nothing was counted).
    """

    model_config = ConfigDict(defer_build=True, frozen=True)

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

    model_config = ConfigDict(defer_build=True, frozen=True)

    precision: float
    recall: float
    f1: float


class LabelScores(Scores):
    """Scores of one label, and how many examples have it as their expected output.

    `precision_ci` and `recall_ci` are Wilson 95% intervals (None in reports written before
    they were computed).
    """

    label: str
    support: int
    precision_ci: ConfidenceInterval | None = None
    recall_ci: ConfidenceInterval | None = None


class Counts(BaseModel):
    """Where the items ended: answered or failed, and of the answered, parsed or not."""

    model_config = ConfigDict(defer_build=True, frozen=True)

    total: int
    completed: int  # the target answered
    failed: int  # the call failed (error, timeout); counted as wrong
    unparsed: int  # answered, but no label could be read from the answer; counted as wrong
    correct: int


class LatencyStats(BaseModel):
    """Seconds per answered call (failed calls are left out); None when nothing was answered."""

    model_config = ConfigDict(defer_build=True, frozen=True)

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

    `accuracy_ci`, `precision_ci` and `recall_ci` are Wilson 95% intervals: on 120 examples an
    accuracy of 0.93 is known to about ±5 points, and these say so. Precision and recall have
    one only under the "binary" average (a macro average is not one proportion; each label's
    own interval is in `per_label`). They are None in reports written before they were
    computed.
    """

    model_config = ConfigDict(defer_build=True, frozen=True)

    accuracy: float
    precision: float
    recall: float
    f1: float
    accuracy_ci: ConfidenceInterval | None = None
    precision_ci: ConfidenceInterval | None = None
    recall_ci: ConfidenceInterval | None = None
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

    model_config = ConfigDict(defer_build=True, frozen=True)

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

    model_config = ConfigDict(defer_build=True, frozen=True)

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

    def summary_to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the headline scores and their 95% intervals (`SUMMARY_COLUMNS`), atomically."""
        return _write_atomically(path, _summary_csv(self._summary_rows()))

    def summary_to_pandas(self) -> pd.DataFrame:
        """The headline scores and their 95% intervals as a one-row DataFrame."""
        return _summary_frame(self._summary_rows())

    def to_markdown(self) -> str:
        """The metrics (with Wilson 95% intervals) and the confusion matrix as Markdown tables."""
        m = self.metrics
        rows = [
            ("items", str(m.counts.total), ""),
            ("accuracy", _number(m.accuracy), _interval(m.accuracy_ci)),
            (f"precision ({_average_name(m)})", _number(m.precision), _interval(m.precision_ci)),
            (f"recall ({_average_name(m)})", _number(m.recall), _interval(m.recall_ci)),
            (f"F1 ({_average_name(m)})", _number(m.f1), ""),
        ]
        if m.average == "binary":
            rows.append(("F1 (macro)", _number(m.macro.f1), ""))
        rows += [
            ("F1 (weighted)", _number(m.weighted.f1), ""),
            ("failed", str(m.counts.failed), ""),
            ("unparsed", str(m.counts.unparsed), ""),
            ("latency mean (s)", _seconds(m.latency.mean_s), ""),
            ("latency median (s)", _seconds(m.latency.median_s), ""),
            ("latency p95 (s)", _seconds(m.latency.p95_s), ""),
        ]
        metrics_table = _table(["metric", self.target, "95% CI (Wilson)"], rows)
        confusion = _table(
            ["expected \\ predicted", *m.columns],
            [
                (label, *(str(n) for n in row))
                for label, row in zip(m.labels, m.confusion_matrix, strict=True)
            ],
        )
        return f"{metrics_table}\n\nConfusion matrix ({self.target}):\n\n{confusion}\n"

    def _summary_rows(self) -> list[dict[str, object]]:
        return [_summary_row(self.target, self.metrics, baseline=False, comparison=None)]

    def __repr__(self) -> str:
        m = self.metrics
        return (
            f"EvaluationReport(target={self.target!r}, items={m.counts.total}, "
            f"accuracy={m.accuracy:.4f}{_bracketed(m.accuracy_ci)}, f1={m.f1:.4f}, "
            f"failed={m.counts.failed}, unparsed={m.counts.unparsed})"
        )

    def __str__(self) -> str:
        return repr(self)

    def _repr_html_(self) -> str:
        """The scores with their 95% intervals and the confusion matrix, for Jupyter."""
        m = self.metrics
        average = _average_name(m)
        scores = _html.grid(
            ["metric", "value", "95% CI (Wilson)"],
            [
                ("items", m.counts.total, ""),
                ("accuracy", _number(m.accuracy), _interval(m.accuracy_ci)),
                (f"precision ({average})", _number(m.precision), _interval(m.precision_ci)),
                (f"recall ({average})", _number(m.recall), _interval(m.recall_ci)),
                (f"F1 ({average})", _number(m.f1), ""),
                ("failed", m.counts.failed, ""),
                ("unparsed", m.counts.unparsed, ""),
                ("latency median (s)", _seconds(m.latency.median_s), ""),
            ],
        )
        return str(_html.block(f"Evaluation of {self.target}", scores, _confusion_html(m)))


class ComparisonReport(BaseModel):
    """Several targets on the same examples, each compared with the baseline."""

    model_config = ConfigDict(defer_build=True, frozen=True)

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

    def summary_to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write one row per target (`SUMMARY_COLUMNS`): scores, 95% intervals, McNemar p."""
        return _write_atomically(path, _summary_csv(self._summary_rows()))

    def summary_to_pandas(self) -> pd.DataFrame:
        """One row per target: scores, their 95% intervals, differences and McNemar's p."""
        return _summary_frame(self._summary_rows())

    def to_markdown(self) -> str:
        """One row per target (with 95% intervals), then each difference and its p-value."""
        targets = _table(
            [
                "target",
                "accuracy",
                "accuracy 95% CI",
                "F1",
                "precision",
                "precision 95% CI",
                "recall",
                "recall 95% CI",
                "failed",
                "unparsed",
            ],
            self._target_rows(),
        )
        if not self.comparisons:
            return f"{targets}\n\n{_CI_NOTE}\n"
        differences = _table(
            ["comparison", "Δ accuracy", "Δ F1", "b", "c", "McNemar p"],
            [_difference_row(c) for c in self.comparisons],
        )
        return f"{targets}\n\n{differences}\n\n{_CI_NOTE} {_MCNEMAR_NOTE}\n"

    def _all_items(self) -> list[ItemResult]:
        return [item for report in self.reports.values() for item in report.items]

    def __repr__(self) -> str:
        accuracy = {name: round(r.metrics.accuracy, 4) for name, r in self.reports.items()}
        p_values = {c.target: float(f"{c.p_value:.4g}") for c in self.comparisons}
        return (
            f"ComparisonReport(baseline={self.baseline!r}, items="
            f"{_item_count(self)}, accuracy={accuracy}, mcnemar_p={p_values})"
        )

    def __str__(self) -> str:
        return repr(self)

    def _repr_html_(self) -> str:
        """One row per target (scores, 95% intervals), then each difference, for Jupyter."""
        targets = _html.grid(
            [
                "target",
                "accuracy",
                "95% CI",
                "F1",
                "precision",
                "95% CI",
                "recall",
                "95% CI",
                "failed",
                "unparsed",
            ],
            self._target_rows(),
        )
        differences = _html.grid(
            ["comparison", "Δ accuracy", "Δ F1", "b", "c", "McNemar p", ""],
            [
                (*_difference_row(c), "significant" if c.significant() else "not significant")
                for c in self.comparisons
            ],
        )
        parts = [targets, differences] if self.comparisons else [targets]
        return str(_html.block("Comparison", *parts, f"{_CI_NOTE} {_MCNEMAR_NOTE}"))

    def _target_rows(self) -> list[tuple[str, ...]]:
        """One row per target for the tables: scores, their 95% intervals, failures."""
        return [
            (
                name + (" (baseline)" if name == self.baseline else ""),
                _number(r.metrics.accuracy),
                _interval(r.metrics.accuracy_ci),
                _number(r.metrics.f1),
                _number(r.metrics.precision),
                _interval(r.metrics.precision_ci),
                _number(r.metrics.recall),
                _interval(r.metrics.recall_ci),
                str(r.metrics.counts.failed),
                str(r.metrics.counts.unparsed),
            )
            for name, r in self.reports.items()
        ]

    def _summary_rows(self) -> list[dict[str, object]]:
        by_target = {c.target: c for c in self.comparisons}
        return [
            _summary_row(
                name,
                report.metrics,
                baseline=name == self.baseline,
                comparison=by_target.get(name),
            )
            for name, report in self.reports.items()
        ]


# --- rendering and writing ---------------------------------------------------------------------

_CI_NOTE = "95% CI: Wilson score interval."
_MCNEMAR_NOTE = (
    "b: baseline right and target wrong; c: baseline wrong and target right; "
    "McNemar p: exact two-sided test of b against c."
)


def _difference_row(c: PairwiseComparison) -> tuple[str, ...]:
    """A comparison's row in the tables: the differences, McNemar's b and c, and p."""
    return (
        f"{c.target} vs {c.baseline}",
        _signed(c.accuracy_difference),
        _signed(c.f1_difference),
        str(c.b),
        str(c.c),
        f"{c.p_value:.4g}",
    )


def _number(value: float) -> str:
    return f"{value:.4f}"


def _signed(value: float) -> str:
    return f"{value:+.4f}"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _interval(interval: ConfidenceInterval | None) -> str:
    return "n/a" if interval is None else f"{interval.low:.4f} – {interval.high:.4f}"


def _bracketed(interval: ConfidenceInterval | None) -> str:
    return "" if interval is None else f" [{interval.low:.4f}, {interval.high:.4f}]"


def _item_count(report: ComparisonReport) -> int:
    return next((r.metrics.counts.total for r in report.reports.values()), 0)


def _confusion_html(m: Metrics) -> _html.Html:
    matrix = _html.grid(
        ["expected \\ predicted", *m.columns],
        [(label, *row) for label, row in zip(m.labels, m.confusion_matrix, strict=True)],
    )
    return _html.block("Confusion matrix", matrix)


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


def _summary_row(
    target: str, m: Metrics, *, baseline: bool, comparison: PairwiseComparison | None
) -> dict[str, object]:
    """One row of `SUMMARY_COLUMNS`; what is not known (no interval, no comparison) is None."""

    def ends(interval: ConfidenceInterval | None) -> tuple[float | None, float | None]:
        return (None, None) if interval is None else (interval.low, interval.high)

    row: dict[str, object] = {"target": target, "baseline": baseline, "items": m.counts.total}
    for name, value, interval in (
        ("accuracy", m.accuracy, m.accuracy_ci),
        ("precision", m.precision, m.precision_ci),
        ("recall", m.recall, m.recall_ci),
    ):
        row[name] = value
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = ends(interval)
    row.update(
        f1=m.f1,
        failed=m.counts.failed,
        unparsed=m.counts.unparsed,
        accuracy_difference=comparison.accuracy_difference if comparison else None,
        f1_difference=comparison.f1_difference if comparison else None,
        mcnemar_p=comparison.p_value if comparison else None,
    )
    return row


def _summary_csv(rows: Sequence[dict[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _summary_frame(rows: Sequence[dict[str, object]]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(list(rows), columns=list(SUMMARY_COLUMNS))


def _items_frame(items: Sequence[ItemResult]) -> pd.DataFrame:
    import pandas as pd  # optional: only needed by the caller who asks for a DataFrame

    return pd.DataFrame([item.model_dump() for item in items], columns=list(ITEM_COLUMNS))


def _write_atomically(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` as UTF-8, atomically."""
    return write_atomic(path, text.encode("utf-8"))
