"""The public face: `Evaluator` (evaluate, compare, stream) and `ResultStream`.

Why a module of its own: this is what callers read and call; it checks the arguments, turns
targets and data into a `_Run` and hands back reports or a stream. The run itself, target
resolution, data and labels, and the tally each live in their own module; this one imports
them all, and none of them imports it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, Generic, TypeAlias, TypeVar, overload

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream

from granite_tuner._exceptions import raise_lone_error
from granite_tuner._progress import EvaluationBar
from granite_tuner.errors import ConfigurationError
from granite_tuner.evaluator._inputs import EvaluationData, _open_data
from granite_tuner.evaluator._labels import LabelParserSpec, _check_labels
from granite_tuner.evaluator._run import _Run, _RunSettings
from granite_tuner.evaluator._targets import Target, _baseline, _named_targets, _resolve_target
from granite_tuner.limits import RateLimiter
from granite_tuner.reports import ComparisonReport, EvaluationReport, ItemResult
from granite_tuner.tracking import Tracker, check_trackers, flat_parameters, log_evaluation

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


#: Called with each item as it finishes; may be a plain or an async function.
ProgressCallback: TypeAlias = Callable[[ItemResult], Awaitable[None] | None]


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
        trackers: experiment trackers (`granite_tuner.tracking`) that get each finished
            `evaluate` / `compare`: scores with their intervals, McNemar's p-value, the report
            and a figure; a tracker that fails is logged and never stops the evaluation.

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
        trackers: Sequence[Tracker] | None = None,
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
        self._trackers = check_trackers(trackers)
        self._settings = _RunSettings(
            workers=workers,
            rate_limiter=rate_limiter,
            parameters=dict(parameters) if parameters is not None else None,
            label_parser=label_parser,
            labels=_check_labels(labels),
            positive_label=positive_label,
            item_timeout=item_timeout,
        )

    def __repr__(self) -> str:
        settings = self._settings
        return (
            f"Evaluator(max_concurrency={settings.workers}, labels={settings.labels!r}, "
            f"positive_label={settings.positive_label!r}, item_timeout={settings.item_timeout!r})"
        )

    @property
    def max_concurrency(self) -> int:
        """How many worker tasks call targets at once."""
        return self._settings.workers

    async def evaluate(
        self,
        data: EvaluationData,
        target: Target,
        *,
        name: str = "target",
        on_progress: ProgressCallback | None = None,
        progress: bool = False,
    ) -> EvaluationReport:
        """Run every example through `target` and score the answers.

        With `progress=True`, a bar counts the items done and failed (a widget in Jupyter,
        text on stderr elsewhere; needs `tqdm`). Nothing is shown by default.
        """
        report = await self._execute(data, {name: target}, name, on_progress, progress)
        single = report.reports[name]
        await self._track(single, [name], name)
        return single

    async def compare(
        self,
        data: EvaluationData,
        targets: Mapping[str, Target] | None = None,
        /,
        *,
        baseline: str | None = None,
        on_progress: ProgressCallback | None = None,
        progress: bool = False,
        **named_targets: Target,
    ) -> ComparisonReport:
        """Run every example through each target and compare each with the baseline.

            await evaluator.compare(test_set, tuned=deployment, base=base_model, baseline="base")

        The baseline is `baseline`, or else the first target given; each comparison reports
        target minus baseline. `progress=True` shows a bar, as in `evaluate`. (Targets named
        "baseline", "on_progress" or "progress" can be given in the `targets` mapping.)
        """
        named = _named_targets(targets, named_targets)
        chosen = _baseline(named, baseline)
        report = await self._execute(data, named, chosen, on_progress, progress)
        await self._track(report, list(named), chosen)
        return report

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

    async def _track(
        self, report: EvaluationReport | ComparisonReport, targets: list[str], baseline: str
    ) -> None:
        if not self._trackers:
            return
        settings = self._settings
        parameters = flat_parameters(
            {
                "targets": ", ".join(targets),
                "baseline": baseline if len(targets) > 1 else None,
                "max_concurrency": settings.workers,
                "positive_label": settings.positive_label,
                "generation": settings.parameters or {},
            },
            prefix="evaluation.",
        )
        await log_evaluation(self._trackers, report, parameters)

    async def _execute(
        self,
        data: EvaluationData,
        targets: Mapping[str, Target],
        baseline: str,
        on_progress: ProgressCallback | None,
        progress: bool = False,
    ) -> ComparisonReport:
        run = await self._start(data, targets)
        items: dict[str, list[ItemResult]] = {name: [] for name in targets}
        bar = EvaluationBar(run.total_items) if progress else None

        async def keep(item: ItemResult) -> None:
            items[item.target].append(item)
            if bar is not None:
                bar(item)
            if on_progress is not None:
                outcome = on_progress(item)
                if inspect.isawaitable(outcome):
                    await outcome

        try:
            await run.execute(keep)
        finally:
            if bar is not None:
                bar.close()
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
        send, receive = anyio.create_memory_object_stream[ItemResult](self._settings.workers)

        async def report() -> ReportT:
            return finish(await run.summarise(None, baseline))

        results = ResultStream(receive, report)
        failures: list[Exception] = []
        with raise_lone_error(), receive:
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
        parameters = self._settings.parameters
        resolved = [
            _resolve_target(name, target, self._client, parameters)
            for name, target in targets.items()
        ]
        examples, known_labels = await _open_data(data)
        return _Run(self._settings, resolved, examples, known_labels)


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


def _single(report: ComparisonReport, *, name: str) -> EvaluationReport:
    return report.reports[name]


def _whole(report: ComparisonReport) -> ComparisonReport:
    return report
