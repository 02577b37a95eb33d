"""Experiment tracking: log a tuning run and its evaluation where a team keeps its runs.

```python
tracker = MLflowTracker(tracking_uri="sqlite:///mlflow.db", experiment="grooming")
result = await Tuner(client, ..., trackers=[tracker]).run()
report = await Evaluator(client, trackers=[tracker]).compare(test, tuned=tuned, base=base)
```

A tracker is anything with the four methods of `Tracker`; the `Tuner` and the `Evaluator`
decide *what* is logged, a tracker only *where*. The `Tuner` logs the run's parameters, each
epoch's training loss (and validation loss and accuracy), the learning-curve PNG, the result
as JSON and the soft prompt (where the backend hands it out: the local one does, watsonx.ai
does not). The `Evaluator` logs each target's scores with their 95% intervals, the report as
JSON and, for a comparison, McNemar's p-value and a figure of the accuracies.

One tracker object is one tracked run: passing the same tracker to the `Tuner` and then to
the `Evaluator` puts the tuning and its evaluation in the same MLflow run.

Trackers are called in a worker thread (an MLflow server may be slow; the event loop must not
wait on it). **A tracker that fails never breaks the run**: its exception is logged on the
`granite_tuner.tracking` logger, and tuning or evaluation goes on.

`FileTracker` writes a JSON Lines file and an artifacts folder; `MLflowTracker` needs the
`granite-tuner[mlflow]` extra (the MLflow client, `mlflow-skinny`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio.to_thread

from granite_tuner._files import write_atomic
from granite_tuner._secrets import get_logger
from granite_tuner.errors import ConfigurationError

if TYPE_CHECKING:
    from granite_tuner.reports import ComparisonReport, EvaluationReport
    from granite_tuner.runs import TuningResult

__all__ = ["FileTracker", "MLflowTracker", "Tracker"]

logger = get_logger("granite_tuner.tracking")


@runtime_checkable
class Tracker(Protocol):
    """Where a run's parameters, metrics and files go. Methods are called in a worker thread.

    `start` begins (or, called again on the same tracker, goes on with) a tracked run; the
    `Tuner` and the `Evaluator` each call it once with their own parameters. `log_metrics`
    records numbers at a step (an epoch, from 1; 0 for an evaluation). `log_artifact` stores a
    file's bytes under `name`. `finish` says whether what was started succeeded.
    """

    def start(self, name: str, parameters: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None: ...

    def log_artifact(self, name: str, data: bytes) -> None: ...

    def finish(self, *, succeeded: bool) -> None: ...


def check_trackers(trackers: Sequence[Tracker] | None) -> tuple[Tracker, ...]:
    """The trackers as a tuple, each checked to have the `Tracker` methods."""
    if trackers is None:
        return ()
    if isinstance(trackers, Tracker) or not isinstance(trackers, Sequence):
        raise ConfigurationError("trackers must be a list of trackers, e.g. [MLflowTracker()].")
    for tracker in trackers:
        if not isinstance(tracker, Tracker):
            raise ConfigurationError(
                f"{type(tracker).__name__} is not a tracker: it needs start, log_metrics, "
                "log_artifact and finish (see granite_tuner.tracking.Tracker)."
            )
    return tuple(trackers)


async def notify(trackers: Sequence[Tracker], call: Callable[[Tracker], None]) -> None:
    """Run `call` on each tracker in a worker thread; a failure is logged, never raised."""
    for tracker in trackers:
        try:
            await anyio.to_thread.run_sync(call, tracker)
        except Exception as exc:  # a tracker must never break a run
            logger.warning(
                "Tracker %s failed (%s: %s); the run goes on without it for this step",
                type(tracker).__name__,
                type(exc).__name__,
                exc,
            )


async def log_finished_run(
    trackers: Sequence[Tracker], result: TuningResult, soft_prompt: bytes | None
) -> None:
    """A finished run's final loss and files, then `finish` (succeeded or not)."""
    files = await _files_of(result_artifacts, result, soft_prompt)
    if result.final_loss is not None:
        final = {"final_loss": result.final_loss}
        step = len(result.loss_per_epoch)
        await notify(trackers, lambda t: t.log_metrics(final, step=step))
    await _log_files(trackers, files)
    await notify(trackers, lambda t: t.finish(succeeded=result.succeeded))


async def log_evaluation(
    trackers: Sequence[Tracker],
    report: EvaluationReport | ComparisonReport,
    parameters: Mapping[str, Any],
) -> None:
    """An evaluation as one tracked step: its settings, every score, its files."""
    from granite_tuner.reports import ComparisonReport

    if isinstance(report, ComparisonReport):
        numbers = comparison_metrics(report)
    else:
        numbers = report_metrics(report)
    await notify(trackers, lambda t: t.start("evaluation", parameters))
    await notify(trackers, lambda t: t.log_metrics(numbers, step=0))
    files = await _files_of(evaluation_artifacts, report)
    await _log_files(trackers, files)
    await notify(trackers, lambda t: t.finish(succeeded=True))


