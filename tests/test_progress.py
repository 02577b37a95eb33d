"""Opt-in progress bars: `Tuner.run(progress=True)`, `Evaluator.evaluate(..., progress=True)`.

The bars are tqdm's, written to stderr outside Jupyter; by default nothing is written at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from granite_tuner import Evaluator, Example, RetryPolicy, Tuner
from granite_tuner._progress import _open_bar
from granite_tuner.testing import FakeWatsonx, ServerHandle
from tests.fakes import watsonx_client

pytestmark = pytest.mark.anyio

BASE_MODEL = "ibm/granite-13b-instruct-v2"
EXAMPLES = [Example(input=f"review {i}", output=str(i % 2)) for i in range(10)]


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    rows = [
        {"input": f"visit {n}: {'kind' if n % 2 else 'late'}", "output": str(n % 2)}
        for n in range(60)
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def server() -> Iterator[tuple[FakeWatsonx, ServerHandle]]:
    fake = FakeWatsonx(training_polls=3, metrics_per_epoch=2)
    with fake.serve(tls=True) as handle:
        yield fake, handle


async def tune(server: tuple[FakeWatsonx, ServerHandle], train_file: Path, **run: bool) -> str:
    fake, handle = server
    retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.02)
    async with watsonx_client(fake, handle, retry=retry) as client:
        result = await Tuner(
            client,
            base_model=BASE_MODEL,
            training_data=train_file,
            parameters={"num_epochs": 3, "batch_size": 8},
            poll_interval=(0.01, 0.05),
            name="reviews",
        ).run(**run)
    return result.state


async def echo(prompt: str) -> str:
    """A target that answers the label hidden in the review's number."""
    return str(int(prompt.split()[-1]) % 2)


async def test_tuning_progress_renders_a_bar_on_stderr(
    server: tuple[FakeWatsonx, ServerHandle], train_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await tune(server, train_file, progress=True) == "completed"
    captured = capsys.readouterr()
    assert captured.out == ""
    final = captured.err.replace("\r", "\n").strip().splitlines()[-1]
    assert final.startswith("tuning reviews: 100%")
    assert "3/3" in final
    assert "state=completed" in final
    assert "epoch loss=" in final


async def test_tuning_prints_nothing_by_default(
    server: tuple[FakeWatsonx, ServerHandle], train_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await tune(server, train_file) == "completed"
    assert capsys.readouterr() == ("", "")


async def test_evaluation_progress_counts_items_and_failures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def flaky(prompt: str) -> str:
        if prompt.endswith("3"):
            raise ConnectionError("dropped")
        return await echo(prompt)

    report = await Evaluator(max_concurrency=2).evaluate(EXAMPLES, flaky, progress=True)
    assert report.metrics.counts.failed == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    final = captured.err.replace("\r", "\n").strip().splitlines()[-1]
    assert final.startswith("evaluating: 100%")
    assert "10/10" in final
    assert "failed=1" in final


async def test_comparison_progress_counts_every_target(capsys: pytest.CaptureFixture[str]) -> None:
    report = await Evaluator().compare(EXAMPLES, tuned=echo, base=echo, progress=True)
    assert set(report.reports) == {"tuned", "base"}
    final = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "20/20" in final


async def test_evaluation_prints_nothing_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    await Evaluator().evaluate(EXAMPLES, echo)
    await Evaluator().compare(EXAMPLES, tuned=echo, base=echo)
    assert capsys.readouterr() == ("", "")


def test_a_bar_falls_back_to_text_where_the_widget_cannot_be_built(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tqdm.auto

    def no_widget(**_: object) -> None:
        raise ImportError("IProgress not found")  # what tqdm.auto does in Jupyter without it

    monkeypatch.setattr(tqdm.auto, "tqdm", no_widget)
    bar = _open_bar(total=2, desc="tuning", unit="epoch")
    bar.update(2)
    bar.close()
    assert "tuning: 100%" in capsys.readouterr().err
