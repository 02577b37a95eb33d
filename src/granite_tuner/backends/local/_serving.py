"""The local side of the serving seam: deployments of tuned soft prompts, micro-batched generation.

`LocalClient` inherits `LocalServingMixin`, which makes it a `ServingBackend`:

```python
async with LocalClient() as client:
    info = await client.deploy(run_id, name="reviews", serving_name="reviews_pt")
    answer = await client.generate(prompt, deployment_id=info.id)
    plain = await client.generate(prompt, model_id="smollm2-135m-instruct")
```

Why it works this way:

- **One server, micro-batched.** A forward pass over 16 prompts reads the model's weights once
  instead of 16 times, while the prompt tokens themselves cost about the same either way; batching
  pays most where a step is dominated by reading the weights: every decoding step, and any GPU
  (on 2 CPU cores, `benchmarks/serving_batching.py` measures about 2.8x the throughput for
  4-token answers and 5.75x for 32-token answers at concurrency 16). Concurrent `generate` calls
  are therefore not run one by one: each call puts a request on a queue and waits for its own
  answer; one long-lived batcher task (in the client's task group, so nothing outlives the
  client) takes the first request, waits a few milliseconds (`serving_batch_window`) for more,
  and runs the requests that share a deployment and decoding settings as one left-padded batch:
  one `model.generate` call in a worker thread, under the client's torch limiter (training
  shares it, so torch runs one job at a time). An evaluation at concurrency N therefore runs
  about N prompts per forward pass.
- **Base models go through the same server**: the first `generate(model_id=...)` for a base model
  creates an internal "deployment" of the plain model (no soft prompt), which batches the same way.
- **Deployments are cheap.** A tuned deployment holds only its soft prompt (tens of kB); the base
  model it runs on is loaded once per client (`client.models`) and shared with base-model
  generation, with other deployments and with training. How the soft prompt is applied, and why
  not through `peft.PeftModel`, is explained in `_decoding`.
- **Deployments live in memory**, for the life of the client object: they are not written to disk
  and another client or process does not see them (the tuned runs themselves are on disk, so
  deploying again is quick). `deploy` loads the model and the soft prompt before it returns, so a
  deployment is `ready` at once, or `failed` with a message (run not completed, no saved soft
  prompt, base model not available) that `Deployment.create` raises as `DeploymentFailedError`.
- **Each caller gets exactly its own outcome.** A caller that is cancelled while waiting leaves the
  batch alone: its request is skipped if the batch has not started and its answer dropped if it
  has; when every caller of a running batch has gone, the batch stops at its next decoding step.
  An exception in `model.generate` fails exactly the requests of that batch, each with its own
  `GenerationError`; the batcher goes on with the next batch.
- **Closing** needs no call: when the client leaves `async with` it cancels its task group, the
  running batch stops at its next decoding step (a watcher task notices the cancellation while
  the worker thread runs, which a thread call alone cannot), and every request still waiting
  fails with `GenerationError`. A later `async with` starts a new batcher.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import secrets
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from granite_tuner._secrets import get_logger
from granite_tuner._text import apply_verbalizer
from granite_tuner.backends.base import DeploymentInfo, check_serving_name, new_request_tag
from granite_tuner.backends.local._models import LoadedModel
from granite_tuner.errors import (
    ConfigurationError,
    DeploymentFailedError,
    DeploymentNotFoundError,
    GenerationError,
    GraniteTunerError,
)
from granite_tuner.generation import (
    GenerationParameters,
    GenerationResult,
    checked_generation_parameters,
)

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from anyio.abc import TaskGroup
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from granite_tuner.runs import TuningRun

__all__ = [
    "DEFAULT_BATCH_WINDOW",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_NEW_TOKENS",
    "DecodeSettings",
    "Decoded",
    "DeploymentNotFoundError",
    "GenerationError",
    "LocalServingMixin",
    "ServingStats",
    "StreamEvent",
]

logger = get_logger("granite_tuner.local")

#: The most prompts one forward pass takes.
DEFAULT_MAX_BATCH_SIZE = 32
#: How long (seconds) the batcher waits for more requests after the first one of a batch.
DEFAULT_BATCH_WINDOW = 0.01

#: What watsonx.ai generates when `max_new_tokens` is not given.
DEFAULT_MAX_NEW_TOKENS = 20

_BASE_PREFIX = "base:"
_MAX_SEED = 4_294_967_295


@dataclass(frozen=True)
class ServingStats:
    """What the local server has done so far: how many batches, and how full they were."""

    batches: int = 0
    prompts: int = 0
    largest_batch: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.prompts / self.batches if self.batches else 0.0


LocalStopReason = Literal["max_tokens", "eos_token", "stop_sequence", "time_limit", "cancelled"]


@dataclass(frozen=True)
class DecodeSettings:
    """`GenerationParameters` with every default resolved; equal settings can share a batch.

    `random_seed` is not part of it: every request samples from its own generator.
    """

    sample: bool = False
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    min_new_tokens: int = 0
    stop_sequences: tuple[str, ...] = ()
    include_stop_sequence: bool = True
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    time_limit_ms: int | None = None
    truncate_input_tokens: int | None = None

    @classmethod
    def from_parameters(cls, parameters: GenerationParameters | None) -> DecodeSettings:
        p = parameters or GenerationParameters()
        # Sampling at temperature 0 is greedy decoding (and the sampling knobs are moot).
        sample = p.decoding_method == "sample" and p.temperature != 0.0
        return cls(
            sample=sample,
            max_new_tokens=DEFAULT_MAX_NEW_TOKENS if p.max_new_tokens is None else p.max_new_tokens,
            min_new_tokens=p.min_new_tokens or 0,
            stop_sequences=tuple(p.stop_sequences or ()),
            include_stop_sequence=p.include_stop_sequence is not False,
            temperature=(p.temperature if p.temperature is not None else 1.0) if sample else 1.0,
            top_k=p.top_k if sample else None,
            top_p=p.top_p if sample and p.top_p is not None and p.top_p < 1.0 else None,
            repetition_penalty=(
                p.repetition_penalty
                if p.repetition_penalty is not None and p.repetition_penalty != 1.0
                else None
            ),
            time_limit_ms=p.time_limit,
            truncate_input_tokens=p.truncate_input_tokens,
        )


@dataclass(frozen=True)
class StreamEvent:
    """One piece of a streamed answer: the text decoded since the previous piece.

    The last event of a stream carries the whole answer's `GenerationResult` (and the text
    still left, possibly empty); the texts of all events add up to `result.text`.
    """

    text: str
    result: GenerationResult | None = None


@dataclass(frozen=True)
class Decoded:
    """The answer to one prompt of a batch (only the new tokens)."""

    text: str
    generated_token_count: int
    input_token_count: int
    stop_reason: LocalStopReason


class _ModelSource(Protocol):
    async def get(self, name: str) -> LoadedModel: ...


class _AdapterSource(Protocol):
    def adapter_dir(self, run_id: str) -> Path: ...


@dataclass(eq=False)
class _Served:
    """A deployment as the server holds it: what it runs on, and its soft prompt if tuned."""

    info: DeploymentInfo
    request_tag: str | None = None
    loaded: LoadedModel | None = None
    soft_prompt: torch.Tensor | None = None
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
class _Request:
    """One caller's prompt, and the slot its outcome is delivered in."""

    prompt: str
    served: _Served
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
    def key(self) -> tuple[str, DecodeSettings]:
        return (self.served.info.id, self.settings)

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


