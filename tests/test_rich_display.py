"""How results show in Jupyter: `_repr_html_` (escaped), a short `__repr__`, inline figures."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from granite_tuner import LabelledSet, load_examples
from granite_tuner.metrics import wilson_interval
from granite_tuner.runs import MetricPoint, TuningResult, ValidationPoint
from tests.test_reports import make_comparison, make_report

HOSTILE = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
START = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_result(name: str = "grooming", *, warnings: tuple[str, ...] = ()) -> TuningResult:
    points = tuple(
        MetricPoint(
            iteration=i + 1, epoch=i // 3, loss=2.0 - i / 10, timestamp=START + timedelta(seconds=i)
        )
        for i in range(9)
    )
    return TuningResult(
        run_id="run-1",
        name=name,
        backend="local",
        state="completed",
        model_id="tuned-1",
        base_model="smollm2-135m",
        metrics=points,
        validation=(
            ValidationPoint(epoch=0, loss=1.5, accuracy=0.6, best_epoch=0),
            ValidationPoint(epoch=1, loss=1.2, accuracy=0.8, best_epoch=1),
            ValidationPoint(epoch=2, loss=1.3, accuracy=0.7, best_epoch=1),
        ),
        best_epoch=1,
        stop_reason="all epochs done",
        started_at=START,
        finished_at=START + timedelta(seconds=42),
        warnings=warnings,
    )


def assert_escaped(html: str) -> None:
    """Nothing of the hostile text survives as markup; all of it survives as text."""
    assert "<script" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img" in html


def test_tuning_result_html_shows_the_figures_that_matter() -> None:
    html = make_result()._repr_html_()
    assert "Tuning run grooming" in html
    for text in ("run-1", "completed", "smollm2-135m", "tuned-1", "42 s", "all epochs done"):
        assert text in html
    assert "1.900 → 1.600 → 1.300" in html  # mean loss of each epoch
    assert "0.600 → 0.800 → 0.700" in html  # validation accuracy
    assert re.search(r"kept epoch</th><td[^>]*>2<", html)  # epochs counted from 1 for people


def test_tuning_result_html_escapes_names_and_warnings() -> None:
    html = make_result(HOSTILE, warnings=(HOSTILE,))._repr_html_()
    assert_escaped(html)
    assert html.count("&lt;script&gt;") == 3  # the title, the name and the warning


def test_tuning_result_repr_is_short_and_plain() -> None:
    text = repr(make_result())
    assert text == (
        "TuningResult(run_id='run-1', state='completed', base_model='smollm2-135m', "
        "epochs=3, final_loss=1.3000)"
    )
    assert str(make_result()) == text


def test_plot_learning_curve_returns_a_figure_that_shows_inline() -> None:
    figure = make_result().plot_learning_curve()
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 3  # per epoch, its accuracy axis, over time
    png = figure._repr_png_()  # type: ignore[attr-defined]  # what Jupyter calls
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_learning_curve_with_a_path_still_saves(tmp_path: Path) -> None:
    path = make_result().plot_learning_curve(tmp_path / "curve.png")
    assert path == tmp_path / "curve.png"
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_evaluation_report_html_has_scores_intervals_and_confusion_matrix() -> None:
    report = make_report("tuned", ["1", "0", "1", None, "1"])
    html = report._repr_html_()
    ci = wilson_interval(4, 5)
    assert "Evaluation of tuned" in html
    assert f"{ci.low:.4f} – {ci.high:.4f}" in html
    assert "Confusion matrix" in html
    assert "unparsed" in html


def test_evaluation_report_html_escapes_the_target_and_labels() -> None:
    report = make_report("tuned", ["1", "0", "1", None, "1"])
    hostile = report.model_copy(update={"target": HOSTILE})
    metrics = hostile.metrics.model_copy(update={"labels": [HOSTILE, "1"]})
    assert_escaped(hostile.model_copy(update={"metrics": metrics})._repr_html_())


def test_evaluation_report_repr_is_one_short_line_however_many_items() -> None:
    report = make_report("tuned", ["1", "0", "1", None, "1"])
    many = report.model_copy(update={"items": report.items * 400})
    text = repr(many)
    assert "\n" not in text
    assert len(text) < 200
    ci = wilson_interval(4, 5)
    assert f"accuracy=0.8000 [{ci.low:.4f}, {ci.high:.4f}]" in text
    assert text.startswith("EvaluationReport(target='tuned', items=5,")


def test_comparison_report_html_has_every_target_the_p_value_and_intervals() -> None:
    report = make_comparison()
    html = report._repr_html_()
    assert "base (baseline)" in html
    assert "tuned vs base" in html
    assert "0.625" in html  # McNemar p
    assert "not significant" in html
    ci = wilson_interval(4, 5)
    assert f"{ci.low:.4f} – {ci.high:.4f}" in html
    assert "Wilson" in html


def test_comparison_report_html_escapes_target_names() -> None:
    report = make_comparison()
    tuned = report.reports["tuned"]
    hostile = report.model_copy(
        update={
            "reports": {"base": report.reports["base"], HOSTILE: tuned},
            "comparisons": [report.comparisons[0].model_copy(update={"target": HOSTILE})],
        }
    )
    html = hostile._repr_html_()
    assert_escaped(html)
    assert "<td" in html  # still a table


def test_comparison_report_repr_is_short() -> None:
    text = repr(make_comparison())
    assert text == (
        "ComparisonReport(baseline='base', items=5, accuracy={'base': 0.4, 'tuned': 0.8}, "
        "mcnemar_p={'tuned': 0.625})"
    )


def test_labelled_set_html_is_the_data_check_at_a_glance(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    rows = [f'{{"input": "review {i}", "output": "{i % 2}"}}' for i in range(60)]
    rows.append('{"input": "review 0", "output": "0"}')  # a duplicate: a warning
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    data = load_examples(path)
    assert data.warnings
    html = data._repr_html_()
    assert "61" in html
    assert "train.jsonl" in html
    assert "warning" in html
    assert data.warnings[0].message.split()[0] in html
    assert "review 0" in html  # the first examples


def test_labelled_set_html_escapes_inputs_and_labels() -> None:
    data = LabelledSet.model_validate(
        {"examples": [{"input": HOSTILE, "output": HOSTILE}], "source": HOSTILE}
    )
    html = data._repr_html_()
    assert_escaped(html)
    assert "No warnings" in html


def test_labelled_set_repr_does_not_print_every_example() -> None:
    data = LabelledSet.model_validate(
        {"examples": [{"input": f"text {i}", "output": str(i % 3)} for i in range(5000)]}
    )
    text = repr(data)
    assert text == (
        "LabelledSet(examples=5000, source=None, labels={'0': 1667, '1': 1667, '2': 1666}, "
        "warnings=0)"
    )


@pytest.mark.parametrize("count", [11, 50])
def test_labelled_set_repr_names_only_the_first_labels(count: int) -> None:
    data = LabelledSet.model_validate(
        {"examples": [{"input": "x", "output": f"label {i}"} for i in range(count)]}
    )
    assert repr(data).endswith(", …}, warnings=0)")
    assert "label 10" not in repr(data)
