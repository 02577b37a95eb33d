"""The local side of the tuning seam: the `TrainingRunner` that `LocalClient` holds.

A run is a task in the client's task group that waits for a training slot (one run trains at a
time; the others stay `queued`), loads the base model, and then runs one optimizer step per
worker-thread call under the client's torch limiter — so serving interleaves with training, the
event loop never blocks, and a cancel lands within one step. Progress goes into the run's
in-memory record after every step (what `get_tuning_run` reports, and what `Tuner` turns into
step and epoch events) and into `run.json` at most every `_SAVE_INTERVAL` seconds, at every
epoch end and at the finish. Whatever ends the run — success, an error, `cancel_tuning_run`,
the client closing — is written to the store before the task ends.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread

from granite_tuner._secrets import get_logger
from granite_tuner.backends.base import BaseModelInfo, new_request_tag
from granite_tuner.backends.local import _checkpoints
from granite_tuner.backends.local._checkpoints import DEFAULT_KEEP_LAST, RunLock
from granite_tuner.backends.local._decode_types import PeftMethod, SoftPromptPosition
from granite_tuner.backends.local._launching import ProcessOptions, run_in_processes
from granite_tuner.backends.local._models import ModelCache
from granite_tuner.backends.local._resuming import (
    checkpoint_infos,
    history_json,
    prepare_resume,
)
from granite_tuner.backends.local._store import Owner, RunRecord, RunStore, new_run_id
from granite_tuner.backends.local._training import (
    DEFAULT_EARLY_STOPPING_PATIENCE,
    DEFAULT_PEFT_METHOD,
    DEFAULT_SOFT_PROMPT_POSITION,
    DEFAULT_VALIDATION_SPLIT,
    PromptTrainer,
    StepResult,
    TrainingCancelled,
    TrainingConfig,
)
from granite_tuner.data import Example, LabelledSet
from granite_tuner.errors import ConfigurationError, RunInUseError, RunNotFoundError
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.runs import (
    CheckpointInfo,
    MetricPoint,
    TrainingState,
    TuningRun,
    ValidationPoint,
)
from granite_tuner.splitting import stratified_split
from granite_tuner.validation import ValidationOptions

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ["TrainingRunner"]

logger = get_logger("granite_tuner.local")

#: Fewest training examples from which a share is held out for validation by default.
MIN_EXAMPLES_TO_SPLIT = 20

#: Longest time between two writes of a running run's run.json (seconds).
_SAVE_INTERVAL = 2.0

CANCELED_BY_REQUEST = "canceled by request"
CANCELED_ELSEWHERE = "canceled by request from another process"
CLIENT_CLOSED = "client closed"
RUN_DELETED = "deleted"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class _ActiveRun:
    """A run this client is training (or about to): its live record and how to stop it."""

    record: RunRecord
    config: TrainingConfig
    cancel: threading.Event = field(default_factory=threading.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    stop_reason: str | None = None
    last_saved: float = -math.inf
    #: Held while this client trains the run; released when the run ends here.
    lock: RunLock | None = None
    #: The trainer state to go on from, when the run is resumed from a checkpoint.
    resume_state: dict[str, Any] | None = None

    def stop(self, reason: str, *, cancel_scope: bool = True) -> None:
        """Stop before the next batch (the event) or at once when waiting (the scope)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.cancel.set()
        if cancel_scope:
            self.scope.cancel()


