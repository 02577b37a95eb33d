"""Reports: JSON round-trip, CSV and DataFrame exports, Markdown, atomic writes."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from granite_tuner.metrics import compare_to_baseline, compute_metrics, wilson_interval
from granite_tuner.reports import (
    ITEM_COLUMNS,
    SUMMARY_COLUMNS,
    ComparisonReport,
    EvaluationReport,
    ItemResult,
)

STARTED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
FINISHED = datetime(2025, 1, 2, 3, 5, 0, tzinfo=UTC)
EXPECTED = ["1", "0", "1", "0", "1"]


def make_report(name: str, answers: list[str | None]) -> EvaluationReport:
    """A report as the evaluator builds it; None answers are failed calls."""
    items = []
    for index, (expected, answer) in enumerate(zip(EXPECTED, answers, strict=True)):
        failed = answer is None
        predicted = None if answer is None or answer == "???" else answer
        items.append(
            ItemResult(
                index=index,
                target=name,
                input=f'Comment: visit {index}, said "fine", | pipes,\nnew lines\nSatisfaction:',
                expected=expected,
                output=answer,
                predicted=predicted,
                correct=predicted == expected,
                latency_s=0.25 + index / 100,
                attempts=2 if index == 1 else 1,
                error="connection reset" if failed else None,
                error_type="APIConnectionError" if failed else None,
            )
        )
    metrics = compute_metrics(
        [i.expected for i in items],
        [i.predicted for i in items],
        failed=sum(i.failed for i in items),
        latencies=[i.latency_s for i in items if not i.failed],
    )
    return EvaluationReport(
        target=name, metrics=metrics, items=items, started_at=STARTED, finished_at=FINISHED
    )


def make_comparison() -> ComparisonReport:
    base = make_report("base", ["0", "0", "0", "0", "???"])
    tuned = make_report("tuned", ["1", "0", "1", None, "1"])
    comparison = compare_to_baseline(
        "base",
        "tuned",
        base.metrics,
        tuned.metrics,
        [i.correct for i in base.items],
        [i.correct for i in tuned.items],
    )
    return ComparisonReport(
        baseline="base",
        reports={"base": base, "tuned": tuned},
        comparisons=[comparison],
        started_at=STARTED,
        finished_at=FINISHED,
    )


def test_item_result_knows_whether_the_call_failed() -> None:
    report = make_report("tuned", ["1", None, "???", "0", "1"])
    assert [i.failed for i in report.items] == [False, True, False, False, False]
    assert report.metrics.counts.failed == 1
    assert report.metrics.counts.unparsed == 1


def test_evaluation_report_json_round_trip(tmp_path: Path) -> None:
    report = make_report("tuned", ["1", None, "???", "0", "1"])
    path = report.to_json(tmp_path / "nested" / "report.json")
    assert path.exists()
    assert EvaluationReport.from_json(path) == report
    assert EvaluationReport.model_validate_json(report.model_dump_json()) == report


def test_evaluation_report_csv_has_one_row_per_item(tmp_path: Path) -> None:
    report = make_report("tuned", ["1", None, "???", "0", "1"])
    frame = pd.read_csv(report.to_csv(tmp_path / "items.csv"), keep_default_na=False)
    assert list(frame.columns) == list(ITEM_COLUMNS)
    assert len(frame) == len(report.items)
    assert frame["input"].tolist() == [i.input for i in report.items]
    assert frame["error_type"].tolist() == ["", "APIConnectionError", "", "", ""]
    assert frame["attempts"].tolist() == [1, 2, 1, 1, 1]


def test_evaluation_report_to_pandas() -> None:
    report = make_report("tuned", ["1", None, "???", "0", "1"])
    frame = report.to_pandas()
    assert list(frame.columns) == list(ITEM_COLUMNS)
    assert frame["correct"].tolist() == [True, False, False, True, True]
    assert frame["predicted"].isna().tolist() == [False, True, True, False, False]


def test_evaluation_report_markdown_shows_the_numbers() -> None:
    report = make_report("tuned", ["1", None, "???", "0", "1"])
    text = report.to_markdown()
    m = report.metrics
    assert f"| accuracy | {m.accuracy:.4f} |" in text
    assert f"{m.f1:.4f}" in text
    assert "| failed | 1 |" in text
    assert "| unparsed | 1 |" in text
    assert "| expected \\ predicted | 0 | 1 | unparsed |" in text
    assert "| 1 | 0 | 2 | 1 |" in text  # expected 1: two right, one unparsed


def test_streamed_report_csv_has_only_the_header(tmp_path: Path) -> None:
    report = make_report("tuned", ["1", "0", "1", "0", "1"]).model_copy(update={"items": []})
    frame = pd.read_csv(report.to_csv(tmp_path / "items.csv"))
    assert list(frame.columns) == list(ITEM_COLUMNS)
    assert frame.empty


def test_comparison_report_exports(tmp_path: Path) -> None:
    report = make_comparison()
    assert ComparisonReport.from_json(report.to_json(tmp_path / "c.json")) == report
    frame = pd.read_csv(report.to_csv(tmp_path / "c.csv"))
    assert len(frame) == 10
    assert frame["target"].tolist() == ["base"] * 5 + ["tuned"] * 5
    assert len(report.to_pandas()) == 10


def test_comparison_report_markdown_has_a_row_per_target_and_each_difference() -> None:
    report = make_comparison()
    text = report.to_markdown()
    tuned = report.reports["tuned"].metrics
    base = report.reports["base"].metrics
    accuracy_ci = wilson_interval(4, 5)  # 4 of 5 right
    certain_ci = wilson_interval(3, 3)  # 3 predicted 1, all right; 3 expected 1, all found
    assert (
        f"| tuned | {tuned.accuracy:.4f} | {accuracy_ci.low:.4f} – {accuracy_ci.high:.4f} | "
        f"{tuned.f1:.4f} | {tuned.precision:.4f} | {certain_ci.low:.4f} – 1.0000 | "
        f"{tuned.recall:.4f} | {certain_ci.low:.4f} – 1.0000 | 1 | 0 |" in text
    )
    assert "95% CI: Wilson score interval." in text
    assert f"| base (baseline) | {base.accuracy:.4f} |" in text
    (difference,) = report.comparisons
    assert (difference.b, difference.c) == (1, 3)
    assert difference.p_value == pytest.approx(0.625)
    assert (
        f"| tuned vs base | {difference.accuracy_difference:+.4f} | "
        f"{difference.f1_difference:+.4f} | 1 | 3 | 0.625 |" in text
    )
    assert not difference.significant()


def test_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = make_report("tuned", ["1", "0", "1", "0", "1"])
    path = report.to_json(tmp_path / "report.json")
    before = path.read_bytes()

    def broken_replace(source: str, target: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        make_comparison().to_json(path)
    assert path.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left


# --- confidence intervals in every format ------------------------------------------------------


def test_metrics_carry_wilson_intervals_for_accuracy_precision_and_recall() -> None:
    report = make_report("tuned", ["1", "0", "1", None, "1"])
    m = report.metrics
    assert m.accuracy_ci == wilson_interval(4, 5)
    assert m.precision_ci == wilson_interval(3, 3)  # binary: the positive label "1"
    assert m.recall_ci == wilson_interval(3, 3)
    zero, one = m.per_label
    assert (zero.label, zero.precision_ci, zero.recall_ci) == (
        "0",
        wilson_interval(1, 1),  # predicted "0" once, right
        wilson_interval(1, 2),  # two expected "0", one found (the other failed)
    )
    assert one.recall_ci == wilson_interval(3, 3)
    assert m.accuracy_ci is not None
    assert m.accuracy_ci.low <= m.accuracy <= m.accuracy_ci.high


def test_intervals_survive_json_and_old_reports_without_them_still_load(tmp_path: Path) -> None:
    report = make_comparison()
    again = ComparisonReport.from_json(report.to_json(tmp_path / "comparison.json"))
    assert again == report
    assert again.reports["tuned"].metrics.accuracy_ci == wilson_interval(4, 5)
    # A report written before intervals existed: the fields are simply absent.
    document = report.reports["tuned"].model_dump(mode="json")
    for key in ("accuracy_ci", "precision_ci", "recall_ci"):
        del document["metrics"][key]
    old = EvaluationReport.model_validate(document)
    assert old.metrics.accuracy_ci is None
    assert "| accuracy | 0.8000 | n/a |" in old.to_markdown()


def test_evaluation_markdown_shows_the_accuracy_interval() -> None:
    report = make_report("tuned", ["1", "0", "1", None, "1"])
    ci = wilson_interval(4, 5)
    assert f"| accuracy | 0.8000 | {ci.low:.4f} – {ci.high:.4f} |" in report.to_markdown()


def test_summary_csv_and_dataframe_have_intervals_beside_the_p_value(tmp_path: Path) -> None:
    report = make_comparison()
    frame = report.summary_to_pandas()
    assert list(frame.columns) == list(SUMMARY_COLUMNS)
    assert frame["target"].tolist() == ["base", "tuned"]
    tuned = frame.set_index("target").loc["tuned"]
    ci = wilson_interval(4, 5)
    assert (tuned["accuracy_ci_low"], tuned["accuracy_ci_high"]) == (ci.low, ci.high)
    assert tuned["precision_ci_high"] == 1.0
    assert tuned["mcnemar_p"] == pytest.approx(0.625)
    base = frame.set_index("target").loc["base"]
    assert bool(base["baseline"]) is True
    assert pd.isna(base["mcnemar_p"])

    from_csv = pd.read_csv(report.summary_to_csv(tmp_path / "summary.csv"))
    assert list(from_csv.columns) == list(SUMMARY_COLUMNS)
    assert from_csv["accuracy_ci_low"].tolist() == pytest.approx(frame["accuracy_ci_low"].tolist())
    assert from_csv["mcnemar_p"].tolist()[1] == pytest.approx(0.625)

    single = report.reports["tuned"].summary_to_pandas()
    assert single["accuracy_ci_high"].tolist() == [ci.high]
    assert pd.isna(single["mcnemar_p"].iloc[0])
