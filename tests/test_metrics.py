"""Label parsing, metrics equal to scikit-learn's, and the exact McNemar test."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
)

from granite_tuner.errors import ConfigurationError
from granite_tuner.metrics import (
    TokenLabelParser,
    compute_metrics,
    mcnemar_exact,
    paired_counts,
    wilson_interval,
)

NEVER = "<never a label>"  # what a user would put in place of an unparsed prediction


# --- label parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" 1.", "1"),
        ("1\n\nComment: the groomer was lovely", "1"),
        ('"0"', "0"),
        ("(1)", "1"),
        ("The answer is 0, clearly.", "0"),
        ("Satisfaction: 1", "1"),
        ("10", None),  # a whole word, not a prefix
        ("1.5", None),
        ("0.1", None),
        ("", None),
        ("   ", None),
        ("no idea", None),
    ],
)
def test_default_parser_reads_the_first_label(raw: str, expected: str | None) -> None:
    assert TokenLabelParser(["0", "1"])(raw) == expected


def test_default_parser_ignores_case_and_compares_whole_words() -> None:
    parser = TokenLabelParser(["satisfied", "unsatisfied"])
    assert parser("Satisfied") == "satisfied"
    assert parser("UNSATISFIED!") == "unsatisfied"
    assert parser("The customer is unsatisfied.") == "unsatisfied"
    assert parser("dissatisfied") is None


def test_default_parser_prefers_the_longest_label_at_the_first_position() -> None:
    parser = TokenLabelParser(["good", "very good", "bad"])
    assert parser("Very good, not bad") == "very good"
    assert parser("bad, not very good") == "bad"
    assert parser("very\ngood") == "very good"


def test_default_parser_keeps_labels_that_are_punctuation() -> None:
    parser = TokenLabelParser(["-1", "1"])
    assert parser("-1.") == "-1"
    assert parser("1") == "1"


def test_an_exact_match_wins_when_labels_differ_only_by_case() -> None:
    parser = TokenLabelParser(["A", "a"])
    assert parser("A") == "A"
    assert parser("a") == "a"
    assert TokenLabelParser(["A", "a", "b"])("B") == "b"


def test_aliases_map_words_to_labels() -> None:
    parser = TokenLabelParser(["0", "1"], aliases={"yes": "1", "no": "0"})
    assert parser("Yes!") == "1"
    assert parser("no, never") == "0"
    assert parser("1") == "1"
    assert parser.labels == ["0", "1"]


def test_labels_added_later_apply_from_their_first_item_on() -> None:
    parser = TokenLabelParser(["0", "1"])
    parser.add("2", first_index=5)
    assert parser.parse("2", index=4) is None
    assert parser.parse("2", index=5) == "2"
    assert parser.parse("2") == "2"
    assert parser.parse("2 or 1", index=4) == "1"


# --- metrics against scikit-learn --------------------------------------------------------------


def _with_sentinel(y_pred: list[str | None]) -> list[str]:
    return [NEVER if p is None else p for p in y_pred]


def test_binary_metrics_equal_scikit_learn() -> None:
    y_true = ["1", "0", "1", "1", "0", "0", "1", "0"]
    y_pred: list[str | None] = ["1", "0", "0", "1", "1", "0", "1", "1"]
    m = compute_metrics(y_true, y_pred)
    assert m.average == "binary"
    assert m.positive_label == "1"
    assert m.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    assert m.precision == pytest.approx(precision_score(y_true, y_pred, pos_label="1"))
    assert m.recall == pytest.approx(recall_score(y_true, y_pred, pos_label="1"))
    assert m.f1 == pytest.approx(f1_score(y_true, y_pred, pos_label="1"))
    assert m.macro.f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m.weighted.f1 == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    assert m.labels == m.columns == ["0", "1"]
    assert m.confusion_matrix == confusion_matrix(y_true, y_pred, labels=["0", "1"]).tolist()
    assert m.counts.model_dump() == {
        "total": 8,
        "completed": 8,
        "failed": 0,
        "unparsed": 0,
        "correct": 5,
    }


def test_binary_metrics_with_unparsed_predictions_equal_scikit_learn() -> None:
    y_true = ["1", "0", "1", "1", "0", "0", "1", "0", "1"]
    y_pred: list[str | None] = ["1", None, None, "1", "1", "0", "1", None, "0"]
    m = compute_metrics(y_true, y_pred, failed=1)
    y_sent = _with_sentinel(y_pred)
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_sent, labels=["1"], average="micro", zero_division=0
    )
    assert m.average == "binary"
    assert m.accuracy == pytest.approx(accuracy_score(y_true, y_sent))
    assert (m.precision, m.recall, m.f1) == pytest.approx((p, r, f))
    assert m.columns == ["0", "1", "unparsed"]
    full = confusion_matrix(y_true, y_sent, labels=["0", "1", NEVER])
    assert m.confusion_matrix == full[:2].tolist()
    assert m.counts.failed == 1
    assert m.counts.unparsed == 2
    assert m.counts.completed == 8


def test_three_class_metrics_equal_scikit_learn() -> None:
    labels = ["negative", "neutral", "positive"]
    y_true = ["positive", "negative", "neutral", "positive", "neutral", "negative", "positive"]
    y_pred: list[str | None] = [
        "positive",
        "neutral",
        None,
        "positive",
        "neutral",
        "positive",
        None,
    ]
    m = compute_metrics(y_true, y_pred)
    y_sent = _with_sentinel(y_pred)
    assert m.average == "macro"
    assert m.positive_label is None
    assert m.labels == labels
    assert m.accuracy == pytest.approx(accuracy_score(y_true, y_sent))
    for average, scores in (("macro", m.macro), ("weighted", m.weighted)):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_sent, labels=labels, average=average, zero_division=0
        )
        assert (scores.precision, scores.recall, scores.f1) == pytest.approx((p, r, f))
    assert (m.precision, m.recall, m.f1) == (m.macro.precision, m.macro.recall, m.macro.f1)
    p, r, f, s = precision_recall_fscore_support(
        y_true, y_sent, labels=labels, average=None, zero_division=0
    )
    assert [x.label for x in m.per_label] == labels
    assert [x.f1 for x in m.per_label] == pytest.approx(list(f))
    assert [x.support for x in m.per_label] == list(s)
    full = confusion_matrix(y_true, y_sent, labels=[*labels, NEVER])
    assert m.confusion_matrix == full[:3].tolist()
    assert m.counts.unparsed == 2


@pytest.mark.parametrize("seed", range(20))
def test_random_predictions_match_scikit_learn(seed: int) -> None:
    rng = random.Random(seed)
    labels = ["0", "1"] if seed % 2 else ["a", "b", "c", "d"]
    n = rng.randint(1, 60)
    y_true = [rng.choice(labels) for _ in range(n)]
    y_pred: list[str | None] = [rng.choice([*labels, None]) for _ in range(n)]
    m = compute_metrics(y_true, y_pred, labels=labels)
    y_sent = _with_sentinel(y_pred)
    assert m.accuracy == pytest.approx(accuracy_score(y_true, y_sent))
    headline = ["1"] if m.average == "binary" else labels
    average = "micro" if m.average == "binary" else "macro"
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_sent, labels=headline, average=average, zero_division=0
    )
    assert (m.precision, m.recall, m.f1) == pytest.approx((p, r, f))
    full = confusion_matrix(y_true, y_sent, labels=[*labels, NEVER])
    expected = full[: len(labels)]
    if None not in y_pred:
        expected = expected[:, :-1]
    assert m.confusion_matrix == expected.tolist()


def test_label_order_follows_the_given_labels_then_labels_met() -> None:
    m = compute_metrics(["b", "a", "a"], ["a", "z", None], labels=["b", "a"])
    assert m.labels == ["b", "a", "z"]
    assert m.columns == ["b", "a", "z", "unparsed"]
    assert m.confusion_matrix == [[0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]


def test_a_label_called_unparsed_keeps_its_column() -> None:
    m = compute_metrics(["unparsed", "x"], [None, "x"])
    assert m.columns == ["unparsed", "x", "<unparsed>"]


def test_binary_needs_the_positive_label() -> None:
    m = compute_metrics(["yes", "no"], ["yes", "yes"])
    assert m.average == "macro"
    m = compute_metrics(["yes", "no"], ["yes", "yes"], positive_label="yes")
    assert m.average == "binary"
    assert m.precision == pytest.approx(0.5)


def test_latency_statistics() -> None:
    seconds = [0.1, 0.4, 0.2, 0.3, 1.0]
    m = compute_metrics(["1"] * 5, ["1"] * 5, latencies=seconds)
    assert m.latency.mean_s == pytest.approx(np.mean(seconds))
    assert m.latency.median_s == pytest.approx(0.3)
    assert m.latency.p95_s == pytest.approx(np.percentile(seconds, 95))
    assert compute_metrics(["1"], [None], failed=1).latency.mean_s is None


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="no items"):
        compute_metrics([], [])
    with pytest.raises(ConfigurationError, match="y_pred has 1"):
        compute_metrics(["1", "0"], ["1"])
    with pytest.raises(ConfigurationError, match="failed=2"):
        compute_metrics(["1", "0"], ["1", None], failed=2)


# --- McNemar -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (1, 6, Fraction(2 * (1 + 7), 128)),  # 0.125
        (6, 1, Fraction(2 * (1 + 7), 128)),
        (0, 0, Fraction(1)),
        (5, 5, Fraction(1)),
        (0, 1, Fraction(1)),  # 2 * 1/2
        (0, 5, Fraction(2, 32)),
        (2, 8, Fraction(2 * (1 + 10 + 45), 1024)),
        (3, 4, Fraction(1)),
    ],
)
def test_mcnemar_hand_computed(b: int, c: int, p: Fraction) -> None:
    assert mcnemar_exact(b, c) == float(p)


def test_mcnemar_is_exact_for_thousands_of_disagreements() -> None:
    rng = random.Random(7)
    for _ in range(25):
        b, c = rng.randint(0, 1500), rng.randint(0, 1500)
        n = b + c
        tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
        exact = min(Fraction(1), Fraction(2 * tail, 2**n)) if n else Fraction(1)
        assert mcnemar_exact(b, c) == float(exact)
    for b, c in [(3, 17), (40, 60), (100, 150), (480, 520)]:
        reference = binomtest(min(b, c), b + c, 0.5).pvalue
        assert mcnemar_exact(b, c) == pytest.approx(reference, rel=1e-9)


def test_mcnemar_refuses_negative_counts() -> None:
    with pytest.raises(ConfigurationError):
        mcnemar_exact(-1, 3)


def test_paired_counts() -> None:
    baseline = [True, True, False, False, True]
    target = [True, False, True, True, False]
    assert paired_counts(baseline, target) == (2, 2)
    assert paired_counts([True, False], [True, True]) == (0, 1)
    with pytest.raises(ConfigurationError, match="same examples"):
        paired_counts([True], [True, False])


# --- Wilson intervals --------------------------------------------------------------------------


def _wilson_by_quadratic(successes: int, trials: int, z: float) -> tuple[float, float]:
    """The Wilson bounds derived another way: the p with |p̂ - p| = z·sqrt(p(1-p)/n), i.e. the
    roots of (1 + z²/n)·p² - (2p̂ + z²/n)·p + p̂² = 0."""
    phat = successes / trials
    a = 1 + z * z / trials
    b = -(2 * phat + z * z / trials)
    c = phat * phat
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


@pytest.mark.parametrize(("successes", "trials"), [(0, 10), (5, 10), (10, 10), (93, 100)])
def test_wilson_interval_matches_the_closed_form_and_scipy(successes: int, trials: int) -> None:
    interval = wilson_interval(successes, trials)
    z = 1.959963984540054  # the normal 0.975 quantile
    low, high = _wilson_by_quadratic(successes, trials, z)
    assert interval.low == pytest.approx(low, abs=1e-12)
    assert interval.high == pytest.approx(high, abs=1e-12)
    reference = binomtest(successes, trials).proportion_ci(method="wilson")
    assert (interval.low, interval.high) == pytest.approx((reference.low, reference.high))
    assert (interval.successes, interval.trials, interval.confidence) == (successes, trials, 0.95)


def test_wilson_interval_known_values() -> None:
    # Rounded values as tables of the Wilson interval give them.
    assert wilson_interval(0, 10).low == 0.0
    assert wilson_interval(0, 10).high == pytest.approx(0.2775, abs=5e-5)
    assert (wilson_interval(5, 10).low, wilson_interval(5, 10).high) == pytest.approx(
        (0.2366, 0.7634), abs=5e-5
    )
    assert wilson_interval(10, 10).high == 1.0
    assert wilson_interval(10, 10).low == pytest.approx(0.7225, abs=5e-5)
    ci = wilson_interval(93, 100)
    assert (ci.low, ci.high) == pytest.approx((0.8625, 0.9657), abs=5e-5)
    assert str(ci) == "[0.863, 0.966]"


def test_wilson_interval_edges_and_bad_input() -> None:
    nothing = wilson_interval(0, 0)
    assert (nothing.low, nothing.high) == (0.0, 1.0)
    wider = wilson_interval(93, 100, confidence=0.99)
    assert wider.low < wilson_interval(93, 100).low
    for successes, trials in ((-1, 10), (11, 10), (0, -1)):
        with pytest.raises(ConfigurationError):
            wilson_interval(successes, trials)
    with pytest.raises(ConfigurationError):
        wilson_interval(1, 2, confidence=1.0)
