"""Experiment tracking: what the Tuner and the Evaluator log, on a file tracker and on a real
local MLflow store read back; a failing tracker never breaks a run."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from granite_tuner import (
    ConfigurationError,
    Evaluator,
    Example,
    LabelledSet,
    PromptTuningParameters,
    RetryPolicy,
    Tuner,
)
from granite_tuner.metrics import wilson_interval
from granite_tuner.testing import FakeWatsonx, ServerHandle
from granite_tuner.tracking import FileTracker, MLflowTracker, Tracker
from tests.fakes import watsonx_client
from tests.tiny_model import review_examples

pytestmark = pytest.mark.anyio

BASE_MODEL = "ibm/granite-13b-instruct-v2"
PARAMETERS = {"num_epochs": 3, "batch_size": 8, "learning_rate": 0.3}
TEST_SET = [Example(input=f"review {i}", output=str(i % 2)) for i in range(20)]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def watsonx() -> Iterator[tuple[FakeWatsonx, ServerHandle]]:
    fake = FakeWatsonx(training_polls=3, metrics_per_epoch=2)
    with fake.serve(tls=True) as handle:
        yield fake, handle


def training_rows() -> list[dict[str, str]]:
    return [{"input": f"visit {n}", "output": str(n % 2)} for n in range(60)]


async def tune_on_fake(watsonx: tuple[FakeWatsonx, ServerHandle], trackers: list[Any]) -> Any:
    fake, handle = watsonx
    retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.02)
    async with watsonx_client(fake, handle, retry=retry) as client:
        return await Tuner(
            client,
            base_model=BASE_MODEL,
            training_data=training_rows(),
            parameters=PARAMETERS,
            poll_interval=(0.01, 0.05),
            name="reviews",
            trackers=trackers,
        ).run()


async def half_right(prompt: str) -> str:
    """Right on even reviews only."""
    return "0"


async def always_right(prompt: str) -> str:
    return str(int(prompt.split()[-1]) % 2)


def by_event(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == kind]


# --- the protocol, on our own file tracker ---------------------------------------------------


async def test_tuner_logs_parameters_epochs_curve_and_result(
    watsonx: tuple[FakeWatsonx, ServerHandle], tmp_path: Path
) -> None:
    tracker = FileTracker(tmp_path / "tracking")
    result = await tune_on_fake(watsonx, [tracker])
    events = tracker.events()
    assert events[0]["event"] == "start"
    assert events[-1] == {**events[-1], "event": "finish", "succeeded": True}
    (start,) = by_event(events, "start")
    assert start["name"] == "reviews"
    parameters = start["parameters"]
    assert parameters["run_id"] == result.run_id
    assert parameters["base_model"] == BASE_MODEL
    assert parameters["backend"] == "watsonx"
    assert parameters["num_epochs"] == 3
    assert parameters["learning_rate"] == 0.3
    epochs = [e for e in by_event(events, "metrics") if "train_loss" in e["metrics"]]
    assert [e["step"] for e in epochs] == [1, 2, 3]
    assert [e["metrics"]["train_loss"] for e in epochs] == pytest.approx(result.loss_per_epoch)
    artifacts = {e["name"]: Path(e["path"]) for e in by_event(events, "artifact")}
    assert set(artifacts) == {"tuning_result.json", "learning_curve.png"}  # watsonx: no prompt
    assert artifacts["learning_curve.png"].read_bytes()[:8] == PNG
    kept = json.loads(artifacts["tuning_result.json"].read_text())
    assert kept["run_id"] == result.run_id


async def test_local_runs_log_validation_figures_and_the_soft_prompt(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from safetensors import safe_open

    from granite_tuner.backends.local import LocalClient

    tracker = FileTracker(tmp_path / "tracking")
    async with LocalClient(str(tiny_model_dir), home=tmp_path / "home") as client:
        result = await Tuner(
            client,
            base_model=str(tiny_model_dir),
            training_data=LabelledSet(examples=tuple(review_examples(40))),
            parameters=PromptTuningParameters(
                num_epochs=2,
                batch_size=4,
                learning_rate=0.1,
                num_virtual_tokens=4,
                init_method="random",
            ),
            poll_interval=(0.01, 0.05),
            trackers=[tracker],
        ).run()
    events = tracker.events()
    epochs = [e["metrics"] for e in by_event(events, "metrics") if "train_loss" in e["metrics"]]
    assert [m["validation_loss"] for m in epochs] == result.validation_loss_per_epoch
    assert "validation_accuracy" in epochs[0]
    artifacts = {e["name"]: Path(e["path"]) for e in by_event(events, "artifact")}
    with safe_open(str(artifacts["soft_prompt.safetensors"]), "pt") as weights:
        (key,) = weights.keys()
        assert weights.get_tensor(key).shape[0] == 4  # the 4 virtual tokens


async def test_evaluator_logs_scores_intervals_p_value_report_and_figure(tmp_path: Path) -> None:
    tracker = FileTracker(tmp_path / "tracking")
    evaluator = Evaluator(trackers=[tracker])
    report = await evaluator.compare(TEST_SET, tuned=always_right, base=half_right)
    events = tracker.events()
    (start,) = by_event(events, "start")
    assert start["name"] == "evaluation"
    assert start["parameters"]["evaluation.targets"] == "tuned, base"
    assert start["parameters"]["evaluation.baseline"] == "tuned"
    (numbers,) = by_event(events, "metrics")
    metrics = numbers["metrics"]
    assert metrics["base.accuracy"] == 0.5
    assert metrics["base.accuracy_ci_low"] == wilson_interval(10, 20).low
    assert metrics["tuned.accuracy_ci_high"] == 1.0
    (comparison,) = report.comparisons
    assert metrics["base_vs_tuned.mcnemar_p"] == comparison.p_value
    artifacts = {e["name"]: Path(e["path"]) for e in by_event(events, "artifact")}
    assert set(artifacts) == {"comparison.json", "comparison.md", "comparison.png"}
    assert artifacts["comparison.png"].read_bytes()[:8] == PNG
    assert "McNemar p" in artifacts["comparison.md"].read_text()
    assert by_event(events, "finish") == [by_event(events, "finish")[0]]

    single = FileTracker(tmp_path / "single")
    await Evaluator(trackers=[single]).evaluate(TEST_SET, always_right, name="tuned <v2>")
    names = {e["name"] for e in by_event(single.events(), "artifact")}
    assert names == {
        "evaluation_tuned__v2_.json",
        "evaluation_tuned__v2_.md",
        "evaluation_tuned__v2_.png",
    }


class Broken:
    """A tracker whose every method fails, as a tracking server that is down would."""

    def start(self, name: str, parameters: Mapping[str, Any]) -> None:
        raise ConnectionError("tracking server unreachable")

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        raise ConnectionError("tracking server unreachable")

    def log_artifact(self, name: str, data: bytes) -> None:
        raise OSError("disk full")

    def finish(self, *, succeeded: bool) -> None:
        raise RuntimeError("boom")


async def test_a_failing_tracker_is_logged_and_never_breaks_a_run(
    watsonx: tuple[FakeWatsonx, ServerHandle], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    healthy = FileTracker(tmp_path / "tracking")
    with caplog.at_level(logging.WARNING, logger="granite_tuner.tracking"):
        result = await tune_on_fake(watsonx, [Broken(), healthy])
        report = await Evaluator(trackers=[Broken(), healthy]).evaluate(TEST_SET, always_right)
    assert result.succeeded
    assert report.metrics.accuracy == 1.0
    failures = [r.getMessage() for r in caplog.records if r.name == "granite_tuner.tracking"]
    assert any(
        "Broken failed (ConnectionError: tracking server unreachable)" in m for m in failures
    )
    assert any("OSError: disk full" in m for m in failures)
    # The other tracker got everything all the same.
    finished = by_event(healthy.events(), "finish")
    assert [e["succeeded"] for e in finished] == [True, True]


def test_trackers_are_checked() -> None:
    assert isinstance(FileTracker("x"), Tracker)
    with pytest.raises(ConfigurationError, match="not a tracker"):
        Evaluator(trackers=[object()])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="a list of trackers"):
        Evaluator(trackers=FileTracker("x"))  # type: ignore[arg-type]


# --- MLflow, on a real local store --------------------------------------------------------------


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real MLflow store in a temporary folder (mlflow-skinny's local store)."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this opt-in
    return (tmp_path / "mlruns").as_uri()


async def test_mlflow_round_trip_on_a_real_store(
    watsonx: tuple[FakeWatsonx, ServerHandle], mlflow_uri: str
) -> None:
    from mlflow.tracking import MlflowClient

    tracker = MLflowTracker(mlflow_uri, experiment="grooming")
    result = await tune_on_fake(watsonx, [tracker])
    await Evaluator(trackers=[tracker]).compare(TEST_SET, tuned=always_right, base=half_right)

    client = MlflowClient(tracking_uri=mlflow_uri)
    assert tracker.run_id is not None
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "reviews"
    assert client.get_experiment(run.info.experiment_id).name == "grooming"
    params = run.data.params
    assert params["run_id"] == result.run_id
    assert params["num_epochs"] == "3"
    assert params["evaluation.targets"] == "tuned, base"
    history = client.get_metric_history(tracker.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx(result.loss_per_epoch)
    assert run.data.metrics["base.accuracy"] == 0.5
    assert run.data.metrics["base_vs_tuned.mcnemar_p"] > 0
    names = {f.path for f in client.list_artifacts(tracker.run_id)}
    assert {
        "learning_curve.png",
        "tuning_result.json",
        "comparison.json",
        "comparison.md",
        "comparison.png",
    } <= names
    assert read_head(client.download_artifacts(tracker.run_id, "learning_curve.png")) == PNG


def read_head(path: str) -> bytes:
    return Path(path).read_bytes()[:8]


def test_mlflow_tracker_repr_keeps_no_credentials(mlflow_uri: str) -> None:
    tracker = MLflowTracker("https://user:s3cret@mlflow.example/", experiment="x")
    assert "s3cret" not in repr(tracker)
    assert "https://***@mlflow.example/" in repr(tracker)
