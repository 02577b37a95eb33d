"""Tuner against the fake watsonx.ai over HTTPS: run, wait, events, faults, re-attach, errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import numpy as np
import pytest

from granite_tuner import (
    ConfigurationError,
    EpochCompleted,
    GraniteTunerError,
    InvalidDataError,
    InvalidParametersError,
    RetryPolicy,
    RunFinished,
    RunNotFoundError,
    RunSubmitted,
    StateChanged,
    StepLogged,
    Tuner,
    TuningEvent,
    TuningFailedError,
    TuningResult,
    TuningTimeoutError,
    WatsonxClient,
)
from granite_tuner._plotting import learning_curve_figure
from granite_tuner.runs import loss_per_epoch
from granite_tuner.testing import FakeWatsonx, Fault, ServerHandle
from tests.fakes import watsonx_client

pytestmark = pytest.mark.anyio

BASE_MODEL = "ibm/granite-13b-instruct-v2"
FAST_POLL = (0.01, 0.05)
PARAMETERS: dict[str, Any] = {
    "num_epochs": 3,
    "learning_rate": 0.3,
    "batch_size": 8,
    "init_method": "text",
    "init_text": "Is the customer satisfied?",
    "verbalizer": "{{input}}",
}


def review_rows(count: int = 60) -> list[dict[str, str]]:
    return [
        {
            "input": f"Comment: visit {n}, the groomer was {'kind' if n % 2 else 'late'}.\n"
            "Satisfaction:\n",
            "output": str(n % 2),
        }
        for n in range(count)
    ]


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in review_rows()), encoding="utf-8")
    return path


@pytest.fixture
def fake() -> FakeWatsonx:
    return FakeWatsonx(training_polls=4, metrics_per_epoch=2)


@pytest.fixture
def server(fake: FakeWatsonx) -> Iterator[ServerHandle]:
    with fake.serve(tls=True) as handle:
        yield handle


def make_client(
    fake: FakeWatsonx, server: ServerHandle, retry: RetryPolicy | None = None
) -> WatsonxClient:
    return watsonx_client(
        fake, server, retry=retry or RetryPolicy(initial_backoff=0.01, max_backoff=0.02)
    )


def make_tuner(client: WatsonxClient, train_file: Any, **options: Any) -> Tuner:
    settings: dict[str, Any] = {
        "base_model": BASE_MODEL,
        "training_data": train_file,
        "parameters": PARAMETERS,
        "poll_interval": FAST_POLL,
        "name": "reviews",
    }
    settings.update(options)
    return Tuner(client, **settings)


def fake_epoch_losses(fake: FakeWatsonx, run_id: str) -> list[float]:
    """Per-epoch means computed straight from the fake's own metric entries."""
    by_epoch: dict[int, list[float]] = {}
    for entry in fake.trainings[run_id].metrics:
        by_epoch.setdefault(entry["ml_metrics"]["epoch"], []).append(entry["ml_metrics"]["loss"])
    return [sum(v) / len(v) for _, v in sorted(by_epoch.items())]


async def test_run_returns_a_completed_result(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path
) -> None:
    async with make_client(fake, server) as client:
        result = await make_tuner(client, train_file).run()
    assert result.state == "completed"
    assert result.succeeded
    assert result.backend == "watsonx"
    assert result.model_id == fake.trainings[result.run_id].model_id
    assert result.base_model == BASE_MODEL
    assert result.task_id == "classification"
    assert result.parameters["num_epochs"] == 3
    assert result.data_ref in fake.assets
    assert result.loss_per_epoch == pytest.approx(fake_epoch_losses(fake, result.run_id))
    assert len(result.loss_per_epoch) == 3
    assert result.final_loss == result.loss_per_epoch[-1]
    assert result.created_at is not None
    assert result.finished_at is not None
    assert result.duration_seconds is not None
    assert result.duration_seconds >= 0
    assert fake.count("POST", "^/ml/v4/trainings$") == 1
    assert TuningResult.model_validate_json(result.model_dump_json()) == result


