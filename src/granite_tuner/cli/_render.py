"""What the command shows: messages, progress bars, tables and the `--json` document.

Results (tables, or the one JSON document of `--json`) go to `out` (stdout); messages and
progress bars go to `err` (stderr), so `granite-tuner ... --json | jq` sees only the JSON. Both
consoles are injectable: `scripts/capture_cli.py` passes one recording console for both to save
SVG captures. With `--json` there are no progress bars; messages still go to stderr.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from granite_tuner.backends.base import DeploymentInfo
from granite_tuner.events import (
    EpochCompleted,
    RunFinished,
    RunSubmitted,
    StateChanged,
    StepLogged,
    TuningEvent,
)
from granite_tuner.reports import (
    ComparisonReport,
    ConfidenceInterval,
    EvaluationReport,
    ItemResult,
)
from granite_tuner.runs import CheckpointInfo, TuningResult, epoch_groups

__all__ = ["EvaluationProgress", "Renderer", "TuningProgress", "result_document"]


def result_document(result: TuningResult) -> dict[str, Any]:
    """A tuning result as JSON-ready data, with the numbers a script wants computed."""
    document = result.model_dump(mode="json")
    document.update(
        succeeded=result.succeeded,
        loss_per_epoch=result.loss_per_epoch,
        final_loss=result.final_loss,
        duration_seconds=result.duration_seconds,
    )
    return document


class Renderer:
    """Everything a command writes, to the right stream, in the chosen mode."""

    def __init__(self, *, out: Console, err: Console, json_mode: bool = False) -> None:
        self.out = out
        self.err = err
        self.json_mode = json_mode

    # --- messages (stderr) -------------------------------------------------------------------

    def info(self, message: str) -> None:
        self.err.print(escape(message), highlight=False, soft_wrap=True)

    def success(self, message: str) -> None:
        self.err.print(f"[green]✓[/] {escape(message)}", highlight=False, soft_wrap=True)

    def warning(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

    def error(self, message: str) -> None:
        self.err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)

    # --- results (stdout) --------------------------------------------------------------------

    def document(self, document: Mapping[str, Any]) -> None:
        """The one JSON document of `--json`, alone on stdout."""
        self.out.file.write(json.dumps(document, indent=2, default=str) + "\n")
        self.out.file.flush()

    def show(self, *renderables: RenderableType) -> None:
        """Tables and text for people; nothing in `--json` mode."""
        if not self.json_mode:
            for renderable in renderables:
                self.out.print(renderable)

    # --- progress (stderr) -------------------------------------------------------------------

    @contextmanager
    def tuning_progress(
        self, title: str, *, num_epochs: int | None = None, steps_per_epoch: int | None = None
    ) -> Iterator[TuningProgress]:
        """A live bar of epochs with the step, the loss and the run's state."""
        if self.json_mode:
            yield TuningProgress(None, self, num_epochs=num_epochs, steps_per_epoch=None)
            return
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[epoch]}"),
            TextColumn("{task.fields[loss]}"),
            TextColumn("[cyan]{task.fields[state]}"),
            TimeElapsedColumn(),
            console=self.err,
        )
        with progress:
            task = progress.add_task(title, total=num_epochs, epoch="", loss="", state="starting")
            yield TuningProgress(
                (progress, task), self, num_epochs=num_epochs, steps_per_epoch=steps_per_epoch
            )

    @contextmanager
    def evaluation_progress(self, title: str, total: int) -> Iterator[EvaluationProgress]:
        """A live bar of items done, with their rate and the number that failed."""
        if self.json_mode:
            yield EvaluationProgress(None)
            return
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TextColumn("{task.fields[errors]}"),
            TimeElapsedColumn(),
            console=self.err,
        )
        with progress:
            task = progress.add_task(title, total=total, errors=_errors_text(0))
            yield EvaluationProgress((progress, task))

    # --- tables ------------------------------------------------------------------------------

    def run_table(self, result: TuningResult) -> Table:
        table = _fields_table("Tuning run")
        state_style = "green" if result.succeeded else ("red" if _ended_badly(result) else "cyan")
        losses = result.loss_per_epoch
        rows: list[tuple[str, str | Text | None]] = [
            ("run id", result.run_id),
            ("name", result.name),
            ("state", Text(result.state, style=state_style)),
            ("backend", result.backend),
            ("base model", result.base_model),
            ("tuned model id", result.model_id),
            ("task", result.task_id),
            ("epochs done", str(result.epochs_completed) if losses else None),
            ("final loss", f"{result.final_loss:.4f}" if result.final_loss is not None else None),
            ("loss per epoch", _losses_text(result) if losses else None),
            *_validation_rows(result),
            ("duration", _duration(result.duration_seconds)),
            ("training data", result.data_ref),
            (
                "failure",
                Text(result.failure_message, style="red") if result.failure_message else None,
            ),
        ]
        for name, value in rows:
            if value is not None:
                table.add_row(name, value)
        return table

    def deployment_table(self, info: DeploymentInfo) -> Table:
        table = _fields_table("Deployment")
        style = "green" if info.is_ready else ("red" if info.has_failed else "cyan")
        rows: list[tuple[str, str | Text | None]] = [
            ("deployment id", info.id),
            ("name", info.name),
            ("state", Text(info.state, style=style)),
            ("serving name", info.serving_name),
            ("model id", info.model_id),
            ("base model", info.base_model_id),
            ("failure", info.failure_message),
        ]
        for name, value in rows:
            if value is not None:
                table.add_row(name, value)
        return table

    def metrics_table(self, report: EvaluationReport) -> Group:
        m = report.metrics
        heading = Text.assemble(("Evaluation of ", "italic"), (report.target, "bold"))
        table = Table(box=box.SIMPLE_HEAD)
        table.add_column("metric")
        table.add_column("value", justify="right", no_wrap=True)
        table.add_column("95% CI", justify="right", no_wrap=True)
        positive = f", positive {m.positive_label!r}" if m.average == "binary" else ""
        average = f" ({m.average}{positive})"
        for name, value, interval in (
            ("items", str(m.counts.total), ""),
            ("accuracy", _number(m.accuracy), _interval(m.accuracy_ci)),
            ("precision" + average, _number(m.precision), _interval(m.precision_ci)),
            ("recall" + average, _number(m.recall), _interval(m.recall_ci)),
            ("F1" + average, _number(m.f1), ""),
            ("F1 (macro)", _number(m.macro.f1), ""),
            ("failed", _count(m.counts.failed), ""),
            ("unparsed", _count(m.counts.unparsed), ""),
            ("latency mean", _duration(m.latency.mean_s, precise=True), ""),
            ("latency p95", _duration(m.latency.p95_s, precise=True), ""),
        ):
            table.add_row(name, value, interval)
        confusion = Table(title="Confusion matrix", box=box.SIMPLE_HEAD, title_justify="left")
        confusion.add_column("expected \\ predicted")
        for column in m.columns:
            confusion.add_column(column, justify="right")
        for label, row in zip(m.labels, m.confusion_matrix, strict=True):
            confusion.add_row(label, *(str(n) for n in row))
        return Group(heading, table, confusion)

    def comparison_table(self, report: ComparisonReport) -> Group:
        targets = Table(title="Comparison", box=box.SIMPLE_HEAD, title_justify="left")
        for column in ("target", "accuracy", "F1", "precision", "recall", "failed", "unparsed"):
            targets.add_column(column, justify="left" if column == "target" else "right")
        for name, target in report.reports.items():
            m = target.metrics
            targets.add_row(
                name + (" (baseline)" if name == report.baseline else ""),
                _with_interval(m.accuracy, m.accuracy_ci),
                _number(m.f1),
                _with_interval(m.precision, m.precision_ci),
                _with_interval(m.recall, m.recall_ci),
                _count(m.counts.failed),
                _count(m.counts.unparsed),
            )
        differences = Table(box=box.SIMPLE_HEAD)
        for column in ("comparison", "Δ accuracy", "Δ F1", "b", "c", "McNemar p", ""):
            differences.add_column(column, justify="left" if column == "comparison" else "right")
        for c in report.comparisons:
            verdict = (
                Text("significant", style="green")
                if c.significant()
                else Text("not significant", style="yellow")
            )
            differences.add_row(
                f"{c.target} vs {c.baseline}",
                Text(f"{c.accuracy_difference:+.3f}", style=_sign_style(c.accuracy_difference)),
                Text(f"{c.f1_difference:+.3f}", style=_sign_style(c.f1_difference)),
                str(c.b),
                str(c.c),
                f"{c.p_value:.4g}",
                verdict,
            )
        note = Text(
            "Under each score: its 95% CI (Wilson score interval). "
            "b: baseline right, target wrong; c: baseline wrong, target right; McNemar p: exact "
            "two-sided test of b against c (significant: p < 0.05).",
            style="dim",
        )
        return Group(targets, differences, note)

    def checkpoints_table(self, run_id: str, checkpoints: Sequence[CheckpointInfo]) -> Table:
        """One row per kept checkpoint; the model id is what `deploy` takes."""
        table = Table(
            title=f"Checkpoints of tuning run {run_id}", box=box.SIMPLE_HEAD, title_justify="left"
        )
        for column in ("step", "epoch", "training loss", "val. loss", "val. accuracy"):
            table.add_column(column, justify="right")
        table.add_column("best")
        table.add_column("model id (deploy)", no_wrap=True)
        for c in checkpoints:
            table.add_row(
                str(c.step),
                f"{c.epoch + 1}" + ("" if c.end_of_epoch else " (part)"),
                _optional(c.training_loss),
                _optional(c.validation_loss),
                "-" if c.validation_accuracy is None else f"{c.validation_accuracy:.1%}",
                Text("best", style="green") if c.best else "",
                c.model_id,
            )
        return table

    def objects_table(self, title: str, rows: Sequence[Sequence[str]]) -> Table | Text:
        """The objects a command will act on (kind, id, name, state), never shortened.

        Ids are what a user copies into the next command, and a confirmation must show all
        of what it will delete: when the table would not fit the terminal, each object is
        one plain line instead, which the terminal wraps.
        """
        widths = [max((len(row[i]) for row in rows), default=0) for i in range(4)]
        if sum(widths) + 12 > self.err.width:
            lines = [f"{kind} {id_}  {name}  ({state})" for kind, id_, name, state in rows]
            return Text("\n".join([title, *lines]), overflow="fold")
        table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
        table.add_column("kind", no_wrap=True)
        table.add_column("id", no_wrap=True)
        table.add_column("name", no_wrap=True)
        table.add_column("state", no_wrap=True)
        for row in rows:
            table.add_row(*row)
        return table


