"""The local side of the serving seam: deployments of tuned soft prompts, and generation.

`LocalClient` holds one `ModelServer` and hands its `ServingBackend` calls to it:

```python
async with LocalClient() as client:
    info = await client.deploy(run_id, name="reviews", serving_name="reviews_pt")
    answer = await client.generate(prompt, deployment_id=info.id)
    plain = await client.generate(prompt, model_id="smollm2-135m-instruct")
```

Why it works this way:

- **One server, micro-batched**: every `generate` becomes a request for the server's `Batcher`
  (`_batching`), which runs concurrent requests that share a base model and decoding settings
  as one forward pass per decoding step, whichever deployments they are for.
- **Base models go through the same server**: the first `generate(model_id=...)` for a base model
  creates an internal "deployment" of the plain model (no soft prompt), whose requests share
  batches with the tuned deployments on that model.
- **Deployments are cheap.** A tuned deployment holds only its soft prompt (tens of kB); the base
  model it runs on is loaded once per client (`client.models`) and shared with base-model
  generation, with other deployments and with training. How the soft prompt is applied, and why
  not through `peft.PeftModel`, is explained in `_decoding`.
- **Deployments live in memory**, for the life of the client object: they are not written to disk
  and another client or process does not see them (the tuned runs themselves are on disk, so
  deploying again is quick). `deploy` loads the model and the soft prompt before it returns, so a
  deployment is `ready` at once, or `failed` with a message (run not completed, no saved soft
  prompt, base model not available) that `Deployment.create` raises as `DeploymentFailedError`.
"""

from __future__ import annotations

import functools
import math
import secrets
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread

from granite_tuner._secrets import get_logger
from granite_tuner.backends.base import DeploymentInfo, check_serving_name, new_request_tag
from granite_tuner.backends.local._batching import (
    BASE_PREFIX,
    DEFAULT_BATCH_WINDOW,
    DEFAULT_MAX_BATCH_SIZE,
    Batcher,
    Request,
    ServedDeployment,
    ServingStats,
)
from granite_tuner.backends.local._checkpoints import (
    checkpoint_soft_prompt,
    parse_checkpoint_model_id,
)
from granite_tuner.backends.local._decode_types import (
    PEFT_METHODS,
    SOFT_PROMPT_POSITIONS,
    PeftMethod,
)
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
    from transformers import PreTrainedModel

    from granite_tuner.runs import TuningRun

__all__ = [
    "DeploymentNotFoundError",
    "GenerationError",
    "ModelServer",
    "ServingStats",
    "StreamEvent",
]

logger = get_logger("granite_tuner.local")

_MAX_SEED = 4_294_967_295


@dataclass(frozen=True)
class StreamEvent:
    """One piece of a streamed answer: the text decoded since the previous piece.

    The last event of a stream carries the whole answer's `GenerationResult` (and the text
    still left, possibly empty); the texts of all events add up to `result.text`.
    """

    text: str
    result: GenerationResult | None = None


class _ModelSource(Protocol):
    async def get(self, name: str) -> LoadedModel: ...


class _AdapterSource(Protocol):
    def adapter_dir(self, run_id: str) -> Path: ...

    def run_dir(self, run_id: str) -> Path: ...


class _DeployProblem(Exception):
    """Why a deployment cannot serve; its message becomes the deployment's failure message."""