async def test_loss_per_epoch_equals_what_the_official_sdk_reports(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path
) -> None:
    async with make_client(fake, server) as client:
        result = await make_tuner(client, train_file).run()

    def official_sdk() -> tuple[list[float], float]:
        import warnings

        from ibm_watsonx_ai import Credentials
        from ibm_watsonx_ai.experiment import TuneExperiment
        from ibm_watsonx_ai.foundation_models.base_tuner import BaseTuner

        credentials = Credentials(
            url=server.url,
            platform_url=server.url,
            token=fake.issue_token(),
            verify=server.ca_cert_path,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            experiment: Any = TuneExperiment(credentials, project_id=fake.project_id)
            tuner = experiment.runs.get_tuner(result.run_id)
            summary = tuner.summary()
            details = experiment.client.training.get_details(result.run_id, include_metrics=True)
        per_epoch = BaseTuner._get_average_loss_score_for_each_epoch(details, epoch=0)
        return [float(x) for x in per_epoch], float(summary["loss"].iloc[0])

    sdk_per_epoch, sdk_summary_loss = await anyio.to_thread.run_sync(official_sdk)
    assert result.loss_per_epoch == pytest.approx(sdk_per_epoch)
    assert result.final_loss == pytest.approx(sdk_summary_loss)


async def test_events_arrive_in_order_with_the_loss_of_each_epoch(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path
) -> None:
    seen_by_callback: list[TuningEvent] = []
    async with make_client(fake, server) as client:
        tuner = make_tuner(client, train_file, on_event=seen_by_callback.append)
        streamed = [event async for event in tuner.events()]
    assert streamed == seen_by_callback
    assert isinstance(streamed[0], RunSubmitted)
    assert isinstance(streamed[-1], RunFinished)
    assert streamed[-1].state == "completed"
    states = [e.state for e in streamed if isinstance(e, StateChanged)]
    assert states[-1] == "completed"
    assert "running" in states
    epochs = [e for e in streamed if isinstance(e, EpochCompleted)]
    assert [e.epoch for e in epochs] == [0, 1, 2]
    run_id = streamed[0].run_id
    assert [e.mean_loss for e in epochs] == pytest.approx(fake_epoch_losses(fake, run_id))
    assert all(e.num_epochs == 3 for e in epochs)
    steps = [e for e in streamed if isinstance(e, StepLogged)]
    assert len(steps) == 6
    # Each epoch's event comes after all of that epoch's steps.
    for epoch_event in epochs:
        position = streamed.index(epoch_event)
        later_steps = [e for e in streamed[position:] if isinstance(e, StepLogged)]
        assert all(s.epoch is not None and s.epoch > epoch_event.epoch for s in later_steps)


async def test_an_async_callback_receives_events_too(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path
) -> None:
    kinds: list[str] = []

    async def record(event: TuningEvent) -> None:
        await anyio.lowlevel.checkpoint()
        kinds.append(event.kind)

    async with make_client(fake, server) as client:
        await make_tuner(client, train_file, on_event=record).run()
    assert kinds[0] == "submitted"
    assert kinds[-1] == "finished"


async def test_dropped_connections_while_polling_do_not_fail_the_run(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path
) -> None:
    fault = fake.faults.add(
        Fault(action="drop_before", method="GET", path=r"^/ml/v4/trainings/[^/]+$", times=5)
    )
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01)
    async with make_client(fake, server, retry=retry) as client:
        result = await make_tuner(client, train_file).run()
    assert fault.hits == 5
    assert result.state == "completed"


async def test_the_timeout_raises_a_typed_error_carrying_the_run_id(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path
) -> None:
    fake.training_polls = 10**9
    async with make_client(fake, server) as client:
        tuner = make_tuner(client, train_file, timeout=0.3)
        with pytest.raises(TuningTimeoutError) as info:
            await tuner.run()
    assert info.value.run_id == tuner.run_id
    assert info.value.run_id is not None
    assert isinstance(info.value, TimeoutError)
    assert info.value.run_id in str(info.value)
    assert fake.trainings[info.value.run_id].state == "running"


@pytest.mark.parametrize("cancel_remote", [False, True])
async def test_cancelling_the_wait_cancels_the_remote_run_only_when_asked(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path, cancel_remote: bool
) -> None:
    fake.training_polls = 10**9
    running = anyio.Event()

    def on_event(event: TuningEvent) -> None:
        if isinstance(event, StateChanged) and event.state == "running":
            running.set()

    async with make_client(fake, server) as client:
        tuner = make_tuner(client, train_file, cancel_on_exit=cancel_remote, on_event=on_event)
        async with anyio.create_task_group() as tg:
            tg.start_soon(tuner.run)
            await running.wait()
            tg.cancel_scope.cancel()
    assert tuner.run_id is not None
    expected = "canceled" if cancel_remote else "running"
    assert fake.trainings[tuner.run_id].state == expected


