"""Scoring: read a label out of a model's answer, compute the metrics, test a difference.

A generative model answers in text — `" 1."`, `"1\\n\\nComment: ..."`, `"Satisfied"` — so the
first step is reading the label it meant (`TokenLabelParser`, or any `LabelParser` of the
caller's). An answer with no label in it is a *parse failure*: it stays visible in the counts and
in an extra "unparsed" column of the confusion matrix, and counts as wrong.

The metrics themselves come from scikit-learn, called so that the numbers equal what a user gets
from scikit-learn directly with unparsed answers replaced by a label that is never right. The
exact McNemar test says whether two targets' accuracies differ by more than chance, from the
examples on which exactly one of them is right; it is computed with exact integers, so it stays
exact for thousands of disagreements. Accuracy, precision and recall come with a Wilson
score interval (`wilson_interval`), so a small test set's uncertainty is in the report.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from granite_tuner.errors import ConfigurationError
from granite_tuner.reports import (
    ConfidenceInterval,
    Counts,
    LabelScores,
    LatencyStats,
    Metrics,
    PairwiseComparison,
    Scores,
)

__all__ = [
    "UNPARSED_COLUMN",
    "LabelParser",
    "TokenLabelParser",
    "compare_to_baseline",
    "compute_metrics",
    "mcnemar_exact",
    "paired_counts",
    "wilson_interval",
]

#: The confusion-matrix column of items with no predicted label (unparsed or failed).
UNPARSED_COLUMN = "unparsed"

# Stripped from the ends of a candidate token: ASCII punctuation and typographic quotes.
_SURROUNDING = string.punctuation + "\u201c\u201d\u2018\u2019\u00ab\u00bb\u2026"


class LabelParser(Protocol):
    """Reads the label out of a model's raw answer; None when the answer holds no label."""

    def __call__(self, raw: str, /) -> str | None: ...


class TokenLabelParser:
    """The default parser: the first word (or run of words) of the answer that is a known label.

    Surrounding punctuation and quotes are ignored (`" 1."` and `'"1"'` read as `"1"`), and so
    is case (`"Satisfied"` reads as `"satisfied"`; an exact match wins when two labels differ
    only by case). Words are compared whole, so `"unsatisfied"` never reads as `"satisfied"`
    and `"10"` never as `"1"`. `aliases` maps other words to labels, e.g. `{"yes": "1"}`.

    `add(..., first_index=n)` makes a label known from the `n`-th item on. The evaluator uses it
    when the examples arrive lazily and their labels are learned as they are read: item `i` is
    parsed against the labels of items `0..i`, whatever order the answers come back in, so the
    result does not depend on timing.
    """

    def __init__(self, labels: Iterable[str] = (), *, aliases: Mapping[str, str] | None = None):
        self._exact: dict[str, tuple[str, int]] = {}
        self._folded: dict[str, list[tuple[str, int]]] = {}
        self._max_words = 1
        for token, label in (aliases or {}).items():  # aliases first: they win a tie
            self.add(token, label=label)
        for label in labels:
            self.add(label)

    def __repr__(self) -> str:
        return f"TokenLabelParser(labels={self.labels!r})"

    @property
    def labels(self) -> list[str]:
        """The labels this parser can answer, sorted."""
        return sorted({label for label, _ in self._exact.values()})

    def add(self, token: str, *, label: str | None = None, first_index: int = 0) -> None:
        """Read `token` as `label` (itself by default) in items from `first_index` on."""
        key = " ".join(token.split())
        if not key or key in self._exact:
            return
        entry = (token if label is None else label, first_index)
        self._exact[key] = entry
        self._folded.setdefault(key.casefold(), []).append(entry)
        self._max_words = max(self._max_words, key.count(" ") + 1)

    def __call__(self, raw: str, /) -> str | None:
        return self.parse(raw)

    def parse(self, raw: str, *, index: int | None = None) -> str | None:
        """The first label in `raw`, using only labels known at item `index` (None: all)."""
        words = raw.split()
        for start in range(len(words)):
            longest = min(self._max_words, len(words) - start)
            for length in range(longest, 0, -1):  # the longest label starting here wins
                found = self._match(" ".join(words[start : start + length]), index)
                if found is not None:
                    return found
        return None

    def _match(self, span: str, index: int | None) -> str | None:
        for candidate in dict.fromkeys((span, span.rstrip(_SURROUNDING), span.strip(_SURROUNDING))):
            if not candidate:
                continue
            entry = self._exact.get(candidate)
            if entry is not None and (index is None or entry[1] <= index):
                return entry[0]
            folded = {
                label
                for label, since in self._folded.get(candidate.casefold(), ())
                if index is None or since <= index
            }
            if len(folded) == 1:  # two labels differing only by case: no guessing
                return folded.pop()
        return None


