"""Checkpoints of a local run: written whole or not at all, checked before use, kept bounded.

Layout inside a run's folder (see `_store`):

```
checkpoints/step-00000120/state.pt        the trainer's state (torch, weights-only loadable)
checkpoints/step-00000120/manifest.json   step, epoch, losses, settings, SHA-256 of state.pt
train.lock                                held (flock) by the process that trains the run
```

Why it is built this way:

- A checkpoint is a folder filled under a temporary name (a dot name), each file written with
  `write_atomic` (fsync), and renamed into place as a whole; the parent folder is synced after
  the rename. A crash leaves the previous checkpoints and, at most, a dot folder that the next
  reader of the run removes.
- The manifest carries the SHA-256 of `state.pt`; a checkpoint whose file does not match is
  skipped with a warning that names the file, and the one before it is used.
- Only the best epoch's checkpoint and the last `keep_last` are kept; older ones are removed
  only after a newer one is whole, so a crash during pruning leaves more, never fewer.
- The lock is an advisory `flock` on `train.lock`: the kernel drops it when its process dies,
  so a SIGKILLed trainer never leaves a run locked.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from granite_tuner._files import write_atomic
from granite_tuner._secrets import get_logger
from granite_tuner.errors import ConfigurationError, RunInUseError
from granite_tuner.runs import CheckpointInfo

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from granite_tuner.backends.local._decode_types import PeftMethod

__all__ = [
    "CHECKPOINTS",
    "DEFAULT_KEEP_LAST",
    "Checkpoint",
    "CheckpointManifest",
    "RunLock",
    "checkpoint_model_id",
    "checkpoint_soft_prompt",
    "latest_valid",
    "list_checkpoints",
    "load_state",
    "parse_checkpoint_model_id",
    "prune",
    "remove_scratch",
    "write_checkpoint",
]

logger = get_logger("granite_tuner.local")

CHECKPOINTS = "checkpoints"
_STATE = "state.pt"
_MANIFEST = "manifest.json"
_LOCK = "train.lock"
_FORMAT = 1
_NAME = re.compile(r"^step-(\d{8})$")
_MODEL_ID = re.compile(r"^(?P<run>[A-Za-z0-9][A-Za-z0-9_-]{0,79}):checkpoint-(?P<step>\d+)$")

#: Checkpoints kept besides the best epoch's: the newest `DEFAULT_KEEP_LAST`.
DEFAULT_KEEP_LAST = 2

#: Called with the whole scratch folder just before it is renamed into place. For crash tests
#: only (a test stops the process here to show that a torn checkpoint is never used).
before_rename: Callable[[Path], None] | None = None


class CheckpointManifest(BaseModel):
    """What `manifest.json` says about its checkpoint; read without loading the state."""

    model_config = ConfigDict(defer_build=True, extra="ignore", frozen=True)

    format: int = _FORMAT
    step: int
    epoch: int
    end_of_epoch: bool
    training_loss: float | None = None
    validation_loss: float | None = None
    validation_accuracy: float | None = None
    #: The best epoch when this was written (the run's may have changed since).
    best_epoch: int | None = None
    created_at: datetime
    #: The run's settings, base model and data: a resume checks them against the run's.
    parameters: dict[str, Any]
    base_model: str
    data_ref: str
    validation_data_ref: str | None = None
    sha256: str
    size: int


@dataclass(frozen=True)
class Checkpoint:
    """A whole checkpoint folder and its manifest."""

    folder: Path
    manifest: CheckpointManifest

    @property
    def state_file(self) -> Path:
        return self.folder / _STATE

    def info(self, run_id: str, best_epoch: int | None) -> CheckpointInfo:
        m = self.manifest
        return CheckpointInfo(
            step=m.step,
            epoch=m.epoch,
            end_of_epoch=m.end_of_epoch,
            training_loss=m.training_loss,
            validation_loss=m.validation_loss,
            validation_accuracy=m.validation_accuracy,
            best=m.end_of_epoch and best_epoch is not None and m.epoch == best_epoch,
            model_id=checkpoint_model_id(run_id, m.step),
            created_at=m.created_at,
        )


def checkpoint_model_id(run_id: str, step: int) -> str:
    """The model id that deploys one checkpoint: `<run id>:checkpoint-<step>`."""
    return f"{run_id}:checkpoint-{step}"


def parse_checkpoint_model_id(model_id: str) -> tuple[str, int] | None:
    """(run id, step) of a checkpoint's model id; None for any other id."""
    match = _MODEL_ID.fullmatch(model_id)
    return None if match is None else (match["run"], int(match["step"]))


def write_checkpoint(
    run_dir: Path, state: dict[str, Any], manifest: dict[str, Any], *, step: int
) -> Checkpoint:
    """Write `state` (torch-saved) and its manifest as the checkpoint of `step`, atomically.

    `manifest` holds every `CheckpointManifest` field but the checksum and size, which are
    computed here. An older checkpoint of the same step (from a run that was resumed from an
    earlier one) is replaced only once the new one is whole.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    content = buffer.getvalue()
    whole = CheckpointManifest.model_validate(
        {
            **manifest,
            "step": step,
            "sha256": hashlib.sha256(content).hexdigest(),
            "size": len(content),
        }
    )
    parent = run_dir / CHECKPOINTS
    parent.mkdir(exist_ok=True)
    final = parent / f"step-{step:08d}"
    scratch = parent / f".{final.name}.tmp-{uuid.uuid4().hex}"
    scratch.mkdir()
    try:
        write_atomic(scratch / _STATE, content)
        write_atomic(scratch / _MANIFEST, whole.model_dump_json(indent=1).encode("utf-8"))
        if before_rename is not None:
            before_rename(scratch)
        if final.exists():
            _remove(final)
        scratch.rename(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _sync_folder(parent)
    return Checkpoint(final, whole)


def list_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Whole checkpoints by their manifests, oldest first (the state is not read or checked)."""
    parent = run_dir / CHECKPOINTS
    found: list[Checkpoint] = []
    if not parent.is_dir():
        return found
    for folder in parent.iterdir():
        if not _NAME.fullmatch(folder.name):
            continue
        path = folder / _MANIFEST
        try:
            manifest = CheckpointManifest.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            logger.warning("Skipping checkpoint %s: its manifest cannot be read (%s)", path, exc)
            continue
        found.append(Checkpoint(folder, manifest))
    found.sort(key=lambda c: c.manifest.step)
    return found