async def test_reattach_by_id_from_a_new_client(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path
) -> None:
    async with make_client(fake, server) as first_client:
        run_id = await make_tuner(first_client, train_file).submit()
    async with make_client(fake, server) as second_client:
        result = await Tuner.attach(second_client, run_id=run_id, poll_interval=FAST_POLL).wait()
        again = await Tuner.attach(second_client, run_id=run_id, poll_interval=FAST_POLL).wait()
    assert result.run_id == run_id
    assert result.state == "completed"
    assert again.loss_per_epoch == result.loss_per_epoch
    assert fake.count("POST", "^/ml/v4/trainings$") == 1


async def test_attach_by_name_and_resume(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path
) -> None:
    async with make_client(fake, server) as client:
        run_id = await make_tuner(client, train_file, name="nightly").submit()
        attached = await Tuner.attach(client, name="nightly", poll_interval=FAST_POLL).wait()
        resumed = await make_tuner(client, train_file, name="nightly", resume=True).run()
        with pytest.raises(RunNotFoundError, match="no-such-run"):
            await Tuner.attach(client, name="no-such-run").wait()
    assert attached.run_id == run_id
    assert resumed.run_id == run_id
    assert fake.count("POST", "^/ml/v4/trainings$") == 1


async def test_a_lost_create_answer_still_gives_one_run(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path
) -> None:
    fake.faults.add(Fault(action="drop_after", method="POST", path="^/ml/v4/trainings$"))
    async with make_client(fake, server) as client:
        result = await make_tuner(client, train_file).run()
    assert list(fake.trainings) == [result.run_id]


async def test_identical_training_data_is_uploaded_once(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path
) -> None:
    async with make_client(fake, server) as client:
        first = await make_tuner(client, train_file).submit()
        second = await make_tuner(client, review_rows()).submit()
    assert first != second
    assert fake.count("POST", "^/v2/assets$") == 1
    assert len(fake.assets) == 1


async def test_a_failed_run_raises_with_the_service_message(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path
) -> None:
    fake.training_outcome = "failed"
    fake.training_failure_message = "Training failed: the GPU ran out of memory"
    async with make_client(fake, server) as client:
        with pytest.raises(TuningFailedError) as info:
            await make_tuner(client, train_file).run()
    assert "the GPU ran out of memory" in str(info.value)
    assert isinstance(info.value.result, TuningResult)
    assert info.value.result.state == "failed"
    assert info.value.run_id == info.value.result.run_id


async def test_a_deprecated_base_model_gives_a_warning(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path
) -> None:
    async with make_client(fake, server) as client:
        result = await make_tuner(client, train_file, base_model="google/flan-t5-xl").run()
    assert any("deprecated" in w for w in result.warnings)