@dataclass(eq=False)
class _ServingState:
    """Everything the mixin keeps, created on first use (so `LocalClient.__init__` need not)."""

    deployments: dict[str, _Served] = field(default_factory=dict)
    base: dict[str, _Served] = field(default_factory=dict)
    base_lock: anyio.Lock = field(default_factory=anyio.Lock)
    queue: MemoryObjectSendStream[_Request] | None = None
    batcher_done: anyio.Event | None = None
    stats: ServingStats = ServingStats()


class _DeployProblem(Exception):
    """Why a deployment cannot serve; its message becomes the deployment's failure message."""


class LocalServingMixin:
    """The `ServingBackend` methods of `LocalClient`.

    Needs from the client: `models` (`.get(name) -> LoadedModel`), `store`
    (`.adapter_dir(run_id)`), `get_tuning_run(run_id)`, `_task_group` (open while the client is
    used in `async with`) and `_torch_limiter` (one torch job at a time). The client may set
    `serving_max_batch_size` and `serving_batch_window` (seconds) per instance.
    """

    models: _ModelSource
    store: _AdapterSource
    _task_group: TaskGroup | None
    _torch_limiter: anyio.CapacityLimiter

    serving_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    serving_batch_window: float = DEFAULT_BATCH_WINDOW

    if TYPE_CHECKING:  # the client's own (TuningBackend); declared here for type checking only

        async def get_tuning_run(self, run_id: str) -> TuningRun: ...

    # --- ServingBackend ---------------------------------------------------------------------

    async def deploy(
        self, model_id: str, *, name: str, serving_name: str | None, request_tag: str | None = None
    ) -> DeploymentInfo:
        """Serve the soft prompt of the completed local run `model_id` (its run id).

        Loads the base model (once per client) and the soft prompt before returning, so the
        deployment is `ready`, or `failed` with a message saying why (run missing or not
        completed, no saved soft prompt, base model not available offline).
        """
        state = self._serving_state()
        if serving_name is not None:
            self._claim_serving_name(serving_name)
        info = DeploymentInfo(
            id=str(uuid.uuid4()),
            name=name,
            state="ready",
            serving_name=serving_name,
            model_id=model_id,
            created_at=datetime.now(UTC),
        )
        try:
            served = await self._load_tuned(info)
        except _DeployProblem as problem:
            served = _Served(
                info=info.model_copy(update={"state": "failed", "failure_message": str(problem)})
            )
            logger.warning("Deployment %s of %s failed: %s", info.id, model_id, problem)
        if serving_name is not None:
            self._claim_serving_name(serving_name)  # again: another deploy may have taken it
        served.request_tag = request_tag or new_request_tag()
        state.deployments[info.id] = served
        return served.info

    async def find_deployment_by_tag(self, request_tag: str) -> DeploymentInfo | None:
        for served in self._serving_state().deployments.values():
            if served.request_tag == request_tag:
                return served.info
        return None

    async def get_deployment(self, deployment_id: str) -> DeploymentInfo:
        return self._deployment(deployment_id).info

    async def delete_deployment(self, deployment_id: str) -> None:
        """Stop serving: the soft prompt is dropped (the shared base model stays loaded).

        Requests already queued for it are still answered.
        """
        self._deployment(deployment_id)
        del self._serving_state().deployments[deployment_id]

    async def serving_name_available(self, serving_name: str) -> bool:
        check_serving_name(serving_name)
        return all(
            served.info.serving_name != serving_name
            for served in self._serving_state().deployments.values()
        )

    async def generate(
        self,
        prompt: str,
        *,
        model_id: str | None = None,
        deployment_id: str | None = None,
        parameters: GenerationParameters | Mapping[str, Any] | None = None,
    ) -> GenerationResult:
        """One completion from a deployment (`deployment_id`) or a base model (`model_id`).

        The prompt is the model's whole input (no chat template); the answer holds only the new
        text. Concurrent calls are batched (see the module docstring).
        """
        request = await self._request(prompt, model_id, deployment_id, parameters, verbalize=True)
        self._queue().send_nowait(request)
        try:
            await request.done.wait()
        finally:
            if not request.done.is_set():
                request.abandoned = True
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    async def generate_stream(
        self,
        prompt: str,
        *,
        model_id: str | None = None,
        deployment_id: str | None = None,
        parameters: GenerationParameters | Mapping[str, Any] | None = None,
        verbalize: bool = True,
    ) -> AsyncGenerator[StreamEvent]:
        """`generate`, as pieces of text that leave as soon as they are decoded.

        The request is batched with others as `generate`'s are. The last event carries the
        `GenerationResult`; errors are raised as `generate` raises them. `verbalize=False`
        sends the prompt as it is, without the tuned run's verbalizer (the chat endpoints
        build the whole input themselves). Leaving the loop early abandons the request.
        """
        request = await self._request(
            prompt, model_id, deployment_id, parameters, verbalize=verbalize
        )
        send, receive = anyio.create_memory_object_stream[str](math.inf)

        def push(text: str) -> None:
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                send.send_nowait(text)

        request.on_text, request.on_done = push, send.close
        self._queue().send_nowait(request)
        try:
            async with receive:
                async for piece in receive:
                    yield StreamEvent(piece)
            await request.done.wait()  # set already: the stream closes when it is
        finally:
            if not request.done.is_set():
                request.abandoned = True
            send.close()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        yield StreamEvent("", request.result)

    async def _request(
        self,
        prompt: str,
        model_id: str | None,
        deployment_id: str | None,
        parameters: GenerationParameters | Mapping[str, Any] | None,
        *,
        verbalize: bool,
    ) -> _Request:
        """A checked request for `generate` or `generate_stream`, not yet queued."""
        if (model_id is None) == (deployment_id is None):
            raise ConfigurationError(
                "Pass exactly one of model_id (a base model) and deployment_id (a deployment)."
            )
        if not isinstance(prompt, str):
            raise ConfigurationError(f"prompt must be a str, not {type(prompt).__name__}.")
        checked = checked_generation_parameters(parameters)
        if deployment_id is not None:
            served = self._deployment(deployment_id)
            if not served.info.is_ready:
                raise DeploymentFailedError(
                    f"Deployment {deployment_id} cannot serve: it failed "
                    f"({served.info.failure_message}). Delete it and deploy again.",
                    deployment_id=deployment_id,
                )
        else:
            assert model_id is not None
            served = await self._base_model(model_id)
        settings = served.decode_settings(checked)
        seed = None
        if settings.sample:
            seed = checked.random_seed if checked and checked.random_seed else _random_seed()
        return _Request(
            prompt=served.verbalize(prompt) if verbalize else prompt,
            served=served,
            settings=settings,
            seed=seed,
        )

    # --- extras -----------------------------------------------------------------------------

    def serving_stats(self) -> ServingStats:
        """Batches run and prompts answered by this client so far."""
        return self._serving_state().stats

    # --- deployments ------------------------------------------------------------------------

    def _serving_state(self) -> _ServingState:
        state: _ServingState | None = getattr(self, "_local_serving", None)
        if state is None:
            state = _ServingState()
            self._local_serving = state
        return state

    def _deployment(self, deployment_id: str) -> _Served:
        served = self._serving_state().deployments.get(deployment_id)
        if served is None:
            raise DeploymentNotFoundError(
                f"There is no deployment {deployment_id!r} in this client. Local deployments "
                "live in memory for the life of the client that made them; deploy the run "
                "again.",
                deployment_id=deployment_id,
            )
        return served

    def _claim_serving_name(self, serving_name: str) -> None:
        check_serving_name(serving_name)
        for served in self._serving_state().deployments.values():
            if served.info.serving_name == serving_name:
                raise ConfigurationError(
                    f"serving_name={serving_name!r} is already used by deployment "
                    f"{served.info.id}; choose another, or delete that deployment first."
                )

    async def _load_tuned(self, info: DeploymentInfo) -> _Served:
        run_id = info.model_id
        assert run_id is not None
        try:
            run = await self.get_tuning_run(run_id)
        except GraniteTunerError as exc:
            raise _DeployProblem(f"cannot deploy {run_id!r}: {exc.message}") from None
        if run.state != "completed":
            raise _DeployProblem(
                f"tuning run {run_id} is {run.state}, and only a completed run can be deployed"
                + (f" ({run.failure_message})" if run.failure_message else "")
            )
        if not run.base_model:
            raise _DeployProblem(f"tuning run {run_id} does not say which base model it tuned")
        try:
            adapter = self.store.adapter_dir(run_id)
            loaded = await self.models.get(run.base_model)
            soft_prompt = await anyio.to_thread.run_sync(_load_soft_prompt, adapter, loaded.model)
        except (GraniteTunerError, OSError) as exc:
            raise _DeployProblem(str(exc)) from None
        verbalizer = run.parameters.get("verbalizer")
        max_input_tokens = run.parameters.get("max_input_tokens")
        return _Served(
            info=info.model_copy(update={"base_model_id": run.base_model}),
            loaded=loaded,
            soft_prompt=soft_prompt,
            verbalizer=verbalizer
            if isinstance(verbalizer, str) and "{{input}}" in verbalizer
            else None,
            max_input_tokens=max_input_tokens if isinstance(max_input_tokens, int) else None,
        )

    async def _base_model(self, model_id: str) -> _Served:
        """The internal deployment of a plain base model, created on first use."""
        state = self._serving_state()
        served = state.base.get(model_id)
        if served is not None:
            return served
        async with state.base_lock:
            served = state.base.get(model_id)
            if served is None:
                loaded = await self.models.get(model_id)
                served = _Served(
                    info=DeploymentInfo(
                        id=f"{_BASE_PREFIX}{model_id}",
                        name=model_id,
                        state="ready",
                        model_id=model_id,
                        base_model_id=model_id,
                        created_at=datetime.now(UTC),
                    ),
                    loaded=loaded,
                )
                state.base[model_id] = served
        return served

    # --- batching ---------------------------------------------------------------------------

    def _queue(self) -> MemoryObjectSendStream[_Request]:
        """The batcher's queue, starting the batcher in the client's task group if needed."""
        state = self._serving_state()
        if state.queue is not None:
            return state.queue
        task_group = getattr(self, "_task_group", None)
        if task_group is None:
            raise ConfigurationError(
                "The local client serves only while it is open: use "
                "`async with LocalClient() as client:` around generate calls."
            )
        # Unbounded, yet bounded in practice: every queued request has a caller awaiting it.
        send, receive = anyio.create_memory_object_stream[_Request](math.inf)
        done = anyio.Event()
        try:
            task_group.start_soon(self._run_batcher, receive, done, name="granite-tuner batcher")
        except RuntimeError:  # the task group is no longer active
            send.close()
            receive.close()
            raise ConfigurationError(
                "The local client is closed; open it again with `async with` to generate."
            ) from None
        state.queue, state.batcher_done = send, done
        return send

    async def _run_batcher(
        self, receive: MemoryObjectReceiveStream[_Request], done: anyio.Event
    ) -> None:
        """Take requests off the queue, batch them, run the batches; until the queue closes."""
        pending: list[_Request] = []
        try:
            while True:
                try:
                    pending = [await receive.receive()]
                except anyio.EndOfStream:
                    return
                ended = await self._collect(receive, pending)
                for batch in _batches(pending, self.serving_max_batch_size):
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
            state = self._serving_state()
            if state.batcher_done is done:
                state.queue, state.batcher_done = None, None
            done.set()

    async def _collect(
        self, receive: MemoryObjectReceiveStream[_Request], pending: list[_Request]
    ) -> bool:
        """Add what arrives within the batch window (or until a batch is full) to `pending`.

        True when the queue was closed meanwhile.
        """
        counts = Counter(request.key for request in pending)
        with anyio.move_on_after(self.serving_batch_window):
            while max(counts.values()) < self.serving_max_batch_size:
                try:
                    request = await receive.receive()
                except anyio.EndOfStream:
                    return True
                pending.append(request)
                counts[request.key] += 1
        return False

    async def _run_batch(self, batch: list[_Request]) -> None:
        """One `model.generate` call for `batch`, in a worker thread; deliver each outcome."""
        live = [request for request in batch if not request.abandoned]
        if not live:
            return
        served = live[0].served
        loaded = served.loaded
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
            [request.prompt for request in live],
            [request.seed for request in live],
            live[0].settings,
            soft_prompt=served.soft_prompt,
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
                "Generation failed for a batch of %d on %s: %r", len(live), served.info.id, failure
            )
            for request in live:
                error = _generation_error(
                    request,
                    f"The model failed while generating ({type(failure).__name__}: {failure}).",
                )
                error.__cause__ = failure
                request.fail(error)
            return
        state = self._serving_state()
        stats = state.stats
        state.stats = ServingStats(
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
    texts: Sequence[str],
    seeds: Sequence[int | None],
    settings: DecodeSettings,
    *,
    soft_prompt: torch.Tensor | None,
    should_abort: Callable[[], bool],
    on_text: Callable[[list[tuple[int, str]]], None] | None = None,
    streamed_rows: Sequence[int] = (),
) -> list[Decoded]:
    from granite_tuner.backends.local._decoding import decode_batch

    return decode_batch(
        model,
        tokenizer,
        texts,
        seeds,
        settings,
        soft_prompt=soft_prompt,
        should_abort=should_abort,
        on_text=on_text,
        streamed_rows=streamed_rows,
    )


