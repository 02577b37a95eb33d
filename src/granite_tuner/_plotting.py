"""The learning-curve PNG: loss per epoch (training and validation), and loss over time.

Works outside Jupyter; in Jupyter, the figure shows inline. When the run validated, the left
panel also shows the validation loss and (on a second axis) the validation accuracy after each
epoch, and marks the kept epoch.

matplotlib is an optional extra (`granite-tuner[plot]`); it is imported only here, with the
non-interactive Agg backend, so no display is needed and nothing global is changed.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from granite_tuner._files import write_atomic_with
from granite_tuner.errors import ConfigurationError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CurveSource",
    "learning_curve_figure",
    "png_bytes",
    "save_learning_curve",
    "scores_figure",
]


class _LoggedStep(Protocol):
    @property
    def loss(self) -> float | None: ...
    @property
    def timestamp(self) -> datetime | None: ...


class _ValidatedEpoch(Protocol):
    @property
    def epoch(self) -> int: ...


class CurveSource(Protocol):
    """What a learning curve is drawn from: `runs.TuningResult` fits this.

    A protocol rather than an import of `TuningResult`, so `runs` can import this module
    (for `plot_learning_curve`) without a cycle.
    """

    @property
    def run_id(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def base_model(self) -> str | None: ...
    @property
    def metrics(self) -> Sequence[_LoggedStep]: ...
    @property
    def validation(self) -> Sequence[_ValidatedEpoch]: ...
    @property
    def best_epoch(self) -> int | None: ...
    @property
    def loss_per_epoch(self) -> list[float]: ...
    @property
    def validation_loss_per_epoch(self) -> list[float]: ...
    @property
    def validation_accuracy_per_epoch(self) -> list[float | None]: ...


def learning_curve_figure(result: CurveSource) -> Figure:
    """A figure with two panels: mean loss per epoch, and every logged loss over time."""
    figure_class = _figure_class()
    losses = result.loss_per_epoch
    if not losses:
        raise ConfigurationError(
            f"Run {result.run_id} has no loss values yet, so there is no curve to draw."
        )
    figure = figure_class(figsize=(10, 4), layout="constrained")
    per_epoch, over_time = figure.subplots(1, 2)
    epochs = list(range(1, len(losses) + 1))
    per_epoch.plot(epochs, losses, marker="o", label="training loss (mean)")
    _draw_validation(per_epoch, result)
    per_epoch.set_xlabel("epoch")
    per_epoch.set_ylabel("loss")
    per_epoch.set_title("Loss per epoch" if not result.validation else "Training and validation")
    per_epoch.set_xticks(epochs)
    per_epoch.grid(alpha=0.3)

    timed = [(p.timestamp, p.loss) for p in result.metrics if p.timestamp and p.loss is not None]
    if timed:
        start = timed[0][0]
        seconds = [(t - start).total_seconds() for t, _ in timed]
        over_time.plot(seconds, [loss for _, loss in timed], marker=".", linewidth=1)
        over_time.set_xlabel("seconds since the first logged step")
    else:
        steps = [p.loss for p in result.metrics if p.loss is not None]
        over_time.plot(range(1, len(steps) + 1), steps, marker=".", linewidth=1)
        over_time.set_xlabel("logged step")
    over_time.set_ylabel("loss")
    over_time.set_title("Loss over time")
    over_time.grid(alpha=0.3)
    title = f"Tuning {result.name or result.run_id}"
    if result.base_model:
        title += f" of {result.base_model}"
    figure.suptitle(title)
    return figure


@functools.cache
def _figure_class() -> type[Figure]:
    """A matplotlib `Figure` that Jupyter shows as a PNG by itself.

    A bare `Figure` (not made by pyplot) displays as `<Figure size ...>` text unless the user
    has turned on matplotlib's inline support; giving it `_repr_png_` makes it show inline
    without touching pyplot's global state.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - the extra is installed in every test run
        raise ConfigurationError(
            "Plotting needs matplotlib: pip install 'granite-tuner[plot]'."
        ) from None

    class InlineFigure(Figure):
        def _repr_png_(self) -> bytes:
            return png_bytes(self)

    return InlineFigure


def png_bytes(figure: Figure) -> bytes:
    """The figure as a PNG file's bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


#: One bar of `scores_figure`: (target, metric, value, interval low, interval high).
ScoreBar = tuple[str, str, float, float | None, float | None]


def scores_figure(bars: Sequence[ScoreBar], title: str) -> Figure:
    """Grouped bars of each target's scores, with their confidence intervals as error bars."""
    figure = _figure_class()(figsize=(8, 4), layout="constrained")
    axes = figure.subplots()
    targets = list(dict.fromkeys(bar[0] for bar in bars))
    metrics = list(dict.fromkeys(bar[1] for bar in bars))
    width = 0.8 / max(len(targets), 1)
    for t, target in enumerate(targets):
        offset = (t - (len(targets) - 1) / 2) * width
        xs, values, below, above = [], [], [], []
        for m, metric in enumerate(metrics):
            found = [bar for bar in bars if bar[:2] == (target, metric)]
            if not found:
                continue
            _, _, value, low, high = found[0]
            xs.append(m + offset)
            values.append(value)
            below.append(value - (value if low is None else low))
            above.append((value if high is None else high) - value)
        axes.bar(xs, values, width, label=target, yerr=[below, above], capsize=4)
    axes.set_xticks(range(len(metrics)), metrics)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("score (error bars: 95% CI)")
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    return figure


def _draw_validation(axes: Axes, result: CurveSource) -> None:
    """Validation loss, validation accuracy (right axis) and the kept epoch, when there are."""
    if not result.validation:
        return
    epochs = [point.epoch + 1 for point in result.validation]
    handles = axes.plot(
        epochs, result.validation_loss_per_epoch, marker="s", label="validation loss"
    )
    accuracies = [
        (e, a)
        for e, a in zip(epochs, result.validation_accuracy_per_epoch, strict=True)
        if a is not None
    ]
    if accuracies:
        right = axes.twinx()
        handles += right.plot(
            [e for e, _ in accuracies],
            [a for _, a in accuracies],
            marker="^",
            color="tab:green",
            label="validation accuracy",
        )
        right.set_ylabel("accuracy")
        right.set_ylim(0, 1.02)
    if result.best_epoch is not None:
        handles.append(
            axes.axvline(result.best_epoch + 1, color="grey", linestyle="--", label="kept epoch")
        )
    axes.legend(handles=[*axes.get_lines()[:1], *handles], loc="center right", fontsize="small")


def save_learning_curve(result: CurveSource, path: Path) -> Path:
    """Write the figure as PNG atomically: a reader never sees half a file."""
    figure = learning_curve_figure(result)
    return write_atomic_with(path, lambda stream: figure.savefig(stream, format="png", dpi=100))