async def _files_of(build: Callable[..., dict[str, bytes]], *args: Any) -> dict[str, bytes]:
    """The files to log, built in a worker thread (PNGs take a moment); none if that fails."""
    try:
        return await anyio.to_thread.run_sync(build, *args)
    except Exception as exc:  # tracking never breaks a run
        logger.warning(
            "Could not build the files for the trackers (%s: %s)", type(exc).__name__, exc
        )
        return {}


async def _log_files(trackers: Sequence[Tracker], files: Mapping[str, bytes]) -> None:
    for name, data in files.items():
        await notify(trackers, partial(_log_artifact, name=name, data=data))


def _log_artifact(tracker: Tracker, *, name: str, data: bytes) -> None:
    tracker.log_artifact(name, data)


# --- what the verbs log --------------------------------------------------------------------


def flat_parameters(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as flat `a.b` keys with plain values; None values are left out."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_parameters(value, f"{name}."))
        elif value is not None:
            flat[name] = value if isinstance(value, bool | int | float | str) else str(value)
    return flat


def result_artifacts(result: TuningResult, soft_prompt: bytes | None) -> dict[str, bytes]:
    """The files a tuning run leaves: its result as JSON, its learning curve (when there are
    losses and matplotlib), its soft prompt (when the backend hands it out)."""
    files = {"tuning_result.json": result.model_dump_json(indent=2).encode("utf-8")}
    if result.loss_per_epoch:
        try:
            from granite_tuner._plotting import png_bytes

            files["learning_curve.png"] = png_bytes(result.plot_learning_curve())
        except ConfigurationError as exc:  # matplotlib is not installed
            logger.info("No learning curve for the trackers: %s", exc)
    if soft_prompt is not None:
        files["soft_prompt.safetensors"] = soft_prompt
    return files


def evaluation_artifacts(report: EvaluationReport | ComparisonReport) -> dict[str, bytes]:
    """An evaluation's files: the report as JSON and Markdown, and a figure of its scores."""
    from granite_tuner.reports import ComparisonReport

    if isinstance(report, ComparisonReport):
        reports, stem = list(report.reports.values()), "comparison"
        title = f"Scores on {_item_count(reports)} examples (baseline: {report.baseline})"
    else:
        reports, stem = [report], f"evaluation_{_artifact_name(report.target)}"
        title = f"Scores of {report.target} on {_item_count(reports)} examples"
    files = {
        f"{stem}.json": report.model_dump_json(indent=2).encode("utf-8"),
        f"{stem}.md": report.to_markdown().encode("utf-8"),
    }
    try:
        from granite_tuner._plotting import png_bytes, scores_figure

        bars = [
            (r.target, name, value, *_ends(interval))
            for r in reports
            for name, value, interval in (
                ("accuracy", r.metrics.accuracy, r.metrics.accuracy_ci),
                ("precision", r.metrics.precision, r.metrics.precision_ci),
                ("recall", r.metrics.recall, r.metrics.recall_ci),
                ("F1", r.metrics.f1, None),
            )
        ]
        files[f"{stem}.png"] = png_bytes(scores_figure(bars, title))
    except ConfigurationError as exc:  # matplotlib is not installed
        logger.info("No score figure for the trackers: %s", exc)
    return files


def _ends(interval: Any) -> tuple[float | None, float | None]:
    return (None, None) if interval is None else (interval.low, interval.high)


def _item_count(reports: Sequence[EvaluationReport]) -> int:
    return reports[0].metrics.counts.total if reports else 0


def report_metrics(report: EvaluationReport) -> dict[str, float]:
    """A target's scores and their 95% intervals, as `<target>.<metric>` numbers."""
    m = report.metrics
    values: dict[str, float] = {
        "accuracy": m.accuracy,
        "precision": m.precision,
        "recall": m.recall,
        "f1": m.f1,
        "failed": m.counts.failed,
        "unparsed": m.counts.unparsed,
    }
    for name, interval in (
        ("accuracy", m.accuracy_ci),
        ("precision", m.precision_ci),
        ("recall", m.recall_ci),
    ):
        if interval is not None:
            values[f"{name}_ci_low"] = interval.low
            values[f"{name}_ci_high"] = interval.high
    return {f"{metric_key(report.target)}.{key}": float(v) for key, v in values.items()}


def comparison_metrics(report: ComparisonReport) -> dict[str, float]:
    """Every target's scores, and each comparison's differences and McNemar p-value."""
    values: dict[str, float] = {}
    for target in report.reports.values():
        values.update(report_metrics(target))
    for c in report.comparisons:
        key = metric_key(f"{c.target}_vs_{c.baseline}")
        values[f"{key}.accuracy_difference"] = c.accuracy_difference
        values[f"{key}.f1_difference"] = c.f1_difference
        values[f"{key}.mcnemar_p"] = c.p_value
    return values


def metric_key(name: str) -> str:
    """A target name as a metric-name part (MLflow allows letters, digits, `_-./ ` only)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name) or "_"


# --- trackers ------------------------------------------------------------------------------


class FileTracker:
    """Logs to a folder: `events.jsonl` (one JSON object per call) and `artifacts/<name>`.

    Small and dependency-free: for a team without a tracking server, for CI, and as the
    simplest example of a `Tracker`.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.events_path = self.folder / "events.jsonl"
        self.artifacts = self.folder / "artifacts"

    def __repr__(self) -> str:
        return f"FileTracker({str(self.folder)!r})"

    def _write(self, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"at": datetime.now(UTC).isoformat(), **record}
        with self.events_path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record, default=str) + "\n")

    def start(self, name: str, parameters: Mapping[str, Any]) -> None:
        self._write({"event": "start", "name": name, "parameters": dict(parameters)})

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        self._write({"event": "metrics", "step": step, "metrics": dict(metrics)})

    def log_artifact(self, name: str, data: bytes) -> None:
        path = write_atomic(self.artifacts / _artifact_name(name), data)
        self._write({"event": "artifact", "name": name, "path": str(path), "bytes": len(data)})

    def finish(self, *, succeeded: bool) -> None:
        self._write({"event": "finish", "succeeded": succeeded})

    def events(self) -> list[dict[str, Any]]:
        """Everything logged so far, in order."""
        if not self.events_path.exists():
            return []
        lines = self.events_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]