class TrainingRunner:
    """The `TuningBackend` half of `LocalClient`: PEFT training runs, kept in the run store.

    Gets through its constructor what it needs from the client: the configured model's name,
    the model cache, the run store, the torch limiter it shares with serving, the seed and the
    resolved training precision. The client's task group comes with `open()`, while the client
    is open; `close()` stops the runs still training (they end `canceled`, "client closed").
    """

    def __init__(
        self,
        *,
        model_name: str,
        models: ModelCache,
        store: RunStore,
        torch_limiter: anyio.CapacityLimiter,
        seed: int,
        precision: Literal["float32", "bfloat16"],
        peft_method: PeftMethod = DEFAULT_PEFT_METHOD,
        soft_prompt_position: SoftPromptPosition = DEFAULT_SOFT_PROMPT_POSITION,
        checkpoint_every_steps: int | None = None,
        keep_checkpoints: int = DEFAULT_KEEP_LAST,
        processes: ProcessOptions | None = None,
        trainer_factory: Callable[..., PromptTrainer] = PromptTrainer,
    ) -> None:
        self.model_name = model_name
        #: How runs train in several processes (None: in this one, in a worker thread).
        self.processes = processes
        #: Builds a run's trainer: `PromptTrainer`, or rank 0's data-parallel one.
        self.trainer_factory = trainer_factory
        #: Also checkpoint every this many steps (None: at the end of each epoch only).
        self.checkpoint_every_steps = checkpoint_every_steps
        #: Checkpoints kept besides the best epoch's: the newest ones.
        self.keep_checkpoints = keep_checkpoints
        self.models = models
        self.store = store
        self.seed = seed
        self.precision = precision
        #: What new runs train, and where prompt tuning puts the soft prompt (a resumed run
        #: keeps its own).
        self.peft_method: PeftMethod = peft_method
        self.soft_prompt_position: SoftPromptPosition = soft_prompt_position
        self._torch_limiter = torch_limiter
        #: Runs that train at once; the others wait `queued`.
        self._training_slots = anyio.CapacityLimiter(1)
        self._active_runs: dict[str, _ActiveRun] = {}
        self._task_group: TaskGroup | None = None

    def open(self, task_group: TaskGroup) -> None:
        """Start runs in `task_group` from now on."""
        self._task_group = task_group

    def close(self) -> None:
        """Start no more runs, and stop those still training before their next step (their
        tasks end when the client cancels its task group)."""
        self._task_group = None
        for active in list(self._active_runs.values()):
            active.stop(CLIENT_CLOSED, cancel_scope=False)

    async def tunable_models(self) -> list[BaseModelInfo]:
        """The configured model, and any other model this client has loaded.

        Raises `ConfigurationError` when the configured model cannot be loaded offline, so that
        a `Tuner` stops before it stores any training data.
        """
        await anyio.to_thread.run_sync(self.models.check_available, self.model_name)
        names = dict.fromkeys([self.model_name, *self.models.loaded_names()])
        return [BaseModelInfo(model_id=name, label=self.models.label(name)) for name in names]

    async def upload_training_data(self, data: LabelledSet, *, name: str) -> str:
        """Store the set under its SHA-256 (an identical set is stored once); returns the hash."""
        ref = await anyio.to_thread.run_sync(self.store.put_data, data)
        logger.info("Stored training data %r (%d examples) as %s", name, len(data), ref[:12])
        return ref

    async def delete_training_data(self, data_ref: str) -> None:
        await anyio.to_thread.run_sync(self.store.delete_data, data_ref)

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
        hold out (by default `DEFAULT_VALIDATION_SPLIT`), early stopping and the metric that
        picks the kept epoch.
        """
        task_group = self._open_task_group()
        await anyio.to_thread.run_sync(self.models.check_available, base_model)
        validation = validation or ValidationOptions()
        for ref, what in ((data_ref, "training"), (validation.data_ref, "validation")):
            if ref is not None and not await anyio.to_thread.run_sync(self.store.has_data, ref):
                raise ConfigurationError(
                    f"There is no stored {what} data {ref[:12]}…; upload it with "
                    "upload_training_data() first and start the run with the reference it "
                    "returns."
                )
        config = await anyio.to_thread.run_sync(
            functools.partial(self._config, parameters, validation, data_ref)
        )
        record = RunRecord(
            id=new_run_id(),
            name=name,
            state="queued",
            base_model=base_model,
            task_id=parameters.task_id,
            parameters=config.to_dict(),
            requested=parameters.model_dump(exclude_none=True),
            data_ref=data_ref,
            request_tag=request_tag or new_request_tag(),
            validation_data_ref=validation.data_ref,
            created_at=_now(),
            message="waiting for a training slot",
            owner=Owner.current(),
        )
        # Once the run is on disk it must also be started: never leave a "queued" orphan.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.store.create, record)
            lock = RunLock(self.store.run_dir(record.id), record.id)
            await anyio.to_thread.run_sync(lock.acquire)  # a new run's lock is free
            active = _ActiveRun(record=record, config=config, lock=lock)
            self._active_runs[record.id] = active
            task_group.start_soon(self._train, active, name=f"granite-tuner local run {record.id}")
        logger.info("Queued local tuning run %s (%s) of %s", record.id, name, base_model)
        return record.to_run()

    def _config(
        self, parameters: PromptTuningParameters, validation: ValidationOptions, data_ref: str
    ) -> TrainingConfig:
        """The run's settings; the validation split is checked against the data's size here,
        so that a split that cannot work is refused before the run exists."""
        split = validation.split
        if validation.data_ref is not None:
            split = 0.0
        elif split is None:
            size = len(self.store.load_data(data_ref))
            split = DEFAULT_VALIDATION_SPLIT if size >= MIN_EXAMPLES_TO_SPLIT else 0.0
            if not split:
                logger.info(
                    "%d training examples are too few to hold some out for validation "
                    "(%d needed); training without validation.",
                    size,
                    MIN_EXAMPLES_TO_SPLIT,
                )
        elif split > 0:
            examples = self.store.load_data(data_ref).examples
            stratified_split(examples, split, seed=self.seed)  # raises if a part is empty
        patience = validation.early_stopping_patience
        return TrainingConfig.from_parameters(
            parameters,
            seed=self.seed,
            precision=self.precision,
            selection_metric=validation.selection_metric,
            early_stopping_patience=(
                DEFAULT_EARLY_STOPPING_PATIENCE if patience is None else patience or None
            ),
            validation_split=split,
            soft_prompt_position=self.soft_prompt_position,
            peft_method=self.peft_method,
        )

    async def get_tuning_run(self, run_id: str) -> TuningRun:
        active = self._active_runs.get(run_id)
        if active is not None:
            return active.record.to_run()
        record = await anyio.to_thread.run_sync(self.store.read, run_id)
        return record.to_run()

    async def find_tuning_runs(self, name: str) -> list[TuningRun]:
        """Runs with exactly this name (in this client or found on disk), newest first."""
        stored = await anyio.to_thread.run_sync(self.store.find, name)
        records = [
            self._active_runs[r.id].record if r.id in self._active_runs else r for r in stored
        ]
        return [record.to_run() for record in records]

    async def find_tuning_run_by_tag(self, request_tag: str) -> TuningRun | None:
        for active in self._active_runs.values():
            if active.record.request_tag == request_tag:
                return active.record.to_run()
        stored = await anyio.to_thread.run_sync(self.store.list_runs)
        found = next((r for r in stored if r.request_tag == request_tag), None)
        return found.to_run() if found is not None else None

    async def list_tuning_runs(self) -> list[TuningRun]:
        """Every stored run, newest first."""
        stored = await anyio.to_thread.run_sync(self.store.list_runs)
        return [
            (self._active_runs[r.id].record if r.id in self._active_runs else r).to_run()
            for r in stored
        ]

    async def cancel_tuning_run(self, run_id: str, *, reason: str = CANCELED_BY_REQUEST) -> None:
        """Stop the run within one step; returns once it is `canceled` (here) or asked to stop.

        A run trained by another live process is asked to stop through the store; a finished
        run is left as it is. `reason` is the canceled run's message when it trains here.
        """
        active = self._active_runs.get(run_id)
        if active is not None:
            active.stop(reason)
            await active.done.wait()
            return
        record = await anyio.to_thread.run_sync(self.store.read, run_id)
        if record.is_active:  # still alive in another process
            await anyio.to_thread.run_sync(self.store.request_cancel, run_id)

    async def delete_tuning_run(self, run_id: str) -> None:
        """Stop the run if it is training, then remove it and its adapter from disk."""
        active = self._active_runs.get(run_id)
        if active is not None:
            active.stop(RUN_DELETED)
            await active.done.wait()
        else:
            record = await anyio.to_thread.run_sync(self.store.read, run_id)
            if record.is_active:
                await anyio.to_thread.run_sync(self.store.request_cancel, run_id)
        await anyio.to_thread.run_sync(self.store.delete, run_id)

    async def list_checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        """The run's whole checkpoints, oldest first, as they are on disk now."""
        active = self._active_runs.get(run_id)
        record = (
            active.record if active else await anyio.to_thread.run_sync(self.store.load, run_id)
        )
        return await anyio.to_thread.run_sync(
            checkpoint_infos, self.store, run_id, record.best_epoch
        )

    async def resume_tuning(
        self,
        run_id: str,
        *,
        base_model: str | None = None,
        parameters: PromptTuningParameters | None = None,
    ) -> TuningRun:
        """Go on with a run that stopped (killed, failed, canceled) from its last whole
        checkpoint, in the background; returns it `queued`.

        Raises a `ResumeError` — and changes nothing — when the run completed, another
        process or this client trains it, `base_model` or `parameters` differ from the run's,
        or no checkpoint is whole.
        """
        task_group = self._open_task_group()
        active = self._active_runs.get(run_id)
        if active is not None:
            if active.record.is_active:
                raise RunInUseError(
                    f"Tuning run {run_id} is training in this client already.", run_id=run_id
                )
            await active.done.wait()  # it has ended, and is being written down: let it finish
        lock = RunLock(self.store.run_dir(run_id), run_id)
        if not await anyio.to_thread.run_sync(self.store.run_dir(run_id).is_dir):
            raise RunNotFoundError(f"There is no local tuning run {run_id!r}.", run_id=run_id)
        await anyio.to_thread.run_sync(lock.acquire)
        try:
            plan = await anyio.to_thread.run_sync(
                functools.partial(
                    prepare_resume,
                    self.store,
                    run_id,
                    base_model=base_model,
                    parameters=parameters,
                ),
                limiter=self._torch_limiter,
            )
            await anyio.to_thread.run_sync(self.models.check_available, plan.record.base_model)
        except BaseException:
            lock.release()
            raise
        record = plan.record
        record.checkpoints = await anyio.to_thread.run_sync(
            checkpoint_infos, self.store, run_id, record.best_epoch
        )
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(self.store.remove_scratch, run_id)  # torn writes
                await anyio.to_thread.run_sync(self.store.clear_cancel, run_id)
                await anyio.to_thread.run_sync(self.store.save, record)
            except BaseException:
                lock.release()
                raise
            active = _ActiveRun(
                record=record, config=plan.config, lock=lock, resume_state=plan.state["trainer"]
            )
            self._active_runs[run_id] = active
            task_group.start_soon(self._train, active, name=f"granite-tuner local run {run_id}")
        logger.info(
            "Resuming local tuning run %s from its checkpoint at step %d",
            run_id,
            plan.checkpoint.manifest.step,
        )
        return record.to_run()

    # --- running ---------------------------------------------------------------------------

    def _open_task_group(self) -> TaskGroup:
        if self._task_group is None:
            raise ConfigurationError(
                "The local client is not open: use it as `async with LocalClient() as client:` "
                "so that its training runs have a task group to run in."
            )
        return self._task_group

    async def _train(self, active: _ActiveRun) -> None:
        """The whole life of one run; always ends with its final state on disk."""
        state: TrainingState = "canceled"
        failure: str | None = None
        try:
            with active.scope:
                if self.processes is not None:
                    await self._train_in_processes(active)
                else:
                    await self._train_steps(active)
                state = "completed"
        except TrainingCancelled:
            pass
        except anyio.get_cancelled_exc_class():
            if active.stop_reason is None:
                active.stop_reason = CLIENT_CLOSED
            raise
        except Exception as exc:
            state = "failed"
            failure = f"{type(exc).__name__}: {exc}"
            logger.warning("Local tuning run %s failed: %s", active.record.id, failure)
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(active, state, failure)

    async def _train_steps(self, active: _ActiveRun) -> None:
        record = active.record
        async with self._training_slots:
            loaded = await self.models.get(record.base_model)
            training, validation = await anyio.to_thread.run_sync(self._run_data, active)
            build = functools.partial(
                self.trainer_factory,
                loaded,
                training,
                active.config,
                validation=validation,
                cancel=active.cancel,
            )
            trainer = await anyio.to_thread.run_sync(build, limiter=self._torch_limiter)
            if active.resume_state is not None:
                load = functools.partial(trainer.load_state_dict, active.resume_state)
                await anyio.to_thread.run_sync(load, limiter=self._torch_limiter)
                active.resume_state = None
            record.state = "running"
            record.started_at = record.started_at or _now()
            record.total_steps = trainer.total_steps
            record.message = f"training: {trainer.total_steps} steps"
            if trainer.iteration:
                record.message += f", resumed after step {trainer.iteration}"
            await self._save(active, force=True)
            step = functools.partial(self._one_step, active, trainer)
            while True:
                result = await anyio.to_thread.run_sync(step, limiter=self._torch_limiter)
                if result is None:
                    break
                record.add_metric(
                    MetricPoint(
                        iteration=result.iteration,
                        epoch=result.epoch,
                        loss=result.loss,
                        timestamp=_now(),
                    )
                )
                record.message = (
                    f"epoch {result.epoch + 1}/{active.config.num_epochs}, "
                    f"step {result.iteration}/{trainer.total_steps}"
                )
                if result.validation is not None:
                    record.validation.append(
                        ValidationPoint(
                            epoch=result.epoch,
                            iteration=result.iteration,
                            loss=result.validation.loss,
                            accuracy=result.validation.accuracy,
                            best_epoch=result.best_epoch,
                        )
                    )
                    record.best_epoch = result.best_epoch
                if result.stopped is not None:
                    record.message = result.stopped
                if self._checkpoint_due(result):
                    await self._checkpoint(active, trainer, result)  # writes run.json too
                else:
                    await self._save(active, force=result.epoch_finished)
            record.stop_reason = trainer.stop_reason
            await anyio.to_thread.run_sync(
                self.store.save_adapter, record.id, trainer.save, limiter=self._torch_limiter
            )

    async def _train_in_processes(self, active: _ActiveRun) -> None:
        """Train the run in `torchrun`'s processes; adopt what their rank 0 writes."""
        assert self.processes is not None
        async with self._training_slots:
            await run_in_processes(
                self.store,
                active.record.id,
                self.processes,
                model=active.record.base_model,
                resume=active.resume_state is not None,
                checkpoint_every_steps=self.checkpoint_every_steps,
                keep_checkpoints=self.keep_checkpoints,
                adopt=functools.partial(self._adopt, active),
            )

    def _adopt(self, active: _ActiveRun, record: RunRecord) -> None:
        """Take the record the worker processes wrote as this run's (keeping its stop reason)."""
        active.record = record
        if record.state == "canceled" and active.stop_reason is None:
            active.stop_reason = record.failure_message

    async def train_record(
        self, record: RunRecord, *, resume_state: dict[str, Any] | None = None
    ) -> RunRecord:
        """Train a run that exists in the store already, here, to its end (rank 0 of a
        multi-process run does this; the process that started it holds the run's lock)."""
        active = _ActiveRun(
            record=record,
            config=TrainingConfig(**record.parameters),
            resume_state=resume_state,
        )
        self._active_runs[record.id] = active
        await self._train(active)
        return active.record

    async def wait(self, run_id: str) -> TuningRun:
        """The run once it has ended (at once if it is not training in this client)."""
        active = self._active_runs.get(run_id)
        if active is not None:
            await active.done.wait()
        return await self.get_tuning_run(run_id)

    def _checkpoint_due(self, result: StepResult) -> bool:
        every = self.checkpoint_every_steps
        return result.epoch_finished or (every is not None and result.iteration % every == 0)

    async def _checkpoint(
        self, active: _ActiveRun, trainer: PromptTrainer, result: StepResult
    ) -> None:
        """Write a checkpoint of the step just taken, prune older ones, record the list."""
        record = active.record
        state = await anyio.to_thread.run_sync(trainer.state_dict, limiter=self._torch_limiter)
        score = result.validation
        manifest = {
            "epoch": result.epoch,
            "end_of_epoch": result.epoch_finished,
            "training_loss": record.epoch_losses[-1] if record.epoch_losses else None,
            "validation_loss": score.loss if score else None,
            "validation_accuracy": score.accuracy if score else None,
            "best_epoch": result.best_epoch,
            "created_at": _now(),
            "parameters": record.parameters,
            "base_model": record.base_model,
            "data_ref": record.data_ref,
            "validation_data_ref": record.validation_data_ref,
        }
        payload = {"trainer": state, "history": history_json(record)}
        folder = self.store.run_dir(record.id)

        def write() -> list[CheckpointInfo]:
            _checkpoints.write_checkpoint(folder, payload, manifest, step=result.iteration)
            _checkpoints.prune(
                folder, keep_last=self.keep_checkpoints, best_epoch=trainer.best_epoch
            )
            return checkpoint_infos(self.store, record.id, trainer.best_epoch)

        record.checkpoints = await anyio.to_thread.run_sync(write)
        await self._save(active, force=True)

    def _run_data(self, active: _ActiveRun) -> tuple[list[Example], list[Example]]:
        """(training, validation) examples: the uploaded validation set, or a held-out share."""
        record = active.record
        examples = list(self.store.load_data(record.data_ref).examples)
        if record.validation_data_ref is not None:
            return examples, list(self.store.load_data(record.validation_data_ref).examples)
        split = active.config.validation_split
        if not split:
            return examples, []
        return stratified_split(
            examples, split, seed=active.config.seed, stratify=record.task_id == "classification"
        )

    def _one_step(self, active: _ActiveRun, trainer: PromptTrainer) -> StepResult | None:
        """One optimizer step (worker thread); notices a cancel asked for by another process."""
        if self.store.cancel_requested(active.record.id):
            active.stop(CANCELED_ELSEWHERE, cancel_scope=False)  # scopes are not thread-safe
        return trainer.step()

    async def _save(self, active: _ActiveRun, *, force: bool = False) -> None:
        """Write run.json if forced or due; the copy is taken here, in the event loop thread."""
        now = anyio.current_time()
        if not force and now - active.last_saved < _SAVE_INTERVAL:
            return
        active.last_saved = now
        record = active.record
        snapshot = record.model_copy(
            update={
                "metrics": list(record.metrics),
                "epoch_losses": list(record.epoch_losses),
                "validation": list(record.validation),
            }
        )
        await anyio.to_thread.run_sync(self.store.save, snapshot)

    async def _finish(self, active: _ActiveRun, state: TrainingState, failure: str | None) -> None:
        record = active.record
        record.state = state
        record.finished_at = _now()
        if state == "completed":
            losses = record.epoch_losses
            record.message = f"completed: {len(record.metrics)} steps" + (
                f", last epoch mean loss {losses[-1]:.4f}" if losses else ""
            )
            if record.best_epoch is not None:
                record.message += f"; kept epoch {record.best_epoch + 1} ({record.stop_reason})"
        elif state == "canceled":
            record.message = record.failure_message = active.stop_reason or CANCELED_BY_REQUEST
        else:
            record.message = "failed"
            record.failure_message = failure
        try:
            if active.stop_reason != RUN_DELETED:
                await self._save(active, force=True)
        except RunNotFoundError:
            logger.info("Local tuning run %s was deleted while it ran", record.id)
        except OSError as exc:
            logger.error(  # noqa: TRY400  (the message says it all; no traceback wanted)
                "Could not record the end of local tuning run %s: %s", record.id, exc
            )
        finally:
            self._active_runs.pop(record.id, None)
            if active.lock is not None:
                active.lock.release()
            active.done.set()
            logger.info("Local tuning run %s ended %s", record.id, state)
