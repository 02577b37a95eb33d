"""Tallying and scoring: the few bytes per item the metrics need, and the reports built from them.

Why a module of its own: a streamed run of 100,000 items keeps no items, only label codes and
latencies per target; the metrics, the comparisons with the baseline (McNemar) and the reports
are computed from that tally alone. Imports nothing from this package.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime

from granite_tuner.metrics import compare_to_baseline, compute_metrics
from granite_tuner.reports import ComparisonReport, EvaluationReport, ItemResult


class _Tally:
    """What the metrics need, a few bytes per item: label codes per example and per target.

    Predictions arrive in completion order, so each target's arrays are indexed by example
    and grow as results come in (they lag the producer by at most the channel's size).
    """

    _PENDING, _FAILED, _UNPARSED = -3, -2, -1

    def __init__(self, names: Sequence[str]) -> None:
        self._codes: dict[str, int] = {}
        self._labels: list[str] = []
        self._expected = array("i")
        self._predicted = {name: array("i") for name in names}
        self._latency = {name: array("d") for name in names}

    def _code(self, label: str) -> int:
        code = self._codes.get(label)
        if code is None:
            code = self._codes[label] = len(self._labels)
            self._labels.append(label)
        return code

    def add_example(self, expected: str) -> None:
        self._expected.append(self._code(expected))

    def record(
        self, name: str, index: int, predicted: str | None, *, failed: bool, latency: float
    ) -> None:
        codes, seconds = self._predicted[name], self._latency[name]
        if len(codes) <= index:
            missing = index + 1 - len(codes)
            codes.extend([self._PENDING] * missing)
            seconds.extend([math.nan] * missing)
        if failed:
            codes[index] = self._FAILED
        else:
            codes[index] = self._UNPARSED if predicted is None else self._code(predicted)
        seconds[index] = latency

    def y_true(self) -> list[str]:
        return [self._labels[code] for code in self._expected]

    def y_pred(self, name: str) -> list[str | None]:
        codes = self._completed(name)
        return [self._labels[code] if code >= 0 else None for code in codes]

    def failed(self, name: str) -> int:
        return self._completed(name).count(self._FAILED)

    def latencies(self, name: str) -> Iterator[float]:
        codes = self._completed(name)
        return (s for c, s in zip(codes, self._latency[name], strict=True) if c != self._FAILED)

    def correct(self, name: str) -> list[bool]:
        codes = self._completed(name)
        return [p >= 0 and p == e for p, e in zip(codes, self._expected, strict=True)]

    def _completed(self, name: str) -> array[int]:
        codes = self._predicted[name]
        if len(codes) != len(self._expected) or self._PENDING in codes:
            raise RuntimeError(f"Results are missing for {name}: the run did not finish.")
        return codes


def _build_reports(
    tally: _Tally,
    names: Sequence[str],
    items: Mapping[str, list[ItemResult]] | None,
    baseline: str,
    *,
    labels: Sequence[str] | None,
    positive_label: str,
    started_at: datetime,
    finished_at: datetime,
) -> ComparisonReport:
    """The report of each target and its comparison with the baseline, from the tally."""
    y_true = tally.y_true()
    reports: dict[str, EvaluationReport] = {}
    for name in names:
        metrics = compute_metrics(
            y_true,
            tally.y_pred(name),
            labels=labels,
            positive_label=positive_label,
            failed=tally.failed(name),
            latencies=tally.latencies(name),
        )
        kept = sorted(items[name], key=lambda i: i.index) if items is not None else []
        reports[name] = EvaluationReport(
            target=name,
            metrics=metrics,
            items=kept,
            started_at=started_at,
            finished_at=finished_at,
        )
    base = reports[baseline]
    comparisons = [
        compare_to_baseline(
            baseline,
            other,
            base.metrics,
            report.metrics,
            tally.correct(baseline),
            tally.correct(other),
        )
        for other, report in reports.items()
        if other != baseline
    ]
    return ComparisonReport(
        baseline=baseline,
        reports=reports,
        comparisons=comparisons,
        started_at=started_at,
        finished_at=finished_at,
    )