# --- metrics -----------------------------------------------------------------------------------


def compute_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str | None],
    *,
    labels: Sequence[str] | None = None,
    positive_label: str = "1",
    failed: int = 0,
    latencies: Iterable[float] = (),
) -> Metrics:
    """Score predictions against expected labels; None in `y_pred` means no label (wrong).

    `labels` fixes the label order (labels met in the data but not listed are appended,
    sorted); by default it is every label met, sorted, as scikit-learn orders them. `failed`
    says how many of the None predictions are failed calls rather than unparsed answers.
    `latencies` are the seconds of the answered calls.
    """
    # scikit-learn (and numpy, scipy under it) cost about a second to import: only scoring pays it.
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    if len(y_true) != len(y_pred):
        raise ConfigurationError(
            f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}; give one each."
        )
    if not y_true:
        raise ConfigurationError("There are no items to score: the evaluation data was empty.")
    missing = sum(1 for p in y_pred if p is None)
    if not 0 <= failed <= missing:
        raise ConfigurationError(f"failed={failed}, but only {missing} predictions are missing.")

    order = _label_order(y_true, y_pred, labels)
    never = _never_a_label(order)
    predicted = [never if p is None else p for p in y_pred]

    per_label = precision_recall_fscore_support(
        y_true, predicted, labels=order, average=None, zero_division=0
    )
    macro = _scores(y_true, predicted, order, "macro")
    weighted = _scores(y_true, predicted, order, "weighted")
    binary = len(order) == 2 and positive_label in order
    headline = _scores(y_true, predicted, [positive_label], "micro") if binary else macro

    matrix = confusion_matrix(y_true, predicted, labels=[*order, never])[:-1]  # no row for `never`
    intervals = _label_intervals(matrix.tolist())
    columns = [*order, _unparsed_column(order)]
    if missing == 0:
        matrix, columns = matrix[:, :-1], columns[:-1]

    correct = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == p)
    positive = intervals[order.index(positive_label)] if binary else (None, None)
    return Metrics(
        accuracy=float(accuracy_score(y_true, predicted)),
        precision=headline.precision,
        recall=headline.recall,
        f1=headline.f1,
        accuracy_ci=wilson_interval(correct, len(y_true)),
        precision_ci=positive[0],
        recall_ci=positive[1],
        average="binary" if binary else "macro",
        positive_label=positive_label if binary else None,
        macro=macro,
        weighted=weighted,
        per_label=[
            LabelScores(
                label=label,
                precision=p,
                recall=r,
                f1=f,
                support=s,
                precision_ci=precision_ci,
                recall_ci=recall_ci,
            )
            for label, p, r, f, s, (precision_ci, recall_ci) in zip(
                order, *(column.tolist() for column in per_label), intervals, strict=True
            )
        ],
        labels=order,
        columns=columns,
        confusion_matrix=matrix.tolist(),
        counts=Counts(
            total=len(y_true),
            completed=len(y_true) - failed,
            failed=failed,
            unparsed=missing - failed,
            correct=correct,
        ),
        latency=_latency(latencies),
    )


def _label_intervals(
    matrix: list[list[int]],
) -> list[tuple[ConfidenceInterval, ConfidenceInterval]]:
    """(precision, recall) intervals of each label, from the confusion matrix's counts.

    Row `i` is the examples whose label is `i` (recall's trials); column `i` is the examples
    predicted `i` (precision's trials); `matrix[i][i]` the hits of both.
    """
    return [
        (
            wilson_interval(row[i], sum(r[i] for r in matrix)),
            wilson_interval(row[i], sum(row)),
        )
        for i, row in enumerate(matrix)
    ]


def _label_order(
    y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str] | None
) -> list[str]:
    met = set(y_true) | {p for p in y_pred if p is not None}
    if labels is None:
        return sorted(met)
    order = list(dict.fromkeys(labels))
    return order + sorted(met - set(order))


def _never_a_label(labels: Sequence[str]) -> str:
    """A string that is none of `labels`: stands for "no prediction" inside scikit-learn."""
    sentinel = "\x00no label"
    while sentinel in labels:
        sentinel += "\x00"
    return sentinel


