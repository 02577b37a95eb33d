"""The Evaluator: targets, failures, metrics, comparison, streaming, limits, cancellation."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from granite_tuner._attempts import count_attempts, note_attempt
from granite_tuner.data import Example, LabelledSet, load_examples
from granite_tuner.errors import ConfigurationError, InvalidDataError
from granite_tuner.evaluator import Evaluator
from granite_tuner.limits import RateLimiter
from granite_tuner.reports import ComparisonReport, EvaluationReport, ItemResult

pytestmark = pytest.mark.anyio

BASE_MODEL = "ibm/granite-13b-instruct-v2"


def examples(count: int, labels: tuple[str, ...] = ("0", "1")) -> Iterator[Example]:
    """Lazily made examples: `item <n>` whose label is `labels[n % len(labels)]`."""
    for n in range(count):
        yield Example(input=f"item {n}", output=labels[n % len(labels)])


def labelled(count: int = 20) -> LabelledSet:
    return LabelledSet(examples=tuple(examples(count)))


def number(prompt: str) -> int:
    return int(prompt.split()[1])


async def right(prompt: str) -> str:
    """Always right, in a chatty way the default parser has to read."""
    await anyio.lowlevel.checkpoint()
    return f" {number(prompt) % 2}.\n\nComment: easy"


async def always_zero(prompt: str) -> str:
    await anyio.lowlevel.checkpoint()
    return "0"


@dataclass
class Answer:
    text: str


class Model:
    """An object with async generate(prompt, parameters), like a Deployment."""

    def __init__(self) -> None:
        self.parameters: list[Mapping[str, Any] | None] = []

    async def generate(self, prompt: str, parameters: Mapping[str, Any] | None = None) -> Answer:
        self.parameters.append(parameters)
        await anyio.lowlevel.checkpoint()
        return Answer(text=str(number(prompt) % 2))


class StubClient:
    """Stands in for a client: generate(prompt, model_id=..., parameters=...)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, Mapping[str, Any] | None]] = []

    async def generate(
        self,
        prompt: str,
        *,
        model_id: str | None = None,
        deployment_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Answer:
        self.calls.append((prompt, model_id, parameters))
        await anyio.lowlevel.checkpoint()
        return Answer(text="1")


# --- targets -----------------------------------------------------------------------------------


async def test_plain_async_function() -> None:
    report = await Evaluator().evaluate(labelled(), right, name="tuned")
    assert report.target == "tuned"
    assert report.metrics.accuracy == 1.0
    assert [i.index for i in report.items] == list(range(20))
    assert all(i.correct and i.attempts == 1 and i.error is None for i in report.items)
    assert report.items[3].output == " 1.\n\nComment: easy"
    assert report.items[3].predicted == "1"
    assert report.started_at <= report.finished_at


async def test_object_with_generate_gets_the_parameters() -> None:
    model = Model()
    evaluator = Evaluator(parameters={"max_new_tokens": 3})
    report = await evaluator.evaluate(labelled(10), model)
    assert report.metrics.accuracy == 1.0
    assert model.parameters == [{"max_new_tokens": 3}] * 10


async def test_function_taking_prompt_and_parameters() -> None:
    seen: list[Any] = []

    async def positional(prompt: str, parameters: Mapping[str, Any] | None) -> str:
        seen.append(parameters)
        return "1"

    async def keyword(prompt: str, *, parameters: Mapping[str, Any] | None = None) -> Answer:
        seen.append(parameters)
        return Answer("1")

    evaluator = Evaluator(parameters={"temperature": 0.0})
    report = await evaluator.compare(labelled(4), a=positional, b=keyword)
    assert seen == [{"temperature": 0.0}] * 8
    assert report.reports["b"].metrics.accuracy == 0.5


async def test_model_id_target_goes_through_the_client() -> None:
    client = StubClient()
    evaluator = Evaluator(client, parameters={"max_new_tokens": 1})
    report = await evaluator.evaluate(labelled(6), BASE_MODEL, name="base")
    assert report.metrics.accuracy == 0.5
    assert sorted(client.calls) == sorted(
        (f"item {n}", BASE_MODEL, {"max_new_tokens": 1}) for n in range(6)
    )


async def test_model_id_without_a_client_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="give the Evaluator a client"):
        await Evaluator().evaluate(labelled(), BASE_MODEL)