async def test_the_learning_curve_png_has_one_point_per_epoch(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path, tmp_path: Path
) -> None:
    async with make_client(fake, server) as client:
        result = await make_tuner(client, train_file).run()
    path = result.plot_learning_curve(tmp_path / "plots" / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["curve.png"]  # no temporary left
    per_epoch_axes = learning_curve_figure(result).axes[0]
    (line,) = per_epoch_axes.lines
    assert np.asarray(line.get_xdata()).tolist() == [1, 2, 3]
    assert np.asarray(line.get_ydata()).tolist() == pytest.approx(result.loss_per_epoch)


def test_loss_per_epoch_groups_consecutive_points_like_the_sdk() -> None:
    from granite_tuner.runs import MetricPoint

    points = [
        MetricPoint(epoch=0, loss=4.0),
        MetricPoint(epoch=0, loss=2.0),
        MetricPoint(epoch=1, loss=1.0),
        MetricPoint(epoch=1, loss=None),
        MetricPoint(epoch=2, loss=0.5),
    ]
    assert loss_per_epoch(points) == [3.0, 1.0, 0.5]
    assert loss_per_epoch([]) == []


# --- bad input: a typed error that names what to fix, and nothing reaches the service ------------


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


BadCase = Callable[[Path], dict[str, Any]]
GOOD = review_rows()

BAD_INPUTS: dict[str, tuple[BadCase, type[GraniteTunerError], str]] = {
    "empty file": (lambda d: {"training_data": write(d, "t.jsonl", "")}, InvalidDataError, "empty"),
    "missing file": (lambda d: {"training_data": d / "nope.jsonl"}, InvalidDataError, "nope.jsonl"),
    "invalid JSON at line 3": (
        lambda d: {"training_data": write(d, "t.jsonl", jsonl(GOOD[:2]) + "{oops\n" + jsonl(GOOD))},
        InvalidDataError,
        "t.jsonl:3",
    ),
    "missing output key": (
        lambda d: {"training_data": [{"input": "x"}, *GOOD]},
        InvalidDataError,
        "'output' is missing",
    ),
    "non-string output": (
        lambda d: {"training_data": [{"input": "x", "output": ["1"]}, *GOOD]},
        InvalidDataError,
        "output",
    ),
    "boolean label": (
        lambda d: {"training_data": [{"input": "x", "output": True}, *GOOD]},
        InvalidDataError,
        "output",
    ),
    "empty input": (
        lambda d: {"training_data": [{"input": "  ", "output": "1"}, *GOOD]},
        InvalidDataError,
        "input",
    ),
    "too few examples": (
        lambda d: {"training_data": GOOD[:49]},
        InvalidDataError,
        "50",
    ),
    "too many examples": (
        lambda d: {"training_data": review_rows(10_001)},
        InvalidDataError,
        "10,000",
    ),
    "wrong encoding": (
        lambda d: {
            "training_data": write(d, "t.jsonl", jsonl(GOOD).encode() + "é".encode("latin-1"))
        },
        InvalidDataError,
        "UTF-8",
    ),
    "bad CSV header": (
        lambda d: {"training_data": write(d, "t.csv", "text,label\nhello,1\n")},
        InvalidDataError,
        "input",
    ),
    "JSON that is not a list": (
        lambda d: {"training_data": write(d, "t.json", '{"input": "x"}x')},
        InvalidDataError,
        "t.json",
    ),
    "unknown task": (lambda d: {"task": "translation"}, InvalidParametersError, "classification"),
    "epochs out of range": (
        lambda d: {"parameters": {"num_epochs": 0}},
        InvalidParametersError,
        "num_epochs",
    ),
    "learning rate out of range": (
        lambda d: {"parameters": {"learning_rate": 0.9}},
        InvalidParametersError,
        "learning_rate",
    ),
    "batch size out of range": (
        lambda d: {"parameters": {"batch_size": 17}},
        InvalidParametersError,
        "batch_size",
    ),
    "max input tokens out of range": (
        lambda d: {"parameters": {"max_input_tokens": 1000}},
        InvalidParametersError,
        "max_input_tokens",
    ),
    "misspelt parameter": (
        lambda d: {"parameters": {"num_epoch": 3}},
        InvalidParametersError,
        "num_epochs",
    ),
    "verbalizer without placeholder": (
        lambda d: {"parameters": {"verbalizer": "Input: Output:"}},
        InvalidParametersError,
        "{{input}}",
    ),
    "text init without text": (
        lambda d: {"parameters": {"init_method": "text"}},
        InvalidParametersError,
        "init_text",
    ),
    "task disagrees with parameters": (
        lambda d: {"task": "generation", "parameters": {"task_id": "classification"}},
        InvalidParametersError,
        "task",
    ),
    "unknown base model": (
        lambda d: {"base_model": "ibm/granite-99b"},
        InvalidParametersError,
        "granite-13b-instruct-v2",
    ),
    "base model not tunable": (
        lambda d: {"base_model": "ibm/granite-3-8b-instruct"},
        InvalidParametersError,
        "cannot be prompt-tuned",
    ),
    "no base model": (lambda d: {"base_model": None}, InvalidParametersError, "base_model"),
    "no training data": (lambda d: {"training_data": None}, ConfigurationError, "training_data"),
    "negative timeout": (lambda d: {"timeout": -1}, ConfigurationError, "timeout"),
    "bad poll interval": (lambda d: {"poll_interval": (5, 1)}, ConfigurationError, "poll_interval"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
async def test_bad_input_is_refused_before_anything_is_sent(
    case: str, fake: FakeWatsonx, server: ServerHandle, tmp_path: Path
) -> None:
    make_options, error_type, fix = BAD_INPUTS[case]
    options: dict[str, Any] = {
        "base_model": BASE_MODEL,
        "training_data": GOOD,
        "parameters": PARAMETERS,
        "poll_interval": FAST_POLL,
    }
    options.update(make_options(tmp_path))
    async with make_client(fake, server) as client:
        with pytest.raises(error_type) as info:
            await Tuner(client, **options).run()
    assert fix in str(info.value)
    assert fake.count("POST", "^/v2/assets") == 0
    assert fake.count("PUT", ".*") == 0
    assert fake.count("POST", "^/ml/v4/trainings") == 0