def load_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """The checkpoint's state, checked against its manifest's SHA-256 first.

    `ConfigurationError` naming the file when it is missing, torn or altered.
    """
    import torch

    path = checkpoint.state_file
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"Cannot read checkpoint file {path}: {exc}") from None
    if hashlib.sha256(content).hexdigest() != checkpoint.manifest.sha256:
        raise ConfigurationError(
            f"Checkpoint file {path} fails its checksum (damaged or altered since it was "
            "written); it is not used."
        )
    state: dict[str, Any] = torch.load(io.BytesIO(content), weights_only=True)
    return state


def checkpoint_soft_prompt(
    run_dir: Path, step: int, model: PreTrainedModel, method: PeftMethod = "prompt_tuning"
) -> torch.Tensor:
    """The soft prompt of the run's checkpoint at `step`, checked against `method` (the run's),
    on the model's device and in its dtype (what a deployment of that checkpoint serves)."""
    import torch

    from granite_tuner.backends.local._prefix import soft_prompt_width

    found = [c for c in list_checkpoints(run_dir) if c.manifest.step == step]
    if not found:
        kept = ", ".join(str(c.manifest.step) for c in list_checkpoints(run_dir)) or "none"
        raise ConfigurationError(
            f"Tuning run {run_dir.name} has no checkpoint at step {step} (kept: {kept})"
        )
    prompt = load_state(found[0])["trainer"]["soft_prompt"]
    width = soft_prompt_width(model, method)
    if prompt.ndim != 2 or prompt.shape[1] != width:
        raise ConfigurationError(
            f"{found[0].state_file} holds a soft prompt of shape {tuple(prompt.shape)}, which "
            f"does not fit this model ({method}: (virtual tokens, {width}))."
        )
    weight = model.get_input_embeddings().weight
    assert isinstance(weight, torch.Tensor)
    result: torch.Tensor = prompt.to(device=weight.device, dtype=weight.dtype)
    return result


def latest_valid(run_dir: Path) -> tuple[Checkpoint, dict[str, Any]] | None:
    """The newest checkpoint whose state passes its checksum, and that state; each newer one
    that fails is skipped with a warning naming its file. None when none is usable."""
    for checkpoint in reversed(list_checkpoints(run_dir)):
        try:
            return checkpoint, load_state(checkpoint)
        except ConfigurationError as exc:
            logger.warning("Skipping checkpoint: %s Using the one before it.", exc.message)
        except Exception as exc:  # torch's unpickler raises its own types for bad files
            logger.warning(
                "Skipping checkpoint %s: it cannot be loaded (%s). Using the one before it.",
                checkpoint.state_file,
                exc,
            )
    return None


def prune(run_dir: Path, *, keep_last: int, best_epoch: int | None) -> None:
    """Remove the checkpoints that are neither among the newest `keep_last` nor the best
    epoch's (call it after a newer checkpoint is whole)."""
    checkpoints = list_checkpoints(run_dir)
    keep = {c.manifest.step for c in checkpoints[-keep_last:]} if keep_last > 0 else set()
    for checkpoint in checkpoints:
        m = checkpoint.manifest
        if m.step in keep or (m.end_of_epoch and best_epoch is not None and m.epoch == best_epoch):
            continue
        _remove(checkpoint.folder)


def remove_scratch(run_dir: Path) -> None:
    """Remove what a killed writer left half-made among the checkpoints (dot names)."""
    with contextlib.suppress(OSError):
        for leftover in (run_dir / CHECKPOINTS).glob(".*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _remove(folder: Path) -> None:
    """Rename out of sight first, so no half-deleted checkpoint is ever listed."""
    graveyard = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex}")
    try:
        folder.rename(graveyard)
    except FileNotFoundError:
        return
    shutil.rmtree(graveyard, ignore_errors=True)


def _sync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable (POSIX; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class RunLock:
    """The one process that trains a run holds this (an exclusive, non-blocking `flock`)."""

    def __init__(self, run_dir: Path, run_id: str) -> None:
        self.path = run_dir / _LOCK
        self.run_id = run_id
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `RunInUseError` at once if someone holds it."""
        try:
            import fcntl
        except ImportError:  # not POSIX: the owner-alive check in the store is all there is
            return
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise RunInUseError(
                f"Tuning run {self.run_id} is being trained by another process (or client) "
                "right now; wait for it, or cancel it, before resuming it.",
                run_id=self.run_id,
            ) from None
        except BaseException:
            os.close(descriptor)
            raise
        self._descriptor = descriptor
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        """Let go (closing the file drops the flock); safe to call twice."""
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)