async def test_unusable_targets_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="is a int"):
        await Evaluator().evaluate(labelled(), 42)  # type: ignore[arg-type]

    async def needs_three(prompt: str, parameters: Any, extra: Any) -> str:
        return "1"

    with pytest.raises(ConfigurationError, match="cannot be called with a prompt"):
        await Evaluator().evaluate(labelled(), needs_three)


async def test_a_blocking_function_stops_the_run() -> None:
    def blocking(prompt: str) -> str:
        return "1"

    with pytest.raises(ConfigurationError, match="instead of an awaitable"):
        await Evaluator().evaluate(labelled(), blocking)  # type: ignore[arg-type]


async def test_a_lambda_returning_a_coroutine_is_fine() -> None:
    model = Model()
    report = await Evaluator().evaluate(labelled(4), lambda prompt: model.generate(prompt))
    assert report.metrics.accuracy == 1.0


# --- nothing lost ------------------------------------------------------------------------------


async def test_failures_are_recorded_never_dropped() -> None:
    async def flaky(prompt: str) -> Any:
        await anyio.lowlevel.checkpoint()
        n = number(prompt)
        if n % 5 == 0:
            raise RuntimeError(f"service unavailable for {n}")
        if n % 7 == 0:
            return {"not": "text"}
        return str(n % 2)

    data = labelled(30)
    report = await Evaluator(max_concurrency=3).evaluate(data, flaky)
    assert len(report.items) == len(data)
    failed = {i.index: i for i in report.items if i.failed}
    assert sorted(failed) == [0, 5, 7, 10, 14, 15, 20, 21, 25, 28]
    assert failed[5].error == "service unavailable for 5"
    assert failed[5].error_type == "RuntimeError"
    assert failed[7].error_type == "TypeError"
    assert all(i.output is None and i.predicted is None and not i.correct for i in failed.values())
    counts = report.metrics.counts
    assert (counts.total, counts.failed, counts.completed) == (30, 10, 20)
    assert report.metrics.accuracy == pytest.approx(20 / 30)


async def test_parse_failures_are_counted() -> None:
    async def vague(prompt: str) -> str:
        return "hard to say" if number(prompt) % 4 == 0 else str(number(prompt) % 2)

    report = await Evaluator().evaluate(labelled(20), vague)
    assert report.metrics.counts.unparsed == 5
    assert report.metrics.counts.failed == 0
    assert report.metrics.columns == ["0", "1", "unparsed"]
    assert [row[-1] for row in report.metrics.confusion_matrix] == [5, 0]
    assert all(i.output == "hard to say" for i in report.items if i.predicted is None)


@pytest.mark.parametrize("labels", [("0", "1"), ("neg", "neu", "pos")])
async def test_metrics_equal_scikit_learn_on_the_items(labels: tuple[str, ...]) -> None:
    async def noisy(prompt: str) -> str:
        n = number(prompt)
        if n % 11 == 0:
            raise ValueError("bad gateway")
        if n % 6 == 0:
            return "I am not sure."
        return labels[(n * n + n // 3) % len(labels)]

    data = LabelledSet(examples=tuple(examples(90, labels)))
    report = await Evaluator(positive_label="1").evaluate(data, noisy)
    never = "<never>"
    y_true = [i.expected for i in report.items]
    y_pred = [i.predicted if i.predicted is not None else never for i in report.items]
    m = report.metrics
    assert m.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    ordered = sorted(labels)
    headline = ["1"] if len(labels) == 2 else ordered
    average = "micro" if len(labels) == 2 else "macro"
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=headline, average=average, zero_division=0
    )
    assert (m.precision, m.recall, m.f1) == pytest.approx((p, r, f))
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=ordered, average="weighted", zero_division=0
    )
    assert (m.weighted.precision, m.weighted.recall, m.weighted.f1) == pytest.approx((p, r, f))
    full = confusion_matrix(y_true, y_pred, labels=[*ordered, never])
    assert m.confusion_matrix == full[: len(labels)].tolist()
    assert m.counts.failed == 9
    assert m.counts.unparsed == 13  # multiples of 6, not of 11


