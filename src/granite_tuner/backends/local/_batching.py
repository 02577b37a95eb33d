"""The local server's batcher: concurrent requests become one `model.generate` call per batch.

Why it works this way:

- **Micro-batched.** A forward pass over 16 prompts reads the model's weights once instead of
  16 times, while the prompt tokens themselves cost about the same either way; batching pays
  most where a step is dominated by reading the weights: every decoding step, and any GPU (on 2
  CPU cores, `benchmarks/serving_batching.py` measures about 2.8x the throughput for 4-token
  answers and 5.75x for 32-token answers at concurrency 16). Concurrent `generate` calls are
  therefore not run one by one: each call puts a request on a queue and waits for its own
  answer; one long-lived batcher task (in the client's task group, so nothing outlives the
  client) takes the first request, waits a few milliseconds (`batch_window`) for more, and runs
  the requests that share a base model and decoding settings as one left-padded batch: one
  `model.generate` call in a worker thread, under the client's torch limiter (training shares
  it, so torch runs one job at a time). An evaluation at concurrency N therefore runs about N
  prompts per forward pass.
- **Deployments of one base model share a batch.** A soft prompt is only a few vectors in front
  of a row's tokens, so rows of different tuned deployments, and of the plain base model, run
  on the same weights: each row brings its own soft prompt (or none), seed and truncation (the
  deployment's `max_input_tokens`), and `_decoding` lays the rows out so that each gets exactly
  the answer it gets alone. Batching by deployment instead made 4 batches of ~4 out of 16
  concurrent requests spread over 4 deployments: 0.81 [0.68-0.83] of the one-deployment
  throughput over HTTP (`benchmarks/serving_http.py`); mixed in one batch, 0.97 [0.74-1.03],
  with the same mean batch size as one deployment (docs/benchmarks.md, "Four soft prompts in
  one batch").
- **Each caller gets exactly its own outcome.** A caller that is cancelled while waiting leaves the
  batch alone: its request is skipped if the batch has not started and its answer dropped if it
  has; when every caller of a running batch has gone, the batch stops at its next decoding step.
  An exception in `model.generate` fails exactly the requests of that batch, each with its own
  `GenerationError`; the batcher goes on with the next batch.
- **Closing**: `close()` takes no more requests, and when the client then cancels its task group
  the running batch stops at its next decoding step (a watcher task notices the cancellation
  while the worker thread runs, which a thread call alone cannot), and every request still
  waiting fails with `GenerationError`. A later `open()` starts a new batcher task.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from granite_tuner._secrets import get_logger
from granite_tuner._text import apply_verbalizer
from granite_tuner.backends.base import DeploymentInfo
from granite_tuner.backends.local._decode_types import (
    Decoded,
    DecodeRow,
    DecodeSettings,
    PeftMethod,
    SoftPromptPosition,
)
from granite_tuner.backends.local._models import LoadedModel
from granite_tuner.errors import ConfigurationError, GenerationError
from granite_tuner.generation import GenerationParameters, GenerationResult

if TYPE_CHECKING:
    import torch
    from anyio.abc import TaskGroup
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "BASE_PREFIX",
    "DEFAULT_BATCH_WINDOW",
    "DEFAULT_MAX_BATCH_SIZE",
    "Batcher",
    "Request",
    "ServedDeployment",
    "ServingStats",
]

logger = get_logger("granite_tuner.local")

#: The most prompts one forward pass takes.
DEFAULT_MAX_BATCH_SIZE = 32
#: How long (seconds) the batcher waits for more requests after the first one of a batch.
DEFAULT_BATCH_WINDOW = 0.01

#: How the internal deployment of a plain base model is named (`base:<model>`).
BASE_PREFIX = "base:"


@dataclass(frozen=True)
class ServingStats:
    """What the local server has done so far: how many batches, and how full they were."""

    batches: int = 0
    prompts: int = 0
    largest_batch: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.prompts / self.batches if self.batches else 0.0


@dataclass(eq=False)
class ServedDeployment:
    """A deployment as the server holds it: what it runs on, and its soft prompt if tuned."""

    info: DeploymentInfo
    request_tag: str | None = None
    loaded: LoadedModel | None = None
    soft_prompt: torch.Tensor | None = None
    #: Where the soft prompt goes, as it was trained: before the prompt's tokens or after them.
    soft_prompt_position: SoftPromptPosition = "start"
    #: What the soft prompt is: input embeddings, or keys and values at every layer.
    peft_method: PeftMethod = "prompt_tuning"
    verbalizer: str | None = None
    #: A tuned model reads prompts as it was trained on them: cut to the run's
    #: `max_input_tokens` (keeping the end), unless a request sets `truncate_input_tokens`.
    max_input_tokens: int | None = None

    def verbalize(self, prompt: str) -> str:
        return apply_verbalizer(self.verbalizer, prompt)

    def decode_settings(self, parameters: GenerationParameters | None) -> DecodeSettings:
        settings = DecodeSettings.from_parameters(parameters)
        if settings.truncate_input_tokens is None and self.max_input_tokens is not None:
            settings = dataclasses.replace(settings, truncate_input_tokens=self.max_input_tokens)
        return settings


@dataclass(eq=False)
class Request:
    """One caller's prompt, and the slot its outcome is delivered in."""

    prompt: str
    served: ServedDeployment
    settings: DecodeSettings
    seed: int | None
    done: anyio.Event = field(default_factory=anyio.Event)
    result: GenerationResult | None = None
    error: GenerationError | None = None
    abandoned: bool = False  # the caller stopped waiting (read by the worker thread too)
    #: For a streamed request: takes each new piece of text, in the event loop's thread.
    on_text: Callable[[str], None] | None = None
    #: Called (in the event loop's thread) once the outcome is known.
    on_done: Callable[[], None] | None = None

    @property
    def key(self) -> tuple[int, DecodeSettings]:
        """What the requests of one batch share: the loaded base model, and decoding settings.

        Not the deployment: rows with different soft prompts, and base-model rows, run on the
        same weights, so they share a forward pass (see the module doc).
        """
        assert self.served.loaded is not None  # only a ready deployment takes requests
        return (id(self.served.loaded), self.settings.batch_key)

    @property
    def row(self) -> DecodeRow:
        """The request as one row of a batch: its own text, seed, soft prompt and cut."""
        return DecodeRow(
            text=self.prompt,
            seed=self.seed,
            soft_prompt=self.served.soft_prompt,
            soft_prompt_position=self.served.soft_prompt_position,
            peft_method=self.served.peft_method,
            truncate_input_tokens=self.settings.truncate_input_tokens,
        )

    def succeed(self, result: GenerationResult) -> None:
        if not self.done.is_set():
            self.result = result
            self._end()

    def fail(self, error: GenerationError) -> None:
        if not self.done.is_set():
            self.error = error
            self._end()

    def _end(self) -> None:
        self.done.set()
        if self.on_done is not None:
            self.on_done()


