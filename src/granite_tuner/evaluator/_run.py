"""One evaluation run: a producer, a bounded channel and a fixed pool of worker tasks.

Why a module of its own: this is where the concurrency lives (never one task per prompt,
never reading a lazy input further ahead than the channel holds, every item ending in exactly
one `ItemResult`, cancellation leaving nothing behind). It imports `_targets`, `_inputs`,
`_labels` and `_tally` from this package; only `_evaluator` imports it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sized
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from granite_tuner._attempts import count_attempts
from granite_tuner._exceptions import raise_lone_error
from granite_tuner._secrets import get_logger, redact
from granite_tuner.data import Example
from granite_tuner.errors import ConfigurationError
from granite_tuner.evaluator._inputs import _as_example
from granite_tuner.evaluator._labels import LabelParserSpec, _parsers
from granite_tuner.evaluator._tally import _build_reports, _Tally
from granite_tuner.evaluator._targets import _NotAsyncTargetError, _Target, _text_of
from granite_tuner.limits import RateLimiter
from granite_tuner.reports import ComparisonReport, ItemResult

_logger = get_logger("granite_tuner.evaluator")


@dataclasses.dataclass(frozen=True)
class _RunSettings:
    """What a run takes from its `Evaluator`: the checked arguments, and nothing else."""

    workers: int
    rate_limiter: RateLimiter | None
    parameters: dict[str, Any] | None
    label_parser: LabelParserSpec
    labels: tuple[str, ...] | None
    positive_label: str
    item_timeout: float | None


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


class _Run:
    """The state of one evaluation: targets, label parsing, the tally, the worker pool."""

    def __init__(
        self,
        settings: _RunSettings,
        targets: list[_Target],
        examples: Iterable[Any] | AsyncIterable[Any],
        known_labels: list[str] | None,
    ) -> None:
        self._settings = settings
        self._targets = targets
        self._examples = examples
        self._token_parser, self._parser, self._learn_labels = _parsers(
            settings.label_parser, settings.labels, known_labels
        )
        self._tally = _Tally([t.name for t in targets])
        self._first_error: dict[str, str] = {}
        self._started_at = datetime.now(UTC)

    @property
    def total_items(self) -> int | None:
        """How many items the run will produce, when the data's size is known up front."""
        if isinstance(self._examples, Sized):
            return len(self._examples) * len(self._targets)
        return None

    async def execute(self, emit: Callable[[ItemResult], Awaitable[None]]) -> None:
        """Run every item through the pool, handing each result to `emit` as it finishes."""
        workers = self._settings.workers
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

        with raise_lone_error(), receive:
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
        limiter = self._settings.rate_limiter
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
        timeout = self._settings.item_timeout
        started = time.perf_counter()
        try:
            if timeout is None:  # no cancel scope per item when there is no deadline
                text = _text_of(await target.call(prompt, self._settings.parameters))
                return _Answer(latency=time.perf_counter() - started, text=text)
            with anyio.move_on_after(timeout):
                text = _text_of(await target.call(prompt, self._settings.parameters))
                return _Answer(latency=time.perf_counter() - started, text=text)
        except _NotAsyncTargetError:
            raise
        except Exception as exc:
            return _Answer(
                latency=time.perf_counter() - started,
                error=redact(str(exc) or repr(exc)),
                error_type=type(exc).__name__,
            )
        # Only a passed deadline leaves the block without an answer.
        return _Answer(
            latency=time.perf_counter() - started,
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
        build = partial(
            _build_reports,
            self._tally,
            [target.name for target in self._targets],
            items,
            baseline,
            labels=self._settings.labels,
            positive_label=self._settings.positive_label,
            started_at=self._started_at,
            finished_at=finished_at,
        )
        report = await anyio.to_thread.run_sync(build)
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
