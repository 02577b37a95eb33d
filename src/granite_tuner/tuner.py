"""`Tuner`: check the data, upload it, prompt-tune, and wait for the run — reliably.

```python
result = await Tuner(client, base_model="ibm/granite-13b-instruct-v2",
                     training_data="train.jsonl", parameters={"num_epochs": 20}).run()
```

What "reliably" means here:

- every check (data, parameters, base model) runs before anything is uploaded or started;
- a run is created once per `Tuner`, even when the create answer is lost and even when the
  caller calls `run()` again after a failed or cancelled create: the `Tuner` keeps its request
  tag and looks the run up by it before it would ever send the create again;
- the wait survives network faults: each status read is retried by the client, and if even
  that fails the wait goes on at the next poll; only the caller's `timeout` ends it early;
- the poll interval starts short and grows to a cap, and resets when the state changes;
- cancelling the awaiting task cancels the remote run only when `cancel_on_exit` asks for it
  (then even a cancellation that comes while the create call is in flight: the create is
  finished first, so that the run it started is known and canceled);
- a restarted program re-attaches with `Tuner.attach(client, run_id=...)` (or `name=`), or
  by passing `resume=True` with the same `name`;
- a local run whose own process died goes on from its last checkpoint with
  `Tuner.resume(client, run_id=...)`, to the result one uninterrupted run gives.

Progress comes as typed events (`granite_tuner.events`): to an `on_event` callback, or by
iterating `tuner.events()`, which drives the run itself.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

import anyio

from granite_tuner._names import generated_name
from granite_tuner._polling import (
    PollDeadline,
    Poller,
    checked_poll_interval,
    checked_timeout,
)
from granite_tuner._progress import TuningBar
from granite_tuner._retry import look_up_before_resend
from granite_tuner._secrets import get_logger
from granite_tuner.backends.base import (
    SoftPromptSource,
    TuningBackend,
    check_id,
    check_request_tag,
    check_run_name,
    new_request_tag,
)
from granite_tuner.data import LabelledSet, aload_examples
from granite_tuner.errors import (
    APIError,
    ConfigurationError,
    InvalidParametersError,
    RunNotFoundError,
    TuningFailedError,
    TuningTimeoutError,
    UnsupportedFeatureError,
)
from granite_tuner.events import (
    EpochCompleted,
    RunFinished,
    RunSubmitted,
    StateChanged,
    StepLogged,
    TuningEvent,
)
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.runs import TuningResult, TuningRun, epoch_groups
from granite_tuner.tracking import (
    Tracker,
    check_trackers,
    flat_parameters,
    log_finished_run,
    notify,
)
from granite_tuner.validation import (
    SelectionMetric,
    check_backend_accepts,
    validation_options,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Tuner"]

logger = get_logger("granite_tuner.tuner")

TrainingData: TypeAlias = (
    "LabelledSet | str | os.PathLike[str] | Sequence[Mapping[str, Any]] | pd.DataFrame"
)
EventCallback = Callable[[TuningEvent], Awaitable[None] | None]

_CANCEL_GRACE_SECONDS = 30.0


class Tuner:
    """One prompt-tuning run on a backend (`WatsonxClient`, or the local backend).

    Args:
        client: the backend to tune on.
        base_model: the model to tune, e.g. `ibm/granite-13b-instruct-v2`; checked against the
            backend's live list of tunable models.
        training_data: a path (JSONL, JSON array, CSV), a list of `{"input", "output"}` dicts,
            a pandas DataFrame or a `LabelledSet`; checked completely before upload.
        task: the task id (`classification`, `generation`, ...).
        parameters: `PromptTuningParameters` or a dict of them; left-out values are the
            backend's defaults.
        name: the run's name (at most 100 printable characters; checked before anything is
            sent); generated when not given. With `resume=True`, an existing run of this name
            is waited for instead of starting another.
        request_tag: the tag the create is sent with and looked up by, so that a create whose
            answer was lost is found instead of repeated; generated when not given. Pass your
            own (`granite-tuner.request.<hex>`) to keep create-once across processes.
        timeout: seconds to wait for the run before `TuningTimeoutError`; None waits forever.
        poll_interval: (first, largest) seconds between status reads.
        cancel_on_exit: cancel the remote run when the awaiting task is cancelled.
        on_event: called with each `TuningEvent` (a plain or an async function).
        validation_data: held-out examples (any form `training_data` takes), checked like it;
            the local backend scores the soft prompt on them after every epoch and keeps the
            best epoch's. Only backends that can use it accept it (not watsonx.ai).
        validation_split: the share of `training_data` held out for validation instead
            (stratified by label, seeded); the local backend holds out a share by default,
            and `0` turns validation off.
        early_stopping_patience: stop after this many epochs without a better validation
            score (`0`: never stop early).
        selection_metric: `"accuracy"` or `"loss"`: which validation figure picks the kept
            epoch (by default accuracy for classification, loss otherwise).
        trackers: experiment trackers (`granite_tuner.tracking`, e.g. `MLflowTracker`) that
            get the parameters, each epoch's figures, the learning curve, the result and the
            soft prompt; a tracker that fails is logged and never stops the run.
    """

    def __init__(
        self,
        client: TuningBackend,
        *,
        base_model: str | None = None,
        training_data: TrainingData | None = None,
        task: str | None = None,
        parameters: PromptTuningParameters | Mapping[str, Any] | None = None,
        name: str | None = None,
        resume: bool = False,
        timeout: float | None = None,
        poll_interval: tuple[float, float] = (2.0, 60.0),
        cancel_on_exit: bool = False,
        on_event: EventCallback | None = None,
        request_tag: str | None = None,
        validation_data: TrainingData | None = None,
        validation_split: float | None = None,
        early_stopping_patience: int | None = None,
        selection_metric: SelectionMetric | None = None,
        trackers: Sequence[Tracker] | None = None,
    ) -> None:
        if not isinstance(client, TuningBackend):
            raise ConfigurationError(
                "client must be a tuning backend such as WatsonxClient, "
                f"got {type(client).__name__}."
            )
        self.client = client
        self.parameters = _parameters(parameters, task)
        self.base_model = base_model
        self.training_data = training_data
        self.name = (
            check_run_name(name) if name is not None else generated_name(self.parameters.task_id)
        )
        #: Sent with the create; a later `run()` looks the run up by it before creating again.
        self.request_tag = (
            check_request_tag(request_tag) if request_tag is not None else new_request_tag()
        )
        #: `resume=True`: find a live or finished run of this name and wait on it.
        self._resume_by_name = resume
        self.timeout = checked_timeout(timeout)
        self.poll_interval = checked_poll_interval(poll_interval)
        self.cancel_on_exit = cancel_on_exit
        self.on_event = on_event
        self.trackers = check_trackers(trackers)
        self.validation_data = validation_data
        self.validation = validation_options(
            validation_data=validation_data,
            validation_split=validation_split,
            early_stopping_patience=early_stopping_patience,
            selection_metric=selection_metric,
        )
        #: The run's id once submitted or attached.
        self.run_id: str | None = None
        #: The id of the uploaded training data, once uploaded.
        self.data_ref: str | None = None
        #: The id of the uploaded validation data, once uploaded.
        self.validation_data_ref: str | None = None
        #: Non-fatal findings: data warnings, base-model lifecycle notes.
        self.warnings: list[str] = []
        #: The last snapshot of the run.
        self.last_run: TuningRun | None = None
        self._attach_by_name: str | None = None
        self._attach_by_tag = False
        #: `Tuner.resume`: the stopped run to go on with, and whether to check the settings.
        self._resume_run_id: str | None = None
        self._check_parameters = parameters is not None
        # True once a create was sent without a clear "not created" answer: the next attempt
        # looks the run up by `request_tag` before it sends another create.
        self._create_sent = False

    @classmethod
    def attach(
        cls,
        client: TuningBackend,
        *,
        run_id: str | None = None,
        name: str | None = None,
        tag: str | None = None,
        **options: Any,
    ) -> Tuner:
        """A `Tuner` for a run that already exists, found by id, by name (the newest) or by
        the request tag of a create whose answer was lost (`error.request_tag`)."""
        if sum(value is not None for value in (run_id, name, tag)) != 1:
            raise ConfigurationError("Tuner.attach needs exactly one of run_id=, name= or tag=.")
        tuner = cls(client, name=name, request_tag=tag, **options)
        tuner.run_id = run_id
        tuner._attach_by_name = name
        tuner._attach_by_tag = tag is not None
        return tuner

    @classmethod
    def resume(
        cls,
        client: TuningBackend,
        *,
        run_id: str,
        base_model: str | None = None,
        parameters: PromptTuningParameters | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Tuner:
        """A `Tuner` that goes on with a stopped local run (its process killed, or the run
        failed or canceled) from the run's last whole checkpoint; `run()` resumes it and waits.

        With the same seed the result is what one uninterrupted run gives. `base_model` and
        `parameters` are optional checks: when given they must be the run's own
        (`ResumeMismatchError` otherwise). A completed run gives `RunFinishedError`, a run
        that another process trains `RunInUseError`, and a backend without checkpoints
        (watsonx.ai) `UnsupportedFeatureError`. (`resume=True` in the constructor is another
        thing: it waits on a run of the same name that is still alive.)
        """
        tuner = cls(client, base_model=base_model, parameters=parameters, **options)
        tuner._resume_run_id = check_id(run_id, "run_id")
        return tuner

    def __repr__(self) -> str:
        return f"Tuner(name={self.name!r}, base_model={self.base_model!r}, run_id={self.run_id!r})"

    async def run(self, *, progress: bool = False) -> TuningResult:
        """Check, upload, start (unless attached) and wait; the completed run's result.

        With `progress=True`, a bar shows the epochs done, the state and the loss (a widget in
        Jupyter, text on stderr elsewhere; needs `tqdm`). Nothing is shown by default.

        Raises `TuningFailedError` if the run fails or is canceled, `TuningTimeoutError` if
        `timeout` passes first (the run goes on).
        """
        bar = TuningBar(self.name, self.parameters.num_epochs) if progress else None
        result: TuningResult | None = None
        try:
            async with aclosing(self.events()) as events:
                async for event in events:
                    if bar is not None:
                        bar(event)
                    if isinstance(event, RunFinished):
                        result = self._result()
        finally:
            if bar is not None:
                bar.close()
        assert result is not None  # events() ends with RunFinished or raises
        return result

    async def wait(self, *, progress: bool = False) -> TuningResult:
        """Wait for an attached or submitted run; the same as `run()` once a run exists."""
        if self.run_id is None and self._attach_by_name is None and not self._attach_by_tag:
            raise ConfigurationError("Nothing to wait for: call run() or Tuner.attach() first.")
        return await self.run(progress=progress)

    async def submit(self) -> str:
        """Check everything, upload the data and start the run; returns the run id."""
        if self.run_id is not None:
            return self.run_id
        if self._resume_run_id is not None:
            await self._resume_from_checkpoint(self._resume_run_id)
        else:
            await self._prepare_and_start()
        assert self.run_id is not None
        return self.run_id

    async def events(self) -> AsyncGenerator[TuningEvent, None]:
        """Drive the run and yield its events until it finishes.

        The last event is `RunFinished`; for a failed or canceled run, `TuningFailedError`
        is raised after it.
        """
        deadline = math.inf if self.timeout is None else anyio.current_time() + self.timeout
        try:
            submitted: RunSubmitted | None = None
            first: TuningRun | None = None
            if self.run_id is None:
                submitted = await self._resolve_existing() or await self._prepare_and_start()
            elif self.last_run is None:  # attached by id: the run's own name, not a new one
                first = await self.client.get_tuning_run(self.run_id)
                self.name = first.name or self.name
                submitted = RunSubmitted(
                    run_id=first.id, name=self.name, base_model=first.base_model, attached=True
                )
            if submitted is not None:
                await self._emit(submitted)
                yield submitted
            async for event in self._poll(deadline, first):
                await self._emit(event)
                yield event
        except anyio.get_cancelled_exc_class():
            if self.cancel_on_exit and self.run_id is not None:
                await self._cancel_remote(self.run_id)
            raise
        result = self._result()
        if not result.succeeded:
            raise TuningFailedError(
                f"Tuning run {result.run_id} ended {result.state}: "
                f"{result.failure_message or 'the service gave no reason'}.",
                run_id=result.run_id,
                result=result,
            )

    async def cancel(self) -> None:
        """Cancel the remote run (it stays listed, as canceled)."""
        if self.run_id is None:
            raise ConfigurationError("There is no run to cancel yet.")
        await self.client.cancel_tuning_run(self.run_id)

    async def delete(self, *, training_data: bool = True) -> None:
        """Delete the run and, unless told otherwise, the training data this Tuner uploaded."""
        if self.run_id is not None:
            await self.client.delete_tuning_run(self.run_id)
        if training_data:
            for ref in dict.fromkeys((self.data_ref, self.validation_data_ref)):
                if ref is not None:
                    await self.client.delete_training_data(ref)

    # --- steps -------------------------------------------------------------------------------

    async def _resolve_existing(self) -> RunSubmitted | None:
        """Attach by tag (`attach(tag=)`), by name (`attach(name=)`) or with `resume=True`."""
        if self._attach_by_tag:
            found = await self.client.find_tuning_run_by_tag(self.request_tag)
            if found is None:
                raise RunNotFoundError(
                    f"There is no tuning run with the request tag {self.request_tag!r}: the "
                    "create it was sent with never reached the service."
                )
            self.run_id = found.id
            return RunSubmitted(
                run_id=found.id, name=found.name, base_model=found.base_model, attached=True
            )
        if self._resume_run_id is not None:
            return await self._resume_from_checkpoint(self._resume_run_id)
        if self._attach_by_name is None and not self._resume_by_name:
            return None
        runs = await self.client.find_tuning_runs(self.name)
        if self._resume_by_name and self._attach_by_name is None:
            runs = [r for r in runs if r.state not in ("failed", "canceled", "error")]
        if not runs:
            if self._attach_by_name is not None:
                raise RunNotFoundError(f"There is no tuning run named {self.name!r} to attach to.")
            return None
        if len(runs) > 1:
            logger.warning(
                "%d runs are named %r; attaching to the newest, %s",
                len(runs),
                self.name,
                runs[0].id,
            )
        self.run_id = runs[0].id
        logger.info("Attached to tuning run %s (%s)", self.run_id, runs[0].state)
        return RunSubmitted(
            run_id=self.run_id, name=self.name, base_model=runs[0].base_model, attached=True
        )

    async def _resume_from_checkpoint(self, run_id: str) -> RunSubmitted:
        """Ask the backend to go on with the run; later events are those after its checkpoint."""
        if not self.client.supports_checkpoints:
            raise UnsupportedFeatureError(
                f"The {self.client.backend_name} backend keeps no checkpoints, so run {run_id} "
                "cannot be resumed; wait on it with Tuner.attach(client, run_id=...) instead."
            )
        run = await self.client.resume_tuning(
            run_id,
            base_model=self.base_model,
            parameters=self.parameters if self._check_parameters else None,
        )
        self.run_id = run.id
        self.name = run.name or self.name
        self.last_run = run
        logger.info("Resumed tuning run %s from its last checkpoint", run.id)
        return RunSubmitted(run_id=run.id, name=run.name, base_model=run.base_model, attached=True)

    async def _prepare_and_start(self) -> RunSubmitted:
        if self.base_model is None:
            raise InvalidParametersError(
                "base_model is required to start a run.", field="base_model"
            )
        if self.training_data is None:
            raise ConfigurationError("training_data is required to start a run.")
        check_backend_accepts(
            self.client.backend_name,
            self.client.supports_validation,
            self.validation,
            has_data=self.validation_data is not None,
        )
        data = await self._load_training_data()
        validation_set = await self._load_validation_data()
        await self._check_base_model(self.base_model)
        if self.data_ref is None:
            self.data_ref = await self.client.upload_training_data(data, name=self.name)
        validation = self.validation if self.validation.requested else None
        if validation_set is not None:
            if self.validation_data_ref is None:
                self.validation_data_ref = await self.client.upload_training_data(
                    validation_set, name=f"{self.name}-validation"
                )
            validation = self.validation.model_copy(update={"data_ref": self.validation_data_ref})
        if self._create_sent:
            # An earlier create of this Tuner may have started the run: find it, never repeat.
            found = await self.client.find_tuning_run_by_tag(self.request_tag)
            if found is not None:
                self.run_id = found.id
                logger.info("Found tuning run %s, started by an earlier create", found.id)
                return RunSubmitted(run_id=found.id, name=self.name, base_model=self.base_model)
        self._create_sent = True
        try:
            # With cancel_on_exit, a create once begun is seen through: a cancellation that
            # came while it was in flight (the service may already have started the run) then
            # lands at the next await, with the run's id known, so the run can be canceled.
            with anyio.CancelScope(shield=self.cancel_on_exit):
                run = await self.client.start_tuning(
                    name=self.name,
                    base_model=self.base_model,
                    data_ref=self.data_ref,
                    parameters=self.parameters,
                    request_tag=self.request_tag,
                    validation=validation,
                )
                self.run_id = run.id
        except anyio.get_cancelled_exc_class():
            logger.warning(
                "Tuning run create cancelled in flight; it may exist: run() on this Tuner finds "
                "it, or Tuner.attach(client, tag=%r)",
                self.request_tag,
            )
            raise
        except Exception as exc:
            if not look_up_before_resend(exc):  # certainly made nothing: next run() sends anew
                self._create_sent = False
            elif isinstance(exc, APIError):
                exc.add_request_tag(
                    self.request_tag,
                    "The run may have been created: call run() on the same Tuner again (it "
                    "looks the run up before creating another), or "
                    f"Tuner.attach(client, tag={self.request_tag!r}).",
                )
            raise
        logger.info("Started tuning run %s (%s) of %s", run.id, self.name, self.base_model)
        return RunSubmitted(run_id=run.id, name=self.name, base_model=self.base_model)

    async def _load_training_data(self) -> LabelledSet:
        source: Any = self.training_data
        if isinstance(source, LabelledSet):
            data = source
        else:
            data = await aload_examples(
                source,
                purpose="training",
                task_id=self.parameters.task_id,
                max_input_tokens=self.parameters.max_input_tokens,
            )
        self.warnings.extend(str(w) for w in data.warnings)
        return data

    async def _load_validation_data(self) -> LabelledSet | None:
        source: Any = self.validation_data
        if source is None or isinstance(source, LabelledSet):
            return source
        data = await aload_examples(
            source,
            purpose="validation",
            task_id=self.parameters.task_id,
            max_input_tokens=self.parameters.max_input_tokens,
        )
        self.warnings.extend(f"validation data: {w}" for w in data.warnings)
        return data

    async def _check_base_model(self, base_model: str) -> None:
        models = await self.client.tunable_models()
        found = next((m for m in models if m.model_id == base_model), None)
        if found is None:
            choices = ", ".join(sorted(m.model_id for m in models)) or "none"
            raise InvalidParametersError(
                f"base_model={base_model!r} cannot be prompt-tuned here. "
                f"Tunable models: {choices}.",
                field="base_model",
            )
        if found.lifecycle_state in ("deprecated", "constricted"):
            note = f"{base_model} is {found.lifecycle_state}; plan to move to another base model."
            logger.warning(note)
            self.warnings.append(note)

    async def _poll(
        self, deadline: float, first: TuningRun | None = None
    ) -> AsyncGenerator[TuningEvent, None]:
        """Read the run until it finishes, yielding what changed since the last read.

        `first` is a read made already (attaching by id reads the run for its name).
        """
        assert self.run_id is not None
        run_id = self.run_id
        client = self.client
        poller = Poller(
            lambda: client.get_tuning_run(run_id),
            poll_interval=self.poll_interval,
            timeout=None if math.isinf(deadline) else deadline - anyio.current_time(),
            what=f"tuning run {run_id}",
        )
        unknown_states_logged: set[str] = set()
        previous = self.last_run
        try:
            async with aclosing(_starting_with(first, poller.snapshots())) as snapshots:
                async for run in snapshots:
                    for event in self._changes(previous, run, unknown_states_logged):
                        yield event
                    if _state_changed(previous, run):
                        poller.reset_interval()
                    previous = self.last_run = run
                    if run.is_finished:
                        yield RunFinished(
                            run_id=run_id,
                            state=run.state,
                            final_loss=self._result().final_loss,
                            model_id=run.model_id,
                            best_epoch=run.best_epoch,
                            stop_reason=run.stop_reason,
                        )
                        return
        except PollDeadline:
            self._timed_out(run_id)

    def _timed_out(self, run_id: str) -> NoReturn:
        state = self.last_run.state if self.last_run else "unknown"
        raise TuningTimeoutError(
            f"Tuning run {run_id} did not finish within {self.timeout} s (last state: {state}). "
            f"It goes on; wait again with Tuner.attach(client, run_id={run_id!r}).",
            run_id=run_id,
        )

    def _changes(
        self, previous: TuningRun | None, run: TuningRun, unknown_states_logged: set[str]
    ) -> list[TuningEvent]:
        """The events between two snapshots: state change, new steps, finished epochs."""
        events: list[TuningEvent] = []
        state_change: StateChanged | None = None
        if _state_changed(previous, run):
            unknown = run.service_state
            if unknown is not None and unknown not in unknown_states_logged:
                unknown_states_logged.add(unknown)
                logger.warning(
                    "Run %s is in state %r, unknown to this version; waiting on", run.id, unknown
                )
            state_change = StateChanged(
                run_id=run.id,
                previous=previous.state if previous else None,
                state=run.state,
                message=run.message,
                service_state=run.service_state,
            )
        seen_points = len(previous.metrics) if previous else 0
        for point in run.metrics[seen_points:]:
            events.append(
                StepLogged(
                    run_id=run.id, iteration=point.iteration, epoch=point.epoch, loss=point.loss
                )
            )
        # An epoch is complete once a later epoch has started, or the run has finished.
        old_groups = epoch_groups(previous.metrics) if previous else []
        old_complete = (
            len(old_groups) if previous and previous.is_finished else max(len(old_groups) - 1, 0)
        )
        new_groups = epoch_groups(run.metrics)
        new_complete = len(new_groups) if run.is_finished else max(len(new_groups) - 1, 0)
        num_epochs = run.parameters.get("num_epochs")
        scores = {point.epoch: point for point in run.validation}
        for epoch, points in new_groups[old_complete:new_complete]:
            losses = [p.loss for p in points if p.loss is not None]
            score = scores.get(epoch)
            events.append(
                EpochCompleted(
                    run_id=run.id,
                    epoch=epoch,
                    mean_loss=sum(losses) / len(losses),
                    num_epochs=num_epochs if isinstance(num_epochs, int) else None,
                    validation_loss=score.loss if score else None,
                    validation_accuracy=score.accuracy if score else None,
                    best_epoch=score.best_epoch if score else None,
                )
            )
        if state_change is not None:
            # "running" comes before the steps it explains; "completed" after the last epoch.
            if run.is_finished:
                events.append(state_change)
            else:
                events.insert(0, state_change)
        return events

    def _result(self) -> TuningResult:
        assert self.last_run is not None
        return TuningResult.from_run(
            self.last_run,
            backend=self.client.backend_name,
            data_ref=self.data_ref,
            warnings=self.warnings,
        )

    async def _emit(self, event: TuningEvent) -> None:
        if self.trackers:
            await self._track(event)
        if self.on_event is None:
            return
        outcome = self.on_event(event)
        if inspect.isawaitable(outcome):
            await outcome

    async def _track(self, event: TuningEvent) -> None:
        """Hand the trackers what they keep of this event (see `granite_tuner.tracking`)."""
        trackers = self.trackers
        if isinstance(event, RunSubmitted):
            parameters = flat_parameters(
                {
                    "run_id": event.run_id,
                    "backend": self.client.backend_name,
                    "base_model": event.base_model or self.base_model,
                    **self.parameters.model_dump(mode="json"),
                    "validation": self.validation.model_dump(mode="json"),
                }
            )
            await notify(trackers, lambda t: t.start(event.name or self.name, parameters))
        elif isinstance(event, EpochCompleted):
            figures = {"train_loss": event.mean_loss}
            if event.validation_loss is not None:
                figures["validation_loss"] = event.validation_loss
            if event.validation_accuracy is not None:
                figures["validation_accuracy"] = event.validation_accuracy
            await notify(trackers, lambda t: t.log_metrics(figures, step=event.epoch + 1))
        elif isinstance(event, RunFinished):
            result = self._result()
            soft_prompt = None
            if isinstance(self.client, SoftPromptSource) and result.succeeded:
                try:
                    soft_prompt = await self.client.soft_prompt(result.run_id)
                except Exception as exc:  # tracking never breaks a run
                    logger.warning("Could not read run %s's soft prompt: %s", result.run_id, exc)
            await log_finished_run(trackers, result, soft_prompt)

    async def _cancel_remote(self, run_id: str) -> None:
        """Cancel the remote run even though our own task is being cancelled."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCEL_GRACE_SECONDS):
            try:
                await self.client.cancel_tuning_run(run_id)
                logger.info("Canceled tuning run %s", run_id)
            except Exception as exc:
                logger.warning("Could not cancel tuning run %s: %s", run_id, exc)