class TuningProgress:
    """Turns tuning events into the progress bar; `__call__` is the `on_event` callback."""

    def __init__(
        self,
        bar: tuple[Progress, TaskID] | None,
        renderer: Renderer,
        *,
        num_epochs: int | None,
        steps_per_epoch: int | None,
    ) -> None:
        self._bar = bar
        self._renderer = renderer
        self.num_epochs = num_epochs
        self._steps_per_epoch = steps_per_epoch
        self._steps_in_epoch: dict[int, int] = {}

    def set_num_epochs(self, num_epochs: int | None) -> None:
        if num_epochs and num_epochs != self.num_epochs:
            self.num_epochs = num_epochs
            self._update(total=num_epochs)

    def __call__(self, event: TuningEvent) -> None:
        if isinstance(event, RunSubmitted):
            self._update(state="attached" if event.attached else "submitted")
        elif isinstance(event, StateChanged):
            self._update(state=event.state)
        elif isinstance(event, StepLogged):
            self._step(event)
        elif isinstance(event, EpochCompleted):
            self.set_num_epochs(event.num_epochs)
            self._update(completed=event.epoch + 1, epoch=self._epoch_text(event.epoch))
            line = f"  {self._epoch_text(event.epoch)}: mean loss {event.mean_loss:.4f}"
            line += validation_text(event)
            if self._bar is not None:
                self._bar[0].console.print(line, highlight=False)
        elif isinstance(event, RunFinished):
            self._update(state=event.state)

    def _step(self, event: StepLogged) -> None:
        fields: dict[str, Any] = {}
        if event.loss is not None:
            fields["loss"] = f"loss {event.loss:.3f}"
        if event.epoch is not None:
            count = self._steps_in_epoch[event.epoch] = self._steps_in_epoch.get(event.epoch, 0) + 1
            fields["epoch"] = self._epoch_text(event.epoch)
            if self._steps_per_epoch:
                fields["completed"] = event.epoch + min(count / self._steps_per_epoch, 1.0)
        self._update(**fields)

    def _epoch_text(self, epoch: int) -> str:
        total = f"/{self.num_epochs}" if self.num_epochs else ""
        return f"epoch {epoch + 1}{total}"

    def _update(self, **fields: Any) -> None:
        if self._bar is not None:
            progress, task = self._bar
            progress.update(task, **fields)


