"""Opt-in progress bars for `Tuner.run(progress=True)` and `Evaluator.evaluate(progress=True)`.

Library code prints nothing unless asked; these bars are what asking looks like. They use
`tqdm.auto`: a widget in Jupyter (with ipywidgets installed), text on stderr in a terminal.
In a notebook without ipywidgets, `tqdm.auto` cannot build its widget, so the bar falls back
to text rather than fail the run. tqdm is imported only when a bar is opened.

A bar is fed the same typed events (`granite_tuner.events`) and items (`ItemResult`) that
callbacks get, so it shows nothing a caller could not show with `on_event` / `on_progress`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from granite_tuner.events import EpochCompleted, RunFinished, RunSubmitted, StateChanged, StepLogged

if TYPE_CHECKING:
    from granite_tuner.events import TuningEvent
    from granite_tuner.reports import ItemResult

__all__ = ["EvaluationBar", "TuningBar"]


def _open_bar(*, total: float | None, desc: str, unit: str) -> Any:
    """A tqdm bar: the widget in Jupyter when it can be built, text otherwise."""
    from tqdm.auto import tqdm

    options: dict[str, Any] = {"total": total, "desc": desc, "unit": unit, "leave": True}
    try:
        return tqdm(**options)
    except ImportError:  # a notebook without ipywidgets: tqdm.auto cannot build its widget
        from tqdm.std import tqdm as text_tqdm

        return text_tqdm(**options)


class TuningBar:
    """Epochs done out of the run's epochs, with the run's state and the last loss."""

    def __init__(self, name: str, num_epochs: int | None) -> None:
        self._bar = _open_bar(total=num_epochs, desc=f"tuning {name}", unit="epoch")
        self._fields: dict[str, str] = {"state": "starting"}
        self._show()

    def __call__(self, event: TuningEvent) -> None:
        if isinstance(event, RunSubmitted):
            self._fields["state"] = "attached" if event.attached else "submitted"
        elif isinstance(event, StateChanged | RunFinished):
            self._fields["state"] = event.state
        elif isinstance(event, StepLogged) and event.loss is not None:
            self._fields["loss"] = f"{event.loss:.3f}"
        elif isinstance(event, EpochCompleted):
            if event.num_epochs and self._bar.total != event.num_epochs:
                self._bar.total = event.num_epochs
            self._bar.n = event.epoch + 1
            self._fields["epoch loss"] = f"{event.mean_loss:.3f}"
            if event.validation_accuracy is not None:
                self._fields["val. accuracy"] = f"{event.validation_accuracy:.3f}"
        self._show()

    def _show(self) -> None:
        self._bar.set_postfix(self._fields, refresh=True)

    def close(self) -> None:
        self._bar.close()


class EvaluationBar:
    """Items done out of all (when the data's size is known), and how many calls failed."""

    def __init__(self, total: int | None) -> None:
        self._bar = _open_bar(total=total, desc="evaluating", unit="item")
        self.failed = 0

    def __call__(self, item: ItemResult) -> None:
        if item.failed:
            self.failed += 1
            self._bar.set_postfix({"failed": self.failed}, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