def _unparsed_column(labels: Sequence[str]) -> str:
    name = UNPARSED_COLUMN
    while name in labels:  # a label literally called "unparsed"
        name = f"<{name}>"
    return name


def _scores(
    y_true: Sequence[str], y_pred: Sequence[str], labels: list[str], average: str
) -> Scores:
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=average, zero_division=0
    )
    return Scores(precision=float(precision), recall=float(recall), f1=float(f1))


def _latency(latencies: Iterable[float]) -> LatencyStats:
    import numpy as np

    seconds = np.fromiter(latencies, dtype=float)
    if seconds.size == 0:
        return LatencyStats()
    return LatencyStats(
        mean_s=float(seconds.mean()),
        median_s=float(np.median(seconds)),
        p95_s=float(np.percentile(seconds, 95)),
    )


# --- confidence intervals ----------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, *, confidence: float = 0.95) -> ConfidenceInterval:
    """The Wilson score interval for `successes` out of `trials`.

    Unlike the textbook "p ± z·sqrt(p(1-p)/n)", it never leaves [0, 1] and does not shrink to
    a point at 0 or n successes (10 right out of 10 still leaves room down to about 0.72),
    which is what a small test set needs. With p = successes/trials, n = trials and z the
    normal quantile of (1 + confidence)/2:

        centre = (p + z²/2n) / (1 + z²/n)
        half   = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²)

    With no trials, nothing is known: [0, 1].
    """
    if trials < 0 or not 0 <= successes <= trials:
        raise ConfigurationError(
            f"successes={successes}, trials={trials}: need 0 <= successes <= trials."
        )
    if not 0 < confidence < 1:
        raise ConfigurationError(f"confidence={confidence!r}: give a level between 0 and 1.")
    if trials == 0:
        return ConfidenceInterval(low=0.0, high=1.0, confidence=confidence, successes=0, trials=0)
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1 + confidence) / 2)
    n = trials
    p = successes / n
    shrink = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / shrink
    half = z / shrink * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At 0 or n successes one end is exactly 0 or 1; say so rather than leave rounding noise.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return ConfidenceInterval(
        low=low, high=high, confidence=confidence, successes=successes, trials=trials
    )


# --- McNemar -----------------------------------------------------------------------------------


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts `b` and `c`.

    Under "no difference" each disagreement goes either way with probability 1/2, so
    p = min(1, 2 * P(X <= min(b, c))) for X ~ Binomial(b + c, 1/2), and p = 1 when b + c = 0.
    The binomial coefficients are summed as exact integers and divided once at the end (Python
    rounds an integer division correctly however large the integers), so there is no float drift.
    """
    if b < 0 or c < 0:
        raise ConfigurationError(f"b and c count examples, so they cannot be negative: {b}, {c}.")
    n = b + c
    if n == 0:
        return 1.0
    term = 1  # C(n, 0); each step turns C(n, k) into C(n, k + 1) exactly
    tail = 1
    for k in range(min(b, c)):
        term = term * (n - k) // (k + 1)
        tail += term
    return min(1.0, 2 * tail / (1 << n))


def paired_counts(
    baseline_correct: Sequence[bool], target_correct: Sequence[bool]
) -> tuple[int, int]:
    """(b, c): examples only the baseline got right, and only the target got right."""
    if len(baseline_correct) != len(target_correct):
        raise ConfigurationError(
            f"Cannot pair {len(baseline_correct)} results with {len(target_correct)}: "
            "both targets must answer the same examples."
        )
    b = sum(1 for x, y in zip(baseline_correct, target_correct, strict=True) if x and not y)
    c = sum(1 for x, y in zip(baseline_correct, target_correct, strict=True) if y and not x)
    return b, c


def compare_to_baseline(
    baseline: str,
    target: str,
    baseline_metrics: Metrics,
    target_metrics: Metrics,
    baseline_correct: Sequence[bool],
    target_correct: Sequence[bool],
) -> PairwiseComparison:
    """The differences `target - baseline` and the McNemar test on the paired correctness."""
    b, c = paired_counts(baseline_correct, target_correct)
    return PairwiseComparison(
        baseline=baseline,
        target=target,
        accuracy_difference=target_metrics.accuracy - baseline_metrics.accuracy,
        f1_difference=target_metrics.f1 - baseline_metrics.f1,
        b=b,
        c=c,
        p_value=mcnemar_exact(b, c),
    )