def _load_soft_prompt(adapter_dir: Path, model: PreTrainedModel) -> torch.Tensor:
    from granite_tuner.backends.local._decoding import load_soft_prompt

    return load_soft_prompt(adapter_dir, model)


def _batches(pending: Sequence[_Request], max_size: int) -> list[list[_Request]]:
    """Requests grouped by (deployment, settings) in arrival order, cut to `max_size`."""
    groups: dict[tuple[str, DecodeSettings], list[_Request]] = {}
    for request in pending:
        if not request.abandoned:
            groups.setdefault(request.key, []).append(request)
    return [
        group[start : start + max_size]
        for group in groups.values()
        for start in range(0, len(group), max_size)
    ]


def _result(request: _Request, answer: Decoded, model_name: str) -> GenerationResult:
    return GenerationResult(
        text=answer.text,
        generated_token_count=answer.generated_token_count,
        input_token_count=answer.input_token_count,
        stop_reason=answer.stop_reason,
        seed=request.seed,
        model_id=request.served.info.base_model_id or model_name,
    )


def _generation_error(request: _Request, message: str) -> GenerationError:
    info = request.served.info
    is_base = info.id.startswith(_BASE_PREFIX)
    return GenerationError(
        message,
        deployment_id=None if is_base else info.id,
        model_id=info.model_id,
    )


def _closed_error(request: _Request) -> GenerationError:
    return _generation_error(
        request, "The local client was closed before this prompt was answered."
    )


def _random_seed() -> int:
    """A seed for a sampling request that gave none; reported back in `GenerationResult.seed`."""
    return secrets.randbelow(_MAX_SEED) + 1