def _state_changed(previous: TuningRun | None, run: TuningRun) -> bool:
    """Whether `run` is in another state than `previous` (an unknown one counts by its own
    name, so that one unknown state following another is a change too)."""
    if previous is None:
        return True
    return (run.state, run.service_state) != (previous.state, previous.service_state)


def _parameters(
    parameters: PromptTuningParameters | Mapping[str, Any] | None, task: str | None
) -> PromptTuningParameters:
    if parameters is None:
        parameters = PromptTuningParameters.model_validate({"task_id": task} if task else {})
    elif not isinstance(parameters, PromptTuningParameters):
        if not isinstance(parameters, Mapping):
            raise ConfigurationError(
                "parameters must be PromptTuningParameters or a mapping of its fields "
                f"(e.g. {{'num_epochs': 20}}), not {type(parameters).__name__}."
            )
        values = dict(parameters)
        if task is not None:
            values.setdefault("task_id", task)
        parameters = PromptTuningParameters.model_validate(values)
    if task is not None and parameters.task_id != task:
        raise InvalidParametersError(
            f"task={task!r} disagrees with parameters.task_id={parameters.task_id!r}; give one.",
            field="task_id",
        )
    return parameters


async def _starting_with(
    first: TuningRun | None, snapshots: AsyncGenerator[TuningRun, None]
) -> AsyncGenerator[TuningRun, None]:
    """`first` (when given), then the poller's snapshots."""
    async with aclosing(snapshots):
        if first is not None:
            yield first
        async for run in snapshots:
            yield run