class EvaluationProgress:
    """Counts items into the progress bar; `__call__` is the `on_progress` callback."""

    def __init__(self, bar: tuple[Progress, TaskID] | None) -> None:
        self._bar = bar
        self.done = 0
        self.errors = 0

    def __call__(self, item: ItemResult) -> None:
        self.done += 1
        if item.failed:
            self.errors += 1
        if self._bar is not None:
            progress, task = self._bar
            progress.update(task, advance=1, errors=_errors_text(self.errors))


class RateColumn(ProgressColumn):
    """Items per second, as rich measures it over the last few updates."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:5.1f} items/s" if speed else "  – items/s", style="magenta")


def _fields_table(title: str) -> Table:
    table = Table(title=title, box=box.SIMPLE, show_header=False, title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    return table


def _ended_badly(result: TuningResult) -> bool:
    return result.state in ("failed", "canceled", "error")


def _errors_text(count: int) -> str:
    return f"[red]{count} errors[/]" if count else "0 errors"


def _optional(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _number(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "–"


def _interval(interval: ConfidenceInterval | None) -> str:
    return "–" if interval is None else f"{interval.low:.2f}–{interval.high:.2f}"


def _with_interval(value: float, interval: ConfidenceInterval | None) -> Text:
    """A score with its 95% interval on the line under it, so the table stays narrow."""
    text = Text(_number(value))
    if interval is not None:
        text.append("\n" + _interval(interval), style="dim")
    return text


def _count(value: int) -> Text:
    return Text(str(value), style="red" if value else "")


def _sign_style(value: float) -> str:
    return "green" if value > 0 else ("red" if value < 0 else "")


def _losses_text(result: TuningResult) -> str:
    """Mean loss per epoch; an epoch the run stopped in says so and how many steps it had."""
    losses = result.loss_per_epoch
    text = " → ".join(f"{loss:.3f}" for loss in losses)
    if len(losses) > result.epochs_completed:
        steps = len(epoch_groups(result.metrics)[-1][1])
        text += f" (last epoch stopped after {steps} logged step{'s' if steps != 1 else ''})"
    return text


def validation_text(event: EpochCompleted) -> str:
    """ ", validation loss 0.1234, accuracy 0.950 (best so far)" for an epoch that validated."""
    if event.validation_loss is None:
        return ""
    text = f", validation loss {event.validation_loss:.4f}"
    if event.validation_accuracy is not None:
        text += f", accuracy {event.validation_accuracy:.3f}"
    if event.best_epoch == event.epoch:
        text += " (best so far)"
    return text


def _validation_rows(result: TuningResult) -> list[tuple[str, str | Text | None]]:
    if not result.validation:
        return []
    accuracies = result.validation_accuracy_per_epoch
    return [
        (
            "validation loss",
            " → ".join(f"{loss:.3f}" for loss in result.validation_loss_per_epoch),
        ),
        (
            "validation accuracy",
            " → ".join("-" if a is None else f"{a:.3f}" for a in accuracies)
            if any(a is not None for a in accuracies)
            else None,
        ),
        ("kept epoch", None if result.best_epoch is None else str(result.best_epoch + 1)),
        ("stopped", result.stop_reason),
    ]


def _duration(seconds: float | None, *, precise: bool = False) -> str | None:
    if seconds is None:
        return None
    if precise and seconds < 10:
        return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"
