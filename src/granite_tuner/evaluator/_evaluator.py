"""Score any async `prompt -> text` target on a labelled set, and compare targets.

The payoff of prompt tuning is the comparison: does the tuned model beat its base, by how much,
and is the difference real? `Evaluator` answers it for whatever can answer a prompt: a tuned
deployment, a base model id called through a client, or any async function.

How a run works, and why:

- **Bounded.** One producer task reads the examples (a list, a file, or a lazy iterator of
  100,000) and feeds a small bounded channel; a fixed pool of `max_concurrency` worker tasks
  takes work from it. There is never one task per prompt, and a lazy input is never read ahead
  by more than the channel holds. With several targets each example becomes one work item per
  target, in the same order, so the targets advance together and share the client's limits.
- **Nothing lost.** Every item ends in exactly one `ItemResult`: the answer, or the failure
  (`error`, `error_type`) when the target raised or missed `item_timeout`. A failing target
  never stops the run; only cancellation (and other `BaseException`s) does, and cancelling
  cancels every call in flight and leaves no task behind.
- **Memory.** `evaluate`/`compare` keep the items for their reports. `stream` hands each item
  to the caller and keeps only a few bytes per item (labels as small integer codes, latency),
  enough for the metrics and the paired McNemar test.
- **Labels.** Answers are parsed into labels (`granite_tuner.metrics`). When the examples come
  lazily and `labels` is not given, labels are learned as examples are read, and item `i` is
  parsed against the labels of items `0..i` only, so the result never depends on timing.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import sys
from array import array
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeAlias, TypeVar, cast, overload

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import ValidationError

from granite_tuner._attempts import count_attempts
from granite_tuner._secrets import get_logger, redact
from granite_tuner.backends.base import ServingBackend
from granite_tuner.data import Example, LabelledSet, aload_examples
from granite_tuner.deployment import Deployment
from granite_tuner.errors import ConfigurationError, DataProblem, InvalidDataError
from granite_tuner.generation import GenerationParameters
from granite_tuner.limits import RateLimiter
from granite_tuner.metrics import (
    LabelParser,
    TokenLabelParser,
    compare_to_baseline,
    compute_metrics,
)
from granite_tuner.reports import ComparisonReport, EvaluationReport, ItemResult

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "EvaluationData",
    "Evaluator",
    "LabelParserSpec",
    "ProgressCallback",
    "ResultStream",
    "SupportsGenerate",
    "Target",
]

_logger = get_logger("granite_tuner.evaluator")

_DEFAULT_WORKERS = 8
_LIMITED_WORKERS = 64


def _default_workers(client: Any, rate_limiter: RateLimiter | None) -> int:
    """Enough workers to feed a limiter that sets the pace; a small pool otherwise."""
    for limiter in (rate_limiter, getattr(client, "rate_limiter", None)):
        if isinstance(limiter, RateLimiter) and (
            limiter.requests_per_second is not None or limiter.max_concurrency is not None
        ):
            return _LIMITED_WORKERS
    return _DEFAULT_WORKERS


class SupportsGenerate(Protocol):
    """Anything with `async generate(prompt, parameters=None)` answering a str or `.text`."""

    def generate(self, *args: Any, **kwargs: Any) -> Awaitable[Any]: ...


#: What can be evaluated: a base model id (needs a client), an object with `generate`, or an
#: async callable `prompt -> str` (or `(prompt, parameters) -> str`; `.text` results are fine).
Target: TypeAlias = str | SupportsGenerate | Callable[..., Awaitable[Any]]

#: Where the examples come from: a checked set, anything `load_examples` reads, or an
#: iterable / async iterable of `Example` (read lazily, for inputs too large to hold; a plain
#: iterator is read on the event loop, so it should be cheap to advance). A string alias, so
#: that pandas is imported only by callers who use it.
EvaluationData: TypeAlias = (
    "LabelledSet | str | os.PathLike[str] | Sequence[Mapping[str, Any] | Example]"
    " | pd.DataFrame | Iterable[Example] | AsyncIterable[Example]"
)

#: Called with each item as it finishes; may be a plain or an async function.
ProgressCallback: TypeAlias = Callable[[ItemResult], Awaitable[None] | None]

#: How answers become labels: a parser, a mapping of words to labels, or None (the default).
LabelParserSpec: TypeAlias = LabelParser | Mapping[str, str] | Callable[[str], str | None] | None

ReportT = TypeVar("ReportT", EvaluationReport, ComparisonReport)


class Evaluator:
    """Runs labelled examples through targets, concurrently and within limits, and scores them.

    Args:
        client: used for targets given as a base model id (`await client.generate(prompt,
            model_id=..., parameters=...)`); such calls are rate limited inside the client.
        max_concurrency: how many worker tasks call targets at once. By default 8, or 64
            when a rate limiter with a rate or concurrency limit is in play (the `rate_limiter`
            given, or the client's): then the limiter decides how many calls are in flight
            (rate x latency), and the workers only need to be enough to feed it.
        rate_limiter: taken around every call to a plain async function. Model ids and objects
            with `generate` (deployments) are limited by their client instead: taking the
            same limiter twice for one call could wait forever.
        parameters: generation parameters passed to every call, as they are.
        label_parser: how answers become labels: None (first known label in the answer), a
            mapping of words to labels (`{"yes": "1", "no": "0"}`, on top of the labels), or a
            function `raw -> label | None`.
        labels: the known labels; by default the expected outputs of the data.
        positive_label: the positive class for binary precision/recall/F1.
        item_timeout: seconds one call may take (after its rate-limiter slot, if any); a late
            item is recorded as failed with error_type "TimeoutError".

    `evaluate` and `compare` take an optional `on_progress(item)` (plain or async), called by
    the worker that finished the item: keep it quick, and an error in it stops the run.
    One `Evaluator` may run several evaluations at once; each keeps its own state.
    """

    def __init__(
        self,
        client: Any | None = None,
        *,
        max_concurrency: int | None = None,
        rate_limiter: RateLimiter | None = None,
        parameters: Mapping[str, Any] | None = None,
        label_parser: LabelParserSpec = None,
        labels: Sequence[str] | None = None,
        positive_label: str = "1",
        item_timeout: float | None = None,
    ) -> None:
        workers = (
            _default_workers(client, rate_limiter) if max_concurrency is None else max_concurrency
        )
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigurationError(
                f"max_concurrency={max_concurrency!r}: give a whole number >= 1."
            )
        if item_timeout is not None and not item_timeout > 0:
            raise ConfigurationError(
                f"item_timeout={item_timeout!r}: give a number of seconds > 0."
            )
        if not isinstance(positive_label, str) or not positive_label:
            raise ConfigurationError(f"positive_label={positive_label!r}: give a label, e.g. '1'.")
        if not (
            label_parser is None or isinstance(label_parser, Mapping) or callable(label_parser)
        ):
            kind = type(label_parser).__name__
            raise ConfigurationError(
                f"label_parser must be a function, a mapping or None, not {kind}."
            )
        self._client = client
        self._workers = workers
        self._rate_limiter = rate_limiter
        self._parameters = dict(parameters) if parameters is not None else None
        self._label_parser = label_parser
        self._labels = _check_labels(labels)
        self._positive_label = positive_label
        self._item_timeout = item_timeout

    def __repr__(self) -> str:
        return (
            f"Evaluator(max_concurrency={self._workers}, labels={self._labels!r}, "
            f"positive_label={self._positive_label!r}, item_timeout={self._item_timeout!r})"
        )

    @property
    def max_concurrency(self) -> int:
        """How many worker tasks call targets at once."""
        return self._workers

    async def evaluate(
        self,
        data: EvaluationData,
        target: Target,
        *,
        name: str = "target",
        on_progress: ProgressCallback | None = None,
    ) -> EvaluationReport:
        """Run every example through `target` and score the answers."""
        report = await self._execute(data, {name: target}, name, on_progress)
        return report.reports[name]

    async def compare(
        self,
        data: EvaluationData,
        targets: Mapping[str, Target] | None = None,
        /,
        *,
        baseline: str | None = None,
        on_progress: ProgressCallback | None = None,
        **named_targets: Target,
    ) -> ComparisonReport:
        """Run every example through each target and compare each with the baseline.

            await evaluator.compare(test_set, tuned=deployment, base=base_model, baseline="base")

        The baseline is `baseline`, or else the first target given; each comparison reports
        target minus baseline. (Targets named "baseline" or "on_progress" can be given in the
        `targets` mapping.)
        """
        named = _named_targets(targets, named_targets)
        return await self._execute(data, named, _baseline(named, baseline), on_progress)

    @overload
    def stream(
        self,
        data: EvaluationData,
        targets: Mapping[str, Target],
        /,
        *,
        baseline: str | None = None,
    ) -> AbstractAsyncContextManager[ResultStream[ComparisonReport]]: ...

    @overload
    def stream(
        self, data: EvaluationData, targets: Target, /, *, name: str = "target"
    ) -> AbstractAsyncContextManager[ResultStream[EvaluationReport]]: ...

    def stream(
        self,
        data: EvaluationData,
        targets: Mapping[str, Target] | Target,
        /,
        *,
        name: str = "target",
        baseline: str | None = None,
    ) -> (
        AbstractAsyncContextManager[ResultStream[ComparisonReport]]
        | AbstractAsyncContextManager[ResultStream[EvaluationReport]]
    ):
        """Items as they finish (completion order), keeping only what the metrics need.

        ```python
        async with evaluator.stream(test_set, {"tuned": tuned, "base": base_id}) as results:
            async for item in results:
                ...
        report = results.report  # a ComparisonReport; an EvaluationReport for one target
        ```
        Reports from a stream carry metrics and comparisons but no items. Leaving the block
        early cancels the rest of the run.
        """
        if isinstance(targets, Mapping):
            named = _named_targets(targets, {})
            return self._stream(data, named, _baseline(named, baseline), _whole)
        return self._stream(data, {name: targets}, name, partial(_single, name=name))

    # --- running ---------------------------------------------------------------------------

    async def _execute(
        self,
        data: EvaluationData,
        targets: Mapping[str, Target],
        baseline: str,
        on_progress: ProgressCallback | None,
    ) -> ComparisonReport:
        run = await self._start(data, targets)
        items: dict[str, list[ItemResult]] = {name: [] for name in targets}

        async def keep(item: ItemResult) -> None:
            items[item.target].append(item)
            if on_progress is not None:
                progress = on_progress(item)
                if inspect.isawaitable(progress):
                    await progress

        await run.execute(keep)
        return await run.summarise(items, baseline)

    @asynccontextmanager
    async def _stream(
        self,
        data: EvaluationData,
        targets: Mapping[str, Target],
        baseline: str,
        finish: Callable[[ComparisonReport], ReportT],
    ) -> AsyncIterator[ResultStream[ReportT]]:
        run = await self._start(data, targets)
        send, receive = anyio.create_memory_object_stream[ItemResult](self._workers)

        async def report() -> ReportT:
            return finish(await run.summarise(None, baseline))

        results = ResultStream(receive, report)
        failures: list[Exception] = []
        with _lone_exception(), receive:
            async with anyio.create_task_group() as task_group:

                async def pump() -> None:
                    try:
                        await run.execute(send.send)
                    except Exception as exc:
                        failures.append(exc)
                        task_group.cancel_scope.cancel()  # the caller's loop stops too
                    finally:
                        send.close()  # the caller's `async for` ends

                task_group.start_soon(pump)
                try:
                    yield results
                finally:
                    task_group.cancel_scope.cancel()  # an early exit stops the run
        if failures:
            raise failures[0]

    async def _start(self, data: EvaluationData, targets: Mapping[str, Target]) -> _Run:
        resolved = [_resolve_target(name, target, self) for name, target in targets.items()]
        examples, known_labels = await _open_data(data)
        return _Run(self, resolved, examples, known_labels)

    def _parsers(
        self, known_labels: list[str] | None
    ) -> tuple[TokenLabelParser | None, Callable[[str], str | None], bool]:
        """(token parser or None, the parser to call, whether labels are learned as read)."""
        spec = self._label_parser
        if spec is None or isinstance(spec, Mapping):
            vocabulary = self._labels if self._labels is not None else known_labels
            parser = TokenLabelParser(vocabulary or (), aliases=spec)
            return parser, parser, vocabulary is None
        return None, spec, False  # the caller's parser, used as it is


class ResultStream(Generic[ReportT]):
    """The items of a running evaluation in completion order; `report` once all are read."""

    def __init__(
        self,
        receive: MemoryObjectReceiveStream[ItemResult],
        finish: Callable[[], Awaitable[ReportT]],
    ) -> None:
        self._receive = receive
        self._finish: Callable[[], Awaitable[ReportT]] = finish
        self._report: ReportT | None = None
        self._received = 0

    def __aiter__(self) -> ResultStream[ReportT]:
        return self

    async def __anext__(self) -> ItemResult:
        try:
            item = await self._receive.receive()
        except anyio.EndOfStream:
            pass
        except anyio.ClosedResourceError:
            raise ConfigurationError(
                "The stream is closed: read it inside `async with evaluator.stream(...)`."
            ) from None
        else:
            self._received += 1
            return item
        # The run has ended; if it ended by failing, the cancellation brings its error.
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._report is None:
            self._report = await self._finish()
        raise StopAsyncIteration

    @property
    def received(self) -> int:
        """How many items have been read so far."""
        return self._received

    @property
    def report(self) -> ReportT:
        """The report of the whole run, once the stream has been read to its end."""
        if self._report is None:
            raise ConfigurationError(
                "The report is ready once every item has been read: "
                "iterate the stream to its end first."
            )
        return self._report


# --- one run -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Target:
    """A target reduced to one call, and whether the evaluator's rate limiter applies to it."""

    name: str
    call: Callable[[str, Mapping[str, Any] | None], Awaitable[object]]
    limited: bool


@dataclasses.dataclass(frozen=True)
class _Work:
    index: int
    example: Example
    target: _Target


@dataclasses.dataclass(frozen=True)
class _Answer:
    latency: float
    text: str | None = None
    error: str | None = None
    error_type: str | None = None


class _NotAsyncTargetError(ConfigurationError):
    """A target answered without an awaitable: a mistake in the call, so the run stops."""


class _Run:
    """The state of one evaluation: targets, label parsing, the tally, the worker pool."""

    def __init__(
        self,
        evaluator: Evaluator,
        targets: list[_Target],
        examples: Iterable[Any] | AsyncIterable[Any],
        known_labels: list[str] | None,
    ) -> None:
        self._evaluator = evaluator
        self._targets = targets
        self._examples = examples
        self._token_parser, self._parser, self._learn_labels = evaluator._parsers(known_labels)
        self._tally = _Tally([t.name for t in targets])
        self._first_error: dict[str, str] = {}
        self._started_at = datetime.now(UTC)

    async def execute(self, emit: Callable[[ItemResult], Awaitable[None]]) -> None:
        """Run every item through the pool, handing each result to `emit` as it finishes."""
        workers = self._evaluator._workers
        names = ", ".join(t.name for t in self._targets)
        _logger.info("Evaluating %s with %d workers.", names, workers)
        send, receive = anyio.create_memory_object_stream[_Work](workers)
        failures: list[Exception] = []

        async def guarded(job: Callable[[], Awaitable[None]]) -> None:
            try:
                await job()
            except Exception as exc:  # the data or a callback failed: stop everything
                if not failures:
                    failures.append(exc)
                task_group.cancel_scope.cancel()

        with _lone_exception(), receive:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(guarded, partial(self._produce, send))
                for _ in range(workers):
                    task_group.start_soon(guarded, partial(self._work, receive.clone(), emit))
        if failures:
            raise failures[0]

    async def _produce(self, send: MemoryObjectSendStream[_Work]) -> None:
        async def put(index: int, raw: object) -> None:
            example = _as_example(raw, index)
            self._tally.add_example(example.output)
            if self._learn_labels and self._token_parser is not None:
                self._token_parser.add(example.output, first_index=index)
            for target in self._targets:  # one work item per target, in the same order
                await send.send(_Work(index, example, target))

        async with send:
            index = 0
            if isinstance(self._examples, AsyncIterable):
                async for raw in self._examples:
                    await put(index, raw)
                    index += 1
            else:
                for raw in self._examples:
                    await put(index, raw)
                    index += 1

    async def _work(
        self,
        receive: MemoryObjectReceiveStream[_Work],
        emit: Callable[[ItemResult], Awaitable[None]],
    ) -> None:
        async with receive:
            async for work in receive:
                await emit(await self._item(work))

    async def _item(self, work: _Work) -> ItemResult:
        target = work.target
        limiter = self._evaluator._rate_limiter
        with count_attempts() as attempts:
            if limiter is not None and target.limited:
                async with limiter.slot():
                    answer = await self._answer(target, work.example.input)
            else:
                answer = await self._answer(target, work.example.input)
        predicted = None if answer.text is None else self._parse(answer.text, work.index)
        self._tally.record(
            target.name, work.index, predicted, failed=answer.text is None, latency=answer.latency
        )
        if answer.error_type is not None:
            _logger.debug(
                "Item %d failed on %s: %s: %s",
                work.index,
                target.name,
                answer.error_type,
                answer.error,
            )
            self._first_error.setdefault(target.name, f"{answer.error_type}: {answer.error}")
        return ItemResult(
            index=work.index,
            target=target.name,
            input=work.example.input,
            expected=work.example.output,
            output=answer.text,
            predicted=predicted,
            correct=predicted is not None and predicted == work.example.output,
            latency_s=answer.latency,
            attempts=max(1, attempts.value),
            error=answer.error,
            error_type=answer.error_type,
        )

    async def _answer(self, target: _Target, prompt: str) -> _Answer:
        """One call under the item deadline. Never raises `Exception`, except for misuse."""
        timeout = self._evaluator._item_timeout
        started = anyio.current_time()
        try:
            with anyio.move_on_after(timeout):
                text = _text_of(await target.call(prompt, self._evaluator._parameters))
                return _Answer(latency=anyio.current_time() - started, text=text)
        except _NotAsyncTargetError:
            raise
        except Exception as exc:
            return _Answer(
                latency=anyio.current_time() - started,
                error=redact(str(exc) or repr(exc)),
                error_type=type(exc).__name__,
            )
        # Only a passed deadline leaves the block without an answer.
        return _Answer(
            latency=anyio.current_time() - started,
            error=f"No answer within item_timeout={timeout:g} s.",
            error_type="TimeoutError",
        )

    def _parse(self, text: str, index: int) -> str | None:
        if self._token_parser is not None:
            return self._token_parser.parse(text, index=index)
        label = self._parser(text)
        if label is not None and not isinstance(label, str):
            raise ConfigurationError(
                f"The label_parser returned {type(label).__name__}; return a str or None."
            )
        return label

    async def summarise(
        self, items: Mapping[str, list[ItemResult]] | None, baseline: str
    ) -> ComparisonReport:
        """Build the reports (in a worker thread: scoring 100,000 items takes a moment)."""
        finished_at = datetime.now(UTC)
        report = await anyio.to_thread.run_sync(partial(self._build, items, baseline, finished_at))
        for name, evaluation in report.reports.items():
            counts = evaluation.metrics.counts
            _logger.info(
                "%s: accuracy %.4f on %d items (%d failed, %d unparsed).",
                name,
                evaluation.metrics.accuracy,
                counts.total,
                counts.failed,
                counts.unparsed,
            )
            if counts.failed:
                _logger.warning(
                    "%d of %d items failed on %s; the first: %s",
                    counts.failed,
                    counts.total,
                    name,
                    self._first_error.get(name, "?"),
                )
        return report

    def _build(
        self,
        items: Mapping[str, list[ItemResult]] | None,
        baseline: str,
        finished_at: datetime,
    ) -> ComparisonReport:
        tally = self._tally
        y_true = tally.y_true()
        reports: dict[str, EvaluationReport] = {}
        for target in self._targets:
            metrics = compute_metrics(
                y_true,
                tally.y_pred(target.name),
                labels=self._evaluator._labels,
                positive_label=self._evaluator._positive_label,
                failed=tally.failed(target.name),
                latencies=tally.latencies(target.name),
            )
            kept = sorted(items[target.name], key=lambda i: i.index) if items is not None else []
            reports[target.name] = EvaluationReport(
                target=target.name,
                metrics=metrics,
                items=kept,
                started_at=self._started_at,
                finished_at=finished_at,
            )
        base = reports[baseline]
        comparisons = [
            compare_to_baseline(
                baseline,
                name,
                base.metrics,
                report.metrics,
                tally.correct(baseline),
                tally.correct(name),
            )
            for name, report in reports.items()
            if name != baseline
        ]
        return ComparisonReport(
            baseline=baseline,
            reports=reports,
            comparisons=comparisons,
            started_at=self._started_at,
            finished_at=finished_at,
        )


class _Tally:
    """What the metrics need, a few bytes per item: label codes per example and per target.

    Predictions arrive in completion order, so each target's arrays are indexed by example
    and grow as results come in (they lag the producer by at most the channel's size).
    """

    _PENDING, _FAILED, _UNPARSED = -3, -2, -1

    def __init__(self, names: Sequence[str]) -> None:
        self._codes: dict[str, int] = {}
        self._labels: list[str] = []
        self._expected = array("i")
        self._predicted = {name: array("i") for name in names}
        self._latency = {name: array("d") for name in names}

    def _code(self, label: str) -> int:
        code = self._codes.get(label)
        if code is None:
            code = self._codes[label] = len(self._labels)
            self._labels.append(label)
        return code

    def add_example(self, expected: str) -> None:
        self._expected.append(self._code(expected))

    def record(
        self, name: str, index: int, predicted: str | None, *, failed: bool, latency: float
    ) -> None:
        codes, seconds = self._predicted[name], self._latency[name]
        if len(codes) <= index:
            missing = index + 1 - len(codes)
            codes.extend([self._PENDING] * missing)
            seconds.extend([math.nan] * missing)
        if failed:
            codes[index] = self._FAILED
        else:
            codes[index] = self._UNPARSED if predicted is None else self._code(predicted)
        seconds[index] = latency

    def y_true(self) -> list[str]:
        return [self._labels[code] for code in self._expected]

    def y_pred(self, name: str) -> list[str | None]:
        codes = self._completed(name)
        return [self._labels[code] if code >= 0 else None for code in codes]

    def failed(self, name: str) -> int:
        return self._completed(name).count(self._FAILED)

    def latencies(self, name: str) -> Iterator[float]:
        codes = self._completed(name)
        return (s for c, s in zip(codes, self._latency[name], strict=True) if c != self._FAILED)

    def correct(self, name: str) -> list[bool]:
        codes = self._completed(name)
        return [p >= 0 and p == e for p, e in zip(codes, self._expected, strict=True)]

    def _completed(self, name: str) -> array[int]:
        codes = self._predicted[name]
        if len(codes) != len(self._expected) or self._PENDING in codes:
            raise RuntimeError(f"Results are missing for {name}: the run did not finish.")
        return codes


# --- targets, data, helpers --------------------------------------------------------------------


def _resolve_target(name: str, target: object, evaluator: Evaluator) -> _Target:
    """Reduce a target to one `async (prompt, parameters) -> str | .text` call."""
    if isinstance(target, str):
        client = evaluator._client
        generate = getattr(client, "generate", None)
        if client is None or not callable(generate):
            raise ConfigurationError(
                f"Target {name!r} is a model id ({target!r}); give the Evaluator a client "
                "with generate() to call it, e.g. Evaluator(client)."
            )
        _check_generation_parameters(evaluator, client)
        return _Target(name, partial(_call_model, generate, target), limited=False)
    method = getattr(target, "generate", None)
    if isinstance(target, Deployment):
        _check_generation_parameters(evaluator, target.client)
    if callable(method):  # e.g. a Deployment: its client applies the service's limits
        function: Callable[..., object] = method
        limited = False
    elif callable(target):
        function, limited = target, True
    else:
        raise ConfigurationError(
            f"Target {name!r} is a {type(target).__name__}; give an async function "
            "prompt -> str, an object with async generate(prompt, parameters), or a model id."
        )
    style = _calling_style(name, function)
    if style == "prompt" and evaluator._parameters:
        _logger.warning(
            "Target %s takes only a prompt, so the generation parameters are not passed to it.",
            name,
        )
    return _Target(name, partial(_call_function, name, function, style), limited=limited)


def _check_generation_parameters(evaluator: Evaluator, client: object) -> None:
    """Parameters bound for one of our backends are checked once, before any call, so a typo
    fails the run at once (`InvalidParametersError`) instead of failing every item."""
    if evaluator._parameters is not None and isinstance(client, ServingBackend):
        GenerationParameters.model_validate(evaluator._parameters)


def _calling_style(name: str, function: Callable[..., object]) -> str:
    """How to pass (prompt, parameters): "positional", "keyword" or "prompt" alone."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins have no signature: pass the prompt only
        return "prompt"
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in signature.parameters.values() if p.kind in kinds]
    keyword = signature.parameters.get("parameters")
    args: tuple[None, ...] = (None,)
    kwargs: dict[str, None] = {}
    if len(positional) >= 2:
        style, args = "positional", (None, None)
    elif keyword is not None and keyword.kind is inspect.Parameter.KEYWORD_ONLY:
        style, kwargs = "keyword", {"parameters": None}
    else:
        style = "prompt"
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        raise ConfigurationError(
            f"Target {name!r} cannot be called with a prompt: its signature is {signature}."
        ) from None
    return style


async def _call_function(
    name: str,
    function: Callable[..., object],
    style: str,
    prompt: str,
    parameters: Mapping[str, Any] | None,
) -> object:
    if style == "positional":
        result = function(prompt, parameters)
    elif style == "keyword":
        result = function(prompt, parameters=parameters)
    else:
        result = function(prompt)
    if not inspect.isawaitable(result):
        raise _NotAsyncTargetError(
            f"Target {name!r} returned a {type(result).__name__} instead of an awaitable; "
            "give an async function (a blocking call would stall every other request)."
        )
    return await result


async def _call_model(
    generate: Callable[..., Awaitable[object]],
    model_id: str,
    prompt: str,
    parameters: Mapping[str, Any] | None,
) -> object:
    return await generate(prompt, model_id=model_id, parameters=parameters)


def _text_of(result: object) -> str:
    if isinstance(result, str):
        return result
    text = getattr(result, "text", None)
    if isinstance(text, str):
        return text
    raise TypeError(
        f"The target answered a {type(result).__name__}; answer a str or an object with .text."
    )


def _named_targets(
    targets: Mapping[str, Target] | None, named: Mapping[str, Target]
) -> dict[str, Target]:
    merged: dict[str, Target] = dict(targets or {})
    for name, target in named.items():
        if name in merged:
            raise ConfigurationError(f"Target {name!r} is given twice; give each name once.")
        merged[name] = target
    if not merged:
        raise ConfigurationError("No targets: give at least one, e.g. compare(data, tuned=...).")
    for name in merged:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"Target names must be non-empty strings, not {name!r}.")
    return merged


def _baseline(targets: Mapping[str, Target], baseline: str | None) -> str:
    if baseline is None:
        return next(iter(targets))
    if baseline not in targets:
        raise ConfigurationError(
            f"baseline={baseline!r} is not one of the targets: {', '.join(map(repr, targets))}."
        )
    return baseline


def _single(report: ComparisonReport, *, name: str) -> EvaluationReport:
    return report.reports[name]


def _whole(report: ComparisonReport) -> ComparisonReport:
    return report


def _check_labels(labels: Sequence[str] | None) -> tuple[str, ...] | None:
    if labels is None:
        return None
    if isinstance(labels, str) or not all(isinstance(label, str) and label for label in labels):
        raise ConfigurationError(
            f"labels={labels!r}: give a list of non-empty strings, e.g. ['0', '1']."
        )
    if not labels:
        raise ConfigurationError("labels=[]: give the known labels, or None to use the data's.")
    return tuple(dict.fromkeys(labels))


async def _open_data(
    data: EvaluationData,
) -> tuple[Iterable[Any] | AsyncIterable[Any], list[str] | None]:
    """The examples to read, and their labels when they are all known before the run starts."""
    if isinstance(data, LabelledSet):
        return data.examples, sorted({e.output for e in data.examples})
    pandas = sys.modules.get("pandas")  # a DataFrame means pandas is imported already
    if (
        isinstance(data, str | os.PathLike | Mapping | bytes | bytearray | Sequence)
        or (pandas is not None and isinstance(data, pandas.DataFrame))
    ):  # fmt: skip
        loaded = await aload_examples(cast(Any, data), purpose="evaluation")
        return loaded.examples, sorted({e.output for e in loaded.examples})
    if isinstance(data, AsyncIterable | Iterable):
        return data, None
    raise ConfigurationError(
        "The evaluation data must be a LabelledSet, a file path, a list of examples, a "
        f"DataFrame or an (async) iterable of Example, not {type(data).__name__}."
    )


def _as_example(raw: object, index: int) -> Example:
    if isinstance(raw, Example):
        return raw
    problem = f"item {index + 1} is a {type(raw).__name__}, not an Example"
    if isinstance(raw, Mapping):
        try:
            return Example.model_validate(raw)
        except ValidationError as exc:
            problem = f"item {index + 1} is not an example: {exc.errors()[0]['msg']}"
    raise InvalidDataError(
        f"The evaluation data cannot be used: {problem}. Give Example(input=..., output=...) "
        "objects or {'input': ..., 'output': ...} mappings.",
        problems=(DataProblem(code="invalid_example", message=problem, line=index + 1),),
    )


@contextmanager
def _lone_exception() -> Iterator[None]:
    """anyio wraps even a single error in an ExceptionGroup; give callers the error itself.

    The error keeps its own cause and context (re-raising it would otherwise chain the group).
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        error = group.exceptions[0]
        cause, context, suppress = error.__cause__, error.__context__, error.__suppress_context__
        try:
            raise error  # the group was only a wrapper
        finally:
            error.__cause__, error.__context__ = cause, context
            error.__suppress_context__ = suppress
            del error, group
