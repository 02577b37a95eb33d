"""Where the local backend keeps its runs and training data, so nothing is lost on a restart.

Layout under the client's home folder:

```
runs/<run_id>/run.json          state, parameters, loss history, who runs it (see RunRecord)
runs/<run_id>/adapter/          the trained soft prompt (PEFT adapter, safetensors)
runs/<run_id>/cancel-requested  present when another process asked the owner to stop
runs/<run_id>/checkpoints/      the kept checkpoints, and train.lock (see `_checkpoints`)
data/<sha256>.jsonl             uploaded training sets, named by content (stored once)
```

Why it is built this way:

- Every write is atomic: a file is written under a temporary name and `os.replace`d; a folder
  is filled under a temporary name and renamed into place. A crash leaves the old version or
  the new one, never a torn `run.json` or a half-written adapter. Temporary names start with a
  dot and are ignored when listing; the ones a killed process left in its run's folder are
  removed when the run is next read.
- A run records the process that runs it (pid, its start time, a host id). A run that says
  `queued` or `running` while that process is gone (or on another host, where it cannot be
  checked) is reported `failed` with a message saying it was interrupted, so nothing is ever
  stuck "running" after a crash or a reboot.
- The store is plain synchronous file I/O; the async client calls it from worker threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from granite_tuner._files import write_atomic
from granite_tuner._secrets import get_logger
from granite_tuner.backends.local import _checkpoints
from granite_tuner.data import Example, LabelledSet
from granite_tuner.errors import ConfigurationError, GraniteTunerError, RunNotFoundError
from granite_tuner.runs import (
    CheckpointInfo,
    MetricPoint,
    TrainingState,
    TuningRun,
    ValidationPoint,
    epoch_groups,
)

__all__ = ["ACTIVE_STATES", "Owner", "RunRecord", "RunStore", "new_run_id"]

logger = get_logger("granite_tuner.local")

#: States in which a run still needs its process. (A local run is only ever `queued`,
#: `running`, `completed`, `failed` or `canceled`: the subset of `TrainingState` it needs.)
ACTIVE_STATES: frozenset[TrainingState] = frozenset({"queued", "running"})

_RUN_FILE = "run.json"
_ADAPTER = "adapter"
_CANCEL_MARKER = "cancel-requested"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")
_DATA_REF = re.compile(r"^[0-9a-f]{64}$")


def new_run_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


class Owner(BaseModel):
    """The process that runs a run: enough to tell, later, whether it is still alive."""

    model_config = ConfigDict(defer_build=True, frozen=True)

    pid: int
    host: str
    #: The process's start time (Linux clock ticks since boot); tells a reused pid apart.
    started: int | None = None

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(pid=pid, host=host_id(), started=_process_start(pid))

    def is_alive(self) -> bool:
        """Whether this process still exists on this host."""
        if self.host != host_id():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            pass
        if _is_zombie(self.pid):
            return False
        started = _process_start(self.pid)
        return self.started is None or started is None or started == self.started


def host_id() -> str:
    """This machine and this boot: a reboot ends every process, so it changes the id."""
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{socket.gethostname()}/{boot}" if boot else socket.gethostname()


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None (not Linux, or gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def _process_start(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def _is_zombie(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] in ("Z", "X")


class RunRecord(BaseModel):
    """Everything `run.json` holds about one run."""

    model_config = ConfigDict(defer_build=True, extra="ignore")

    id: str
    name: str | None = None
    state: TrainingState
    base_model: str
    task_id: str
    #: The settings the run trains with, defaults resolved.
    parameters: dict[str, Any] = Field(default_factory=dict)
    #: The parameters as the caller gave them (unset ones left out).
    requested: dict[str, Any] = Field(default_factory=dict)
    data_ref: str
    #: The tag the create came with: a caller whose answer was lost finds the run by it.
    request_tag: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    total_steps: int | None = None
    metrics: list[MetricPoint] = Field(default_factory=list)
    epoch_losses: list[float] = Field(default_factory=list)
    message: str | None = None
    failure_message: str | None = None
    owner: Owner
    #: Validation data uploaded for this run (None: held out from the training data, or none).
    validation_data_ref: str | None = None
    #: Validation score after each epoch, the epoch kept, and why training ended.
    validation: list[ValidationPoint] = Field(default_factory=list)
    best_epoch: int | None = None
    stop_reason: str | None = None
    #: The checkpoints kept on disk, oldest first (as of the last write of this file).
    checkpoints: list[CheckpointInfo] = Field(default_factory=list)

    _last_epoch_size: int | None = PrivateAttr(default=None)

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    def add_metric(self, point: MetricPoint) -> None:
        """Record one step; `epoch_losses` (mean loss of each epoch so far) follows.

        Updated incrementally: a long run logs tens of thousands of steps.
        """
        last = self.metrics[-1] if self.metrics else None
        self.metrics.append(point)
        if point.loss is None or point.epoch is None:
            return
        if last is not None and last.epoch == point.epoch and self.epoch_losses:
            if self._last_epoch_size is None:
                self._last_epoch_size = len(epoch_groups(self.metrics[:-1])[-1][1])
            self._last_epoch_size += 1
            mean = self.epoch_losses[-1]
            self.epoch_losses[-1] = mean + (point.loss - mean) / self._last_epoch_size
        else:
            self.epoch_losses.append(point.loss)
            self._last_epoch_size = 1

    def to_run(self) -> TuningRun:
        """The backend-neutral snapshot `Tuner` reads."""
        return TuningRun(
            id=self.id,
            name=self.name,
            state=self.state,
            base_model=self.base_model,
            task_id=self.task_id,
            model_id=self.id if self.state == "completed" else None,
            parameters=dict(self.parameters),
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            metrics=tuple(self.metrics),
            message=self.message,
            failure_message=self.failure_message,
            validation=tuple(self.validation),
            best_epoch=self.best_epoch,
            stop_reason=self.stop_reason,
            data_refs=tuple(
                ref for ref in (self.data_ref, self.validation_data_ref) if ref is not None
            ),
            checkpoints=tuple(self.checkpoints),
        )

    def as_interrupted(self) -> RunRecord:
        """How a run whose process is gone is reported: failed, and why."""
        where = f"pid {self.owner.pid} on {self.owner.host.split('/')[0]}"
        return self.model_copy(
            update={
                "state": "failed",
                "failure_message": (
                    f"interrupted: the process that ran it ({where}) is gone or on another "
                    f"host, so it stopped while {self.state}; resume it from its last "
                    f"checkpoint (Tuner.resume, or `granite-tuner resume {self.id}`), or start "
                    f"it again (the training data {self.data_ref[:12]}… is still stored)."
                ),
            }
        )


class RunStore:
    """Runs and training data on disk under `root`; safe against crashes at any point."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.data_dir = self.root / "data"

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # --- runs --------------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        if not _RUN_ID.fullmatch(run_id):
            raise RunNotFoundError(f"{run_id!r} is not a local tuning run id.")
        return self.runs_dir / run_id

    def adapter_dir(self, run_id: str) -> Path:
        """Where a completed run's soft prompt lives (a PEFT adapter folder)."""
        return self.run_dir(run_id) / _ADAPTER

    def create(self, record: RunRecord) -> None:
        """Write a new run: its folder appears complete, with its run.json, or not at all."""
        final = self.run_dir(record.id)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        scratch = self.runs_dir / f".{record.id}.tmp-{uuid.uuid4().hex}"
        scratch.mkdir()
        try:
            write_atomic(scratch / _RUN_FILE, _dump(record))
            scratch.rename(final)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise

    def save(self, record: RunRecord) -> None:
        """Replace the run's run.json atomically; `RunNotFoundError` if it was deleted."""
        folder = self.run_dir(record.id)
        if not folder.is_dir():
            raise RunNotFoundError(f"Tuning run {record.id} was deleted.")
        try:
            write_atomic(folder / _RUN_FILE, _dump(record))
        except FileNotFoundError:  # deleted while writing
            raise RunNotFoundError(f"Tuning run {record.id} was deleted.") from None

    def load(self, run_id: str) -> RunRecord:
        """The run as stored; `RunNotFoundError` when there is none."""
        path = self.run_dir(run_id) / _RUN_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise RunNotFoundError(f"There is no local tuning run {run_id!r}.") from None
        try:
            return RunRecord.model_validate_json(raw)
        except ValidationError as exc:
            raise GraniteTunerError(
                f"{path} cannot be read ({exc.error_count()} problems, first: "
                f"{exc.errors()[0]['msg']}); it was not written by this version of "
                "granite-tuner or was edited by hand. Delete the run folder to drop it."
            ) from None

    def read(self, run_id: str) -> RunRecord:
        """The run as it should be reported: interrupted runs show as failed."""
        return self._as_reported(self.load(run_id))

    def list_runs(self) -> list[RunRecord]:
        """Every readable run as reported, newest first (unreadable ones are logged, skipped)."""
        records: list[RunRecord] = []
        if not self.runs_dir.is_dir():
            return records
        for folder in self.runs_dir.iterdir():
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                records.append(self.read(folder.name))
            except RunNotFoundError:
                continue  # deleted meanwhile, or not a run folder
            except GraniteTunerError as exc:
                logger.warning("Skipping run folder %s: %s", folder, exc)
        records.sort(key=lambda r: r.created_at, reverse=True)
        return records

    def find(self, name: str) -> list[RunRecord]:
        """Runs with exactly this name, newest first."""
        return [record for record in self.list_runs() if record.name == name]

    def delete(self, run_id: str) -> None:
        """Remove the run: renamed out of sight first, so no half-deleted run is ever listed."""
        folder = self.run_dir(run_id)
        graveyard = self.runs_dir / f".{run_id}.deleted-{uuid.uuid4().hex}"
        try:
            folder.rename(graveyard)
        except FileNotFoundError:
            raise RunNotFoundError(f"There is no local tuning run {run_id!r}.") from None
        shutil.rmtree(graveyard, ignore_errors=True)

    def save_adapter(self, run_id: str, write: Callable[[Path], None]) -> Path:
        """Let `write` fill a temporary folder, then move it into place as the run's adapter."""
        final = self.adapter_dir(run_id)
        folder = final.parent
        if not folder.is_dir():
            raise RunNotFoundError(f"Tuning run {run_id} was deleted.")
        scratch = folder / f".{_ADAPTER}.tmp-{uuid.uuid4().hex}"
        try:
            write(scratch)
            if final.exists():  # a previous attempt's adapter: replace it
                old = folder / f".{_ADAPTER}.old-{uuid.uuid4().hex}"
                final.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            scratch.rename(final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return final

    def request_cancel(self, run_id: str) -> None:
        """Ask the process that runs `run_id` (maybe another one) to stop it."""
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir(run_id) / _CANCEL_MARKER).touch()

    def cancel_requested(self, run_id: str) -> bool:
        return (self.run_dir(run_id) / _CANCEL_MARKER).exists()

    def clear_cancel(self, run_id: str) -> None:
        """Forget an old cancel request (a resumed run must not stop at its first step)."""
        (self.run_dir(run_id) / _CANCEL_MARKER).unlink(missing_ok=True)

    def _as_reported(self, record: RunRecord) -> RunRecord:
        if record.is_active and not record.owner.is_alive():
            if record.owner.host == host_id():  # surely dead, not alive on another host
                self.remove_scratch(record.id)
            return record.as_interrupted()
        return record

    def remove_scratch(self, run_id: str) -> None:
        """Remove what a killed writer left half-made in the run's folder (temporary names);
        call it only when no process writes the run (its owner is dead, or we hold its lock)."""
        with contextlib.suppress(OSError):
            for leftover in self.run_dir(run_id).glob(".*"):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
        _checkpoints.remove_scratch(self.run_dir(run_id))

    # --- training data -----------------------------------------------------------------------

    def data_path(self, data_ref: str) -> Path:
        if not _DATA_REF.fullmatch(data_ref):
            raise ConfigurationError(
                f"{data_ref!r} is not a local training data reference (the SHA-256 that "
                "upload_training_data returned)."
            )
        return self.data_dir / f"{data_ref}.jsonl"

    def put_data(self, data: LabelledSet) -> str:
        """Store the set as JSONL named by its SHA-256 (once); returns that hash."""
        content = data.to_jsonl()
        ref = hashlib.sha256(content).hexdigest()
        path = self.data_path(ref)
        if not path.is_file():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(path, content)
        return ref

    def has_data(self, data_ref: str) -> bool:
        return self.data_path(data_ref).is_file()

    def load_data(self, data_ref: str) -> LabelledSet:
        path = self.data_path(data_ref)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise ConfigurationError(
                f"The training data {data_ref[:12]}… is not stored (deleted?); upload it again."
            ) from None
        examples = tuple(Example.model_validate(json.loads(line)) for line in lines if line)
        return LabelledSet(examples=examples, source=str(path))

    def delete_data(self, data_ref: str) -> None:
        self.data_path(data_ref).unlink(missing_ok=True)


def _dump(record: RunRecord) -> bytes:
    return record.model_dump_json(indent=1).encode("utf-8")