class Batcher:
    """The queue of requests and the one task that runs them in batches (see the module doc).

    Gets the torch limiter it shares with training in its constructor, and the client's task
    group in `open()`; `close()` takes no more requests. `max_batch_size` and `batch_window`
    (seconds) may be changed at any time; the next batch uses them.
    """

    def __init__(
        self,
        *,
        torch_limiter: anyio.CapacityLimiter,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_window: float = DEFAULT_BATCH_WINDOW,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.batch_window = batch_window
        #: Batches run and prompts answered so far.
        self.stats = ServingStats()
        self._torch_limiter = torch_limiter
        self._task_group: TaskGroup | None = None
        self._queue: MemoryObjectSendStream[Request] | None = None
        self._batcher_done: anyio.Event | None = None

    def open(self, task_group: TaskGroup) -> None:
        """Run the batcher task in `task_group` (started with the first request)."""
        self._task_group = task_group

    def close(self) -> None:
        """Take no more requests; the batcher ends when the task group is cancelled or the queue
        runs dry, and fails whatever is still waiting."""
        self._task_group = None
        if self._queue is not None:
            self._queue.close()
            self._queue = None

    def submit(self, request: Request) -> None:
        """Queue `request`; its outcome arrives in `request` (`done`, `result` or `error`)."""
        self._send_stream().send_nowait(request)

    def _send_stream(self) -> MemoryObjectSendStream[Request]:
        """The batcher's queue, starting the batcher in the client's task group if needed."""
        if self._queue is not None:
            return self._queue
        task_group = self._task_group
        if task_group is None:
            raise ConfigurationError(
                "The local client serves only while it is open: use "
                "`async with LocalClient() as client:` around generate calls."
            )
        # Unbounded, yet bounded in practice: every queued request has a caller awaiting it.
        send, receive = anyio.create_memory_object_stream[Request](math.inf)
        done = anyio.Event()
        try:
            task_group.start_soon(self._run_batcher, receive, done, name="granite-tuner batcher")
        except RuntimeError:  # the task group is no longer active
            send.close()
            receive.close()
            raise ConfigurationError(
                "The local client is closed; open it again with `async with` to generate."
            ) from None
        self._queue, self._batcher_done = send, done
        return send

    async def _run_batcher(
        self, receive: MemoryObjectReceiveStream[Request], done: anyio.Event
    ) -> None:
        """Take requests off the queue, batch them, run the batches; until the queue closes."""
        pending: list[Request] = []
        try:
            while True:
                try:
                    pending = [await receive.receive()]
                except anyio.EndOfStream:
                    return
                ended = await self._collect(receive, pending)
                for batch in _batches(pending, self.max_batch_size):
                    try:
                        await self._run_batch(batch)
                    except Exception as exc:  # a bug here must not take the client down with it
                        logger.exception("Serving a batch failed unexpectedly")
                        for request in batch:
                            request.fail(_generation_error(request, f"Serving failed: {exc!r}."))
                pending = []
                if ended:
                    return
        finally:
            # Closed or cancelled: nobody may be left waiting for an answer that never comes.
            leftovers = list(pending)
            while True:
                try:
                    leftovers.append(receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
            receive.close()
            for request in leftovers:
                request.fail(_closed_error(request))
            if self._batcher_done is done:  # not replaced by a later batcher meanwhile
                self._queue, self._batcher_done = None, None
            done.set()

    async def _collect(
        self, receive: MemoryObjectReceiveStream[Request], pending: list[Request]
    ) -> bool:
        """Add what arrives within the batch window (or until a batch is full) to `pending`.

        True when the queue was closed meanwhile.
        """
        counts = Counter(request.key for request in pending)
        with anyio.move_on_after(self.batch_window):
            while max(counts.values()) < self.max_batch_size:
                try:
                    request = await receive.receive()
                except anyio.EndOfStream:
                    return True
                pending.append(request)
                counts[request.key] += 1
        return False

    async def _run_batch(self, batch: list[Request]) -> None:
        """One `model.generate` call for `batch`, in a worker thread; deliver each outcome."""
        live = [request for request in batch if not request.abandoned]
        if not live:
            return
        loaded = live[0].served.loaded  # the same for every request of the batch (`Request.key`)
        assert loaded is not None
        finished = interrupted = False  # interrupted: cancelled (the client is closing)

        def should_abort() -> bool:  # polled by the worker thread after every decoding step
            return interrupted or all(request.abandoned for request in live)

        async def watch_for_cancellation() -> None:
            nonlocal interrupted
            try:
                await anyio.sleep_forever()
            finally:
                interrupted = not finished

        streamed = [row for row, request in enumerate(live) if request.on_text is not None]

        def deliver(pieces: list[tuple[int, str]]) -> None:  # in the event loop's thread
            for row, text in pieces:
                on_text = live[row].on_text
                if on_text is not None and not live[row].abandoned:
                    on_text(text)

        def on_text(pieces: list[tuple[int, str]]) -> None:  # in the worker thread
            anyio.from_thread.run_sync(deliver, pieces)

        work = functools.partial(
            _decode_batch,
            loaded.model,
            loaded.tokenizer,
            [request.row for request in live],
            live[0].settings.batch_key,
            should_abort=should_abort,
            on_text=on_text if streamed else None,
            streamed_rows=streamed,
        )
        answers: list[Decoded] | None = None
        failure: Exception | None = None
        async with anyio.create_task_group() as watcher:
            watcher.start_soon(watch_for_cancellation)
            try:
                answers = await anyio.to_thread.run_sync(work, limiter=self._torch_limiter)
            except Exception as exc:
                failure = exc
            finished = True
            watcher.cancel_scope.cancel()
        if answers is None:
            logger.warning(
                "Generation failed for a batch of %d on %s: %r", len(live), loaded.name, failure
            )
            for request in live:
                error = _generation_error(
                    request,
                    f"The model failed while generating ({type(failure).__name__}: {failure}).",
                )
                error.__cause__ = failure
                request.fail(error)
            return
        stats = self.stats
        self.stats = ServingStats(
            batches=stats.batches + 1,
            prompts=stats.prompts + len(live),
            largest_batch=max(stats.largest_batch, len(live)),
        )
        for request, answer in zip(live, answers, strict=True):
            if answer.stop_reason == "cancelled":  # stopped early: client closing, or abandoned
                request.fail(_closed_error(request))
            else:
                request.succeed(_result(request, answer, loaded.name))


# The decoding engine imports transformers; it is imported on first use, in a worker thread,
# so that neither importing this package nor the event loop waits for it.


def _decode_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[DecodeRow],
    settings: DecodeSettings,
    *,
    should_abort: Callable[[], bool],
    on_text: Callable[[list[tuple[int, str]]], None] | None = None,
    streamed_rows: Sequence[int] = (),
) -> list[Decoded]:
    from granite_tuner.backends.local._decoding import decode_batch

    return decode_batch(
        model,
        tokenizer,
        rows,
        settings,
        should_abort=should_abort,
        on_text=on_text,
        streamed_rows=streamed_rows,
    )


def _batches(pending: Sequence[Request], max_size: int) -> list[list[Request]]:
    """Requests grouped by `Request.key` (base model, settings) in arrival order, cut to
    `max_size`."""
    groups: dict[tuple[int, DecodeSettings], list[Request]] = {}
    for request in pending:
        if not request.abandoned:
            groups.setdefault(request.key, []).append(request)
    return [
        group[start : start + max_size]
        for group in groups.values()
        for start in range(0, len(group), max_size)
    ]


def _result(request: Request, answer: Decoded, model_name: str) -> GenerationResult:
    return GenerationResult(
        text=answer.text,
        generated_token_count=answer.generated_token_count,
        input_token_count=answer.input_token_count,
        stop_reason=answer.stop_reason,
        seed=request.seed,
        model_id=request.served.info.base_model_id or model_name,
    )


def _generation_error(request: Request, message: str) -> GenerationError:
    info = request.served.info
    is_base = info.id.startswith(BASE_PREFIX)
    return GenerationError(
        message,
        deployment_id=None if is_base else info.id,
        model_id=info.model_id,
    )


def _closed_error(request: Request) -> GenerationError:
    return _generation_error(
        request, "The local client was closed before this prompt was answered."
    )