async def test_label_parser_mapping_function_and_labels() -> None:
    async def wordy(prompt: str) -> str:
        return "Yes!" if number(prompt) % 2 else "No."

    report = await Evaluator(label_parser={"yes": "1", "no": "0"}).evaluate(labelled(6), wordy)
    assert report.metrics.accuracy == 1.0

    def first_letter(raw: str) -> str | None:
        return {"y": "1", "n": "0"}.get(raw[:1].lower())

    report = await Evaluator(label_parser=first_letter).evaluate(labelled(6), wordy)
    assert report.metrics.accuracy == 1.0

    report = await Evaluator(labels=["0", "1", "2"]).evaluate(labelled(6), always_zero)
    assert report.metrics.labels == ["0", "1", "2"]
    assert report.metrics.average == "macro"


async def test_lazily_read_labels_do_not_depend_on_timing() -> None:
    def growing() -> Iterator[Example]:
        for n in range(12):
            yield Example(input=f"item {n}", output=str(min(n // 5, 2)))

    async def twos(prompt: str) -> str:
        return "2"

    report = await Evaluator(max_concurrency=4).evaluate(growing(), twos)
    # Label "2" is first read at item 10: earlier answers of "2" cannot be read as a label.
    assert [i.predicted for i in report.items] == [None] * 10 + ["2", "2"]
    assert report.metrics.labels == ["0", "1", "2"]


# --- data sources ------------------------------------------------------------------------------


async def test_every_kind_of_data(tmp_path: Path) -> None:
    rows = [{"input": f"item {n}", "output": str(n % 2)} for n in range(8)]
    path = tmp_path / "test.jsonl"
    path.write_bytes(load_examples(rows, purpose="evaluation").to_jsonl())

    async def agen() -> AsyncIterator[Example]:
        for example in examples(8):
            await anyio.lowlevel.checkpoint()
            yield example

    evaluator = Evaluator()
    for data in (rows, path, str(path), labelled(8), examples(8), agen(), list(examples(8))):
        report = await evaluator.evaluate(data, right)
        assert len(report.items) == 8
        assert report.metrics.accuracy == 1.0


async def test_bad_data_is_reported() -> None:
    def broken() -> Iterator[Any]:
        yield Example(input="item 0", output="0")
        yield {"input": "item 1"}

    with pytest.raises(InvalidDataError, match="item 2 is not an example"):
        await Evaluator().evaluate(broken(), right)
    with pytest.raises(ConfigurationError, match="not int"):
        await Evaluator().evaluate(42, right)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="no items"):
        await Evaluator().evaluate(iter([]), right)


async def test_an_error_reading_the_data_stops_the_run_and_is_raised_as_is() -> None:
    def failing() -> Iterator[Example]:
        yield from examples(5)
        raise OSError("the file went away")

    with pytest.raises(OSError, match="went away"):
        await Evaluator().evaluate(failing(), right)


# --- comparison --------------------------------------------------------------------------------


async def test_compare_pairs_items_by_index() -> None:
    # A is right on items 0-9, B on 5-14; 20 items in all.
    async def a(prompt: str) -> str:
        return str(number(prompt) % 2) if number(prompt) < 10 else "nonsense"

    async def b(prompt: str) -> str:
        return str(number(prompt) % 2) if 5 <= number(prompt) < 15 else "nonsense"

    report = await Evaluator(max_concurrency=3).compare(labelled(20), {"a": a}, b=b)
    assert isinstance(report, ComparisonReport)
    assert report.baseline == "a"
    assert list(report.reports) == ["a", "b"]
    (difference,) = report.comparisons
    assert (difference.baseline, difference.target) == ("a", "b")
    assert (difference.b, difference.c) == (5, 5)
    assert difference.p_value == 1.0
    assert difference.accuracy_difference == 0.0
    for name in ("a", "b"):
        assert [i.index for i in report.reports[name].items] == list(range(20))
        assert {i.target for i in report.reports[name].items} == {name}


async def test_compare_with_a_baseline_and_a_client() -> None:
    client = StubClient()  # the base model always answers "1"
    evaluator = Evaluator(client)
    report = await evaluator.compare(labelled(14), tuned=right, base=BASE_MODEL, baseline="base")
    (difference,) = report.comparisons
    assert (difference.baseline, difference.target) == ("base", "tuned")
    assert (difference.b, difference.c) == (0, 7)
    assert difference.p_value == pytest.approx(2 / 2**7)
    assert difference.accuracy_difference == pytest.approx(0.5)
    assert "| tuned vs base | +0.5000 |" in report.to_markdown()


async def test_compare_checks_its_targets() -> None:
    evaluator = Evaluator()
    with pytest.raises(ConfigurationError, match="given twice"):
        await evaluator.compare(labelled(), {"a": right}, a=right)
    with pytest.raises(ConfigurationError, match="No targets"):
        await evaluator.compare(labelled())
    with pytest.raises(ConfigurationError, match="not one of the targets"):
        await evaluator.compare(labelled(), a=right, baseline="b")


async def test_progress_callbacks_see_every_item() -> None:
    seen: list[ItemResult] = []
    awaited: list[int] = []

    async def progress(item: ItemResult) -> None:
        await anyio.lowlevel.checkpoint()
        awaited.append(item.index)

    await Evaluator().evaluate(labelled(9), right, on_progress=seen.append)
    await Evaluator().compare(labelled(9), a=right, b=always_zero, on_progress=progress)
    assert sorted(i.index for i in seen) == list(range(9))
    assert sorted(awaited) == sorted(list(range(9)) * 2)


async def test_a_failing_progress_callback_stops_the_run() -> None:
    running = 0

    async def target(prompt: str) -> str:
        nonlocal running
        running += 1
        try:
            await anyio.lowlevel.checkpoint()
            return "1"
        finally:
            running -= 1

    def progress(item: ItemResult) -> None:
        if item.index == 3:
            raise KeyError("progress bar broke")

    with pytest.raises(KeyError, match="progress bar broke"):
        await Evaluator().evaluate(examples(1000), target, on_progress=progress)
    assert running == 0


# --- streaming ---------------------------------------------------------------------------------


async def test_stream_yields_every_item_then_a_report() -> None:
    evaluator = Evaluator(max_concurrency=4)
    seen: set[tuple[int, str]] = set()
    async with evaluator.stream(examples(50), {"tuned": right, "base": always_zero}) as results:
        async for item in results:
            seen.add((item.index, item.target))
        report = results.report
    assert seen == {(n, t) for n in range(50) for t in ("tuned", "base")}
    assert results.received == 100
    assert isinstance(report, ComparisonReport)
    assert report.reports["tuned"].items == []
    assert report.reports["tuned"].metrics.accuracy == 1.0
    assert report.reports["base"].metrics.accuracy == 0.5
    (difference,) = report.comparisons
    assert (difference.b, difference.c) == (25, 0)  # tuned (the baseline) right, base wrong

    kept = await evaluator.compare(labelled(50), tuned=right, base=always_zero)
    assert kept.reports["base"].metrics == report.reports["base"].metrics.model_copy(
        update={"latency": kept.reports["base"].metrics.latency}
    )


async def test_stream_of_one_target_gives_an_evaluation_report() -> None:
    async with Evaluator().stream(labelled(10), right, name="tuned") as results:
        with pytest.raises(ConfigurationError, match="iterate the stream to its end"):
            _ = results.report
        items = [item async for item in results]
    assert len(items) == 10
    assert isinstance(results.report, EvaluationReport)
    assert results.report.target == "tuned"


async def test_leaving_a_stream_early_cancels_the_rest() -> None:
    entered = exited = 0

    async def target(prompt: str) -> str:
        nonlocal entered, exited
        entered += 1
        try:
            await anyio.lowlevel.checkpoint()
            return "1"
        finally:
            exited += 1

    async with Evaluator(max_concurrency=4).stream(examples(10_000), target) as results:
        async for item in results:
            if item.index >= 20:
                break
    assert entered == exited
    assert entered < 100
    with pytest.raises(ConfigurationError):
        _ = results.report


async def test_cancelling_a_stream_from_outside_leaves_nothing_running() -> None:
    entered = exited = 0
    some_read = anyio.Event()
    tasks_before = len(anyio.get_running_tasks())

    async def target(prompt: str) -> str:
        nonlocal entered, exited
        entered += 1
        try:
            if number(prompt) >= 10:
                await anyio.sleep_forever()
            return "1"
        finally:
            exited += 1

    async def consume() -> None:
        async with Evaluator(max_concurrency=3).stream(examples(1_000), target) as results:
            async for item in results:
                if item.index == 5:
                    some_read.set()

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(consume)
        await some_read.wait()
        task_group.cancel_scope.cancel()
    assert entered == exited
    assert len(anyio.get_running_tasks()) == tasks_before


async def test_an_error_in_the_stream_body_propagates_unwrapped() -> None:
    running = 0

    async def target(prompt: str) -> None:
        nonlocal running
        running += 1
        try:
            await anyio.sleep_forever()
        finally:
            running -= 1

    async def consume() -> None:
        async with Evaluator(max_concurrency=2).stream(examples(100), target):
            await anyio.lowlevel.checkpoint()
            raise ValueError("caller's own error")

    with pytest.raises(ValueError, match="caller's own error"):
        await consume()
    assert running == 0


async def test_an_error_reading_streamed_data_is_raised_as_is() -> None:
    def failing() -> Iterator[Example]:
        yield from examples(5)
        raise OSError("the file went away")

    async def consume() -> None:
        async with Evaluator().stream(failing(), always_zero) as results:
            async for _ in results:
                pass

    with pytest.raises(OSError, match="went away"):
        await consume()


async def test_streaming_memory_stays_bounded() -> None:
    """Lazily made examples: the stream keeps a few bytes per item, not the items.

    (10,000 items keep the test quick under tracemalloc; the stream peaks near 1.4 MB, keeping
    the items as `evaluate` does would take about 18 MB.)
    """
    count = 10_000

    def big() -> Iterator[Example]:
        for n in range(count):
            yield Example(input=f"item {n} " + "review text " * 20, output=str(n % 2))

    async def target(prompt: str) -> str:
        return "1 because " + "the customer says so " * 10

    tracemalloc.start()
    try:
        async with Evaluator().stream(big(), {"tuned": target}) as results:
            received = 0
            async for _ in results:
                received += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == count
    assert results.report.reports["tuned"].metrics.counts.total == count
    assert peak < 4_000_000, f"peak {peak:,} bytes"


# --- limits, concurrency, cancellation ---------------------------------------------------------


async def test_concurrency_is_bounded_and_tasks_do_not_grow_with_the_input() -> None:
    workers = 4
    in_flight = peak = calls = peak_tasks = 0
    first_wave = anyio.Event()
    # An earlier test's object collected mid-test may schedule its own clean-up task in this
    # loop (IBM's SDK closes its HTTP client from __del__); collect first and pause the
    # collector so the count below is only ours.
    gc.collect()
    gc.disable()
    tasks_before = len(anyio.get_running_tasks())

    async def target(prompt: str) -> str:
        nonlocal in_flight, peak, calls, peak_tasks
        calls += 1
        in_flight += 1
        peak = max(peak, in_flight)
        peak_tasks = max(peak_tasks, len(anyio.get_running_tasks()))
        try:
            if in_flight == workers:
                first_wave.set()
            if calls <= workers:
                await first_wave.wait()  # the first calls wait until all workers are busy
            else:
                await anyio.lowlevel.checkpoint()
            return "1"
        finally:
            in_flight -= 1

    try:
        report = await Evaluator(max_concurrency=workers).evaluate(examples(5_000), target)
    finally:
        gc.enable()
    assert len(report.items) == 5_000
    assert peak == workers
    assert peak_tasks <= tasks_before + workers + 1  # the workers and one producer


async def test_rate_limiter_is_taken_around_each_call() -> None:
    limiter = RateLimiter(max_concurrency=2)
    in_flight = peak = 0
    both_busy = anyio.Event()

    async def target(prompt: str) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            if in_flight == 2:
                both_busy.set()
            await both_busy.wait()
            return "1"
        finally:
            in_flight -= 1

    report = await Evaluator(max_concurrency=8, rate_limiter=limiter).evaluate(
        examples(200), target
    )
    assert len(report.items) == 200
    assert peak == 2
    assert limiter.stats.granted == 200
    assert limiter.stats.max_in_flight == 2


async def test_cancelling_an_evaluation_leaves_nothing_running() -> None:
    workers = 4
    entered = exited = 0
    all_busy = anyio.Event()
    finished = False
    tasks_before = len(anyio.get_running_tasks())

    async def target(prompt: str) -> str:
        nonlocal entered, exited
        entered += 1
        try:
            if entered == workers:
                all_busy.set()
            await anyio.sleep_forever()
            return "1"
        finally:
            exited += 1

    async def run() -> None:
        nonlocal finished
        await Evaluator(max_concurrency=workers).evaluate(examples(1_000), target)
        finished = True

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(run)
        await all_busy.wait()
        task_group.cancel_scope.cancel()

    assert not finished
    assert entered == exited == workers
    assert len(anyio.get_running_tasks()) == tasks_before


async def test_item_timeout_fails_only_the_late_items() -> None:
    async def sometimes_stuck(prompt: str) -> str:
        if number(prompt) % 3 == 0:
            await anyio.sleep_forever()
        return str(number(prompt) % 2)

    report = await Evaluator(item_timeout=0.05).evaluate(labelled(9), sometimes_stuck)
    late = [i for i in report.items if i.failed]
    assert [i.index for i in late] == [0, 3, 6]
    assert all(i.error_type == "TimeoutError" for i in late)
    assert all("item_timeout=0.05" in (i.error or "") for i in late)
    assert report.metrics.counts.completed == 6


async def test_attempts_are_counted_per_item() -> None:
    async def retrying(prompt: str) -> str:
        for _ in range(number(prompt) % 4):
            note_attempt()  # what the transport does once per HTTP attempt
            await anyio.lowlevel.checkpoint()
        return "1"

    async def retrying_in_a_child_task(prompt: str) -> str:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(retrying, prompt)
        return "1"

    report = await Evaluator(max_concurrency=3).compare(
        labelled(8), direct=retrying, child=retrying_in_a_child_task
    )
    for name in ("direct", "child"):
        assert [i.attempts for i in report.reports[name].items] == [1, 1, 2, 3, 1, 1, 2, 3]


def test_attempt_counter_outside_an_evaluation() -> None:
    note_attempt()  # no counter in force: nothing happens
    with count_attempts() as outer:
        note_attempt()
        with count_attempts() as inner:
            note_attempt()
            note_attempt()
        note_attempt()
    assert (outer.value, inner.value) == (2, 2)


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        Evaluator(max_concurrency=0)
    with pytest.raises(ConfigurationError, match="item_timeout"):
        Evaluator(item_timeout=0)
    with pytest.raises(ConfigurationError, match="labels"):
        Evaluator(labels="01")
    with pytest.raises(ConfigurationError, match="label_parser"):
        Evaluator(label_parser=3)  # type: ignore[arg-type]
    assert Evaluator().max_concurrency == 8