class ModelServer:
    """The `ServingBackend` half of `LocalClient`: deployments, base models, generation.

    Gets through its constructor what it needs from the client: `models` (`.get(name)`, the
    client's model cache), `adapters` (`.adapter_dir(run_id)`, the run store), `runs` (looks a
    tuning run up by id, for `deploy`) and the torch limiter it shares with training. The
    client's task group comes with `open()`, while the client is open; `close()` stops taking
    requests.
    """

    def __init__(
        self,
        *,
        models: _ModelSource,
        adapters: _AdapterSource,
        runs: Callable[[str], Awaitable[TuningRun]],
        torch_limiter: anyio.CapacityLimiter,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_window: float = DEFAULT_BATCH_WINDOW,
    ) -> None:
        self._models = models
        self._adapters = adapters
        self._runs = runs
        self.batcher = Batcher(
            torch_limiter=torch_limiter, max_batch_size=max_batch_size, batch_window=batch_window
        )
        self._deployments: dict[str, ServedDeployment] = {}
        self._base: dict[str, ServedDeployment] = {}
        self._base_lock = anyio.Lock()

    def open(self, task_group: TaskGroup) -> None:
        """Serve from now on, with the batcher task in `task_group`."""
        self.batcher.open(task_group)

    def close(self) -> None:
        """Take no more requests (the client then cancels its task group)."""
        self.batcher.close()

    # --- ServingBackend ---------------------------------------------------------------------

    async def deploy(
        self, model_id: str, *, name: str, serving_name: str | None, request_tag: str | None = None
    ) -> DeploymentInfo:
        """Serve the soft prompt of the completed local run `model_id` (its run id).

        Loads the base model (once per client) and the soft prompt before returning, so the
        deployment is `ready`, or `failed` with a message saying why (run missing or not
        completed, no saved soft prompt, base model not available offline).
        """
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
            served = ServedDeployment(
                info=info.model_copy(update={"state": "failed", "failure_message": str(problem)})
            )
            logger.warning("Deployment %s of %s failed: %s", info.id, model_id, problem)
        if serving_name is not None:
            self._claim_serving_name(serving_name)  # again: another deploy may have taken it
        served.request_tag = request_tag or new_request_tag()
        self._deployments[info.id] = served
        return served.info

    async def find_deployment_by_tag(self, request_tag: str) -> DeploymentInfo | None:
        for served in self._deployments.values():
            if served.request_tag == request_tag:
                return served.info
        return None

    async def get_deployment(self, deployment_id: str) -> DeploymentInfo:
        return self._deployment(deployment_id).info

    async def list_deployments(self) -> list[DeploymentInfo]:
        """This server's deployments (not the internal ones of base models), newest first."""
        latest_first = [served.info for served in reversed(self._deployments.values())]
        return sorted(latest_first, key=_created_at, reverse=True)

    async def delete_deployment(self, deployment_id: str) -> None:
        """Stop serving: the soft prompt is dropped (the shared base model stays loaded).

        Requests already queued for it are still answered.
        """
        self._deployment(deployment_id)
        del self._deployments[deployment_id]

    async def serving_name_available(self, serving_name: str) -> bool:
        check_serving_name(serving_name)
        return all(
            served.info.serving_name != serving_name for served in self._deployments.values()
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
        self.batcher.submit(request)
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
        self.batcher.submit(request)
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
    ) -> Request:
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
        return Request(
            prompt=served.verbalize(prompt) if verbalize else prompt,
            served=served,
            settings=settings,
            seed=seed,
        )

    # --- extras -----------------------------------------------------------------------------

    def serving_stats(self) -> ServingStats:
        """Batches run and prompts answered by this client so far."""
        return self.batcher.stats

    # --- deployments ------------------------------------------------------------------------

    def _deployment(self, deployment_id: str) -> ServedDeployment:
        served = self._deployments.get(deployment_id)
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
        for served in self._deployments.values():
            if served.info.serving_name == serving_name:
                raise ConfigurationError(
                    f"serving_name={serving_name!r} is already used by deployment "
                    f"{served.info.id}; choose another, or delete that deployment first."
                )

    async def _load_tuned(self, info: DeploymentInfo) -> ServedDeployment:
        assert info.model_id is not None
        checkpoint = parse_checkpoint_model_id(info.model_id)
        run_id = info.model_id if checkpoint is None else checkpoint[0]
        try:
            run = await self._runs(run_id)
        except GraniteTunerError as exc:
            raise _DeployProblem(f"cannot deploy {run_id!r}: {exc.message}") from None
        # Runs recorded before these settings existed were prompt tuning, at the start.
        method = run.parameters.get("peft_method", "prompt_tuning")
        position = run.parameters.get("soft_prompt_position", "start")
        if method not in PEFT_METHODS or position not in SOFT_PROMPT_POSITIONS:
            raise _DeployProblem(
                f"tuning run {run_id} records peft_method={method!r} and "
                f"soft_prompt_position={position!r}; only {' and '.join(PEFT_METHODS)}, at "
                f"{' or '.join(SOFT_PROMPT_POSITIONS)}, can be served"
            )
        if checkpoint is not None:
            # Any kept checkpoint serves, whatever state the run is in now.
            run_dir = self._adapters.run_dir(run_id)
            load: Callable[[PreTrainedModel], torch.Tensor] = functools.partial(
                checkpoint_soft_prompt, run_dir, checkpoint[1], method=method
            )
        else:
            load = functools.partial(
                _load_soft_prompt, self._adapters.adapter_dir(run_id), method=method
            )
        if checkpoint is None and run.state != "completed":
            raise _DeployProblem(
                f"tuning run {run_id} is {run.state}, and only a completed run can be deployed"
                + (f" ({run.failure_message})" if run.failure_message else "")
            )
        if not run.base_model:
            raise _DeployProblem(f"tuning run {run_id} does not say which base model it tuned")
        try:
            loaded = await self._models.get(run.base_model)
            soft_prompt = await anyio.to_thread.run_sync(load, loaded.model)
        except (GraniteTunerError, OSError) as exc:
            raise _DeployProblem(str(exc)) from None
        verbalizer = run.parameters.get("verbalizer")
        max_input_tokens = run.parameters.get("max_input_tokens")
        return ServedDeployment(
            info=info.model_copy(update={"base_model_id": run.base_model}),
            loaded=loaded,
            soft_prompt=soft_prompt,
            soft_prompt_position=position,
            peft_method=method,
            verbalizer=verbalizer
            if isinstance(verbalizer, str) and "{{input}}" in verbalizer
            else None,
            max_input_tokens=max_input_tokens if isinstance(max_input_tokens, int) else None,
        )

    async def _base_model(self, model_id: str) -> ServedDeployment:
        """The internal deployment of a plain base model, created on first use."""
        served = self._base.get(model_id)
        if served is not None:
            return served
        async with self._base_lock:
            served = self._base.get(model_id)
            if served is None:
                loaded = await self._models.get(model_id)
                served = ServedDeployment(
                    info=DeploymentInfo(
                        id=f"{BASE_PREFIX}{model_id}",
                        name=model_id,
                        state="ready",
                        model_id=model_id,
                        base_model_id=model_id,
                        created_at=datetime.now(UTC),
                    ),
                    loaded=loaded,
                )
                self._base[model_id] = served
        return served


def _load_soft_prompt(
    adapter_dir: Path, model: PreTrainedModel, *, method: PeftMethod
) -> torch.Tensor:
    """Imports safetensors on first use, in the worker thread that reads the adapter."""
    from granite_tuner.backends.local._adapter import load_soft_prompt

    return load_soft_prompt(adapter_dir, model, method)


def _random_seed() -> int:
    """A seed for a sampling request that gave none; reported back in `GenerationResult.seed`."""
    return secrets.randbelow(_MAX_SEED) + 1


def _created_at(info: DeploymentInfo) -> datetime:
    return info.created_at or datetime.min.replace(tzinfo=UTC)