class MLflowTracker:
    """Logs to MLflow: parameters, metrics per step, and files as run artifacts.

    Args:
        tracking_uri: where MLflow keeps runs: a server (`http://...`), a database
            (`sqlite:///mlflow.db`, needs the full `mlflow` package) or a folder; by default
            MLflow's own (`$MLFLOW_TRACKING_URI`, else its default).
        experiment: the experiment's name; created when missing.
        run_name: the MLflow run's name; by default the name the `Tuner` (or `Evaluator`)
            starts it with.
        run_id: log into this existing MLflow run instead of creating one.

    The MLflow run is created at the first `start`; later `start`s (the evaluator's, after
    the tuner's) log into the same run. Uses MLflow's client API, so nothing global (the
    "active run") is touched.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        experiment: str = "granite-tuner",
        run_name: str | None = None,
        run_id: str | None = None,
    ) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigurationError(
                "MLflowTracker needs MLflow: pip install 'granite-tuner[mlflow]'."
            ) from None
        self._client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        #: The MLflow run logged into, once started.
        self.run_id = run_id

    def __repr__(self) -> str:
        uri = None if self.tracking_uri is None else _without_credentials(self.tracking_uri)
        return (
            f"MLflowTracker(tracking_uri={uri!r}, "
            f"experiment={self.experiment!r}, run_id={self.run_id!r})"
        )

    def start(self, name: str, parameters: Mapping[str, Any]) -> None:
        if self.run_id is None:
            found = self._client.get_experiment_by_name(self.experiment)
            experiment_id = (
                found.experiment_id
                if found is not None
                else self._client.create_experiment(self.experiment)
            )
            run = self._client.create_run(experiment_id, run_name=self.run_name or name)
            self.run_id = run.info.run_id
        else:
            self._client.update_run(self.run_id, status="RUNNING")
        from mlflow.entities import Param

        params = [Param(key, str(value)[:6000]) for key, value in parameters.items()]
        if params:
            self._client.log_batch(self.run_id, params=params)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        from mlflow.entities import Metric

        at = int(datetime.now(UTC).timestamp() * 1000)
        entries = [Metric(key, float(value), at, step) for key, value in metrics.items()]
        self._client.log_batch(self._started(), metrics=entries)

    def log_artifact(self, name: str, data: bytes) -> None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="granite-tuner-mlflow-") as folder:
            path = Path(folder) / _artifact_name(name)
            path.write_bytes(data)
            self._client.log_artifact(self._started(), str(path))

    def finish(self, *, succeeded: bool) -> None:
        self._client.set_terminated(self._started(), "FINISHED" if succeeded else "FAILED")

    def _started(self) -> str:
        if self.run_id is None:
            raise ConfigurationError("MLflowTracker: start() has not been called yet.")
        return self.run_id


def _without_credentials(uri: str) -> str:
    """`https://user:secret@host/` -> `https://***@host/`: a URI in a repr keeps no secret."""
    return re.sub(r"//[^/@]*@", "//***@", uri)


def _artifact_name(name: str) -> str:
    """A file name safe to write: no folders, nothing hidden."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", Path(name).name).lstrip(".")
    return cleaned or "artifact"
