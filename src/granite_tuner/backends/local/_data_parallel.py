"""Data-parallel prompt tuning on PyTorch's own distributed engine (`torch.distributed`).

One process per rank, started by `torchrun`; gloo on the CPU, NCCL on CUDA. Why it is built
this way:

- Every rank holds the frozen base model and the whole (small) data set, so every rank plans
  the very batches one process would (same seed, same order). Each batch is split over the
  ranks by a fixed stride (`indices[rank::world_size]`): the global batch, the number of steps
  and the learning-rate schedule mean what they mean in one process.
- A rank's loss for its share of a batch is its summed token loss divided by the *whole*
  batch's target tokens, so the sum over ranks is exactly the single-process batch loss and its
  gradient. The soft prompt is the only trainable tensor, so one `all_reduce` (sum) of its
  gradient per step, with the batch losses and a stop flag packed into the same tensor, does
  what `DistributedDataParallel` would: DDP's bucketing and overlap buy nothing for one tensor
  of a few kilobytes, its averaging would have to be undone for the token weighting, and it
  needs the forward pass to go through its wrapper, which PEFT's prompt path does not.
- Rank 0 is the leader: it alone reads the run store, writes run.json, checkpoints and the
  adapter, and validates (see `docs/scaling.md` for why validation stays on rank 0). It sends
  the others the job (data, settings) once, and its trainer state before the first step, so a
  resumed run, whatever its number of processes, starts every rank from the same state.
- A stop (cancel) travels in the per-step all-reduce, so every rank stops at the same step;
  early stopping travels with the validation result. A rank that dies breaks the next
  collective on the others (or times out, `timeout` on the process group), so nothing hangs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist

from granite_tuner._secrets import get_logger
from granite_tuner.backends.local._launching import DEFAULT_COLLECTIVE_TIMEOUT
from granite_tuner.backends.local._precision import autocast
from granite_tuner.backends.local._training import (
    PromptTrainer,
    StepResult,
    TrainingCancelled,
    TrainingConfig,
    collate,
)
from granite_tuner.backends.local._validating import ValidationScore
from granite_tuner.data import Example
from granite_tuner.errors import ConfigurationError

if TYPE_CHECKING:
    import threading

    from granite_tuner.backends.local._models import LoadedModel, ModelCache

__all__ = [
    "DEFAULT_COLLECTIVE_TIMEOUT",
    "DataParallelTrainer",
    "Job",
    "Leader",
    "Rank",
    "follow",
    "join_process_group",
]

logger = get_logger("granite_tuner.local")

_T = TypeVar("_T")


@dataclass(frozen=True)
class Rank:
    """This process's place in the process group, and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_leader(self) -> bool:
        return self.rank == 0


def join_process_group(device_type: str, *, timeout: float) -> Rank:
    """Join the group `torchrun` set up (RANK, WORLD_SIZE, MASTER_ADDR... in the environment).

    gloo on the CPU, NCCL on CUDA (one GPU per local rank). `timeout` bounds every collective:
    a rank that stops answering fails the run after that many seconds instead of hanging it.
    """
    missing = [
        n for n in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if n not in os.environ
    ]
    if missing:
        raise ConfigurationError(
            f"{', '.join(missing)} not set: start this entry point with torchrun "
            "(python -m torch.distributed.run --nproc-per-node N -m "
            "granite_tuner.backends.local.distributed ...), or use "
            "`granite-tuner tune --local --nproc N`, which does."
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    return Rank(dist.get_rank(), dist.get_world_size(), local_rank, device)


@dataclass(frozen=True)
class Job:
    """What the leader sends every other rank before training: the model and the data."""

    base_model: str
    training: list[Example]
    config: TrainingConfig


def _broadcast(value: _T | None, rank: Rank) -> _T | None:
    """The leader's `value`, on every rank (pickled; for small objects only)."""
    box: list[Any] = [value if rank.is_leader else None]
    dist.broadcast_object_list(
        box, src=0, device=rank.device if rank.device.type == "cuda" else None
    )
    result: _T | None = box[0]
    return result


def _on_cpu(value: _T) -> _T:
    """`value` with every tensor moved to the CPU (what is sent between ranks)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()  # type: ignore[return-value]
    if isinstance(value, dict):
        return {key: _on_cpu(item) for key, item in value.items()}  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        return type(value)(_on_cpu(item) for item in value)
    return value


class DataParallelTrainer(PromptTrainer):
    """A `PromptTrainer` that trains its share of every batch and all-reduces the gradient.

    Built on every rank with the same data and settings; `step()` must be called the same
    number of times on every rank (they all return None, or raise `TrainingCancelled`, at the
    same step). Validation data is given to the leader only.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        examples: Sequence[Example],
        config: TrainingConfig,
        *,
        rank: Rank,
        validation: Sequence[Example] = (),
        cancel: threading.Event | None = None,
    ) -> None:
        super().__init__(loaded, examples, config, validation=validation, cancel=cancel)
        self.rank = rank
        self._synced = False

    def step(self) -> StepResult | None:
        if not self._synced:
            # The leader's state (fresh, or loaded from a checkpoint) becomes everyone's.
            state = _broadcast(
                _on_cpu(self.state_dict()) if self.rank.is_leader else None, self.rank
            )
            if not self.rank.is_leader:
                assert state is not None
                self.load_state_dict(state)
            self._synced = True
        return super().step()

    def _accumulate(self, group: list[list[int]]) -> float:
        rank = self.rank
        device = self._soft_prompt.device
        pieces: list[torch.Tensor] = []
        for indices in group:
            mine = indices[rank.rank :: rank.world_size]
            if not mine:  # a short last batch: nothing here for this rank
                pieces.append(torch.zeros((), device=device))
                continue
            batch = collate([self.examples[i] for i in mine], self._pad_id)
            whole = sum(len(self.examples[i].target_ids) for i in indices)
            with autocast(self.loaded.device, self.config.precision):
                loss = self.batch_loss(batch, mine) * (batch.num_target_tokens / whole)
            torch.autograd.backward(loss / len(group))
            pieces.append(loss.detach().float())
        stop = self._cancel is not None and self._cancel.is_set()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._trainable]
        packed = torch.cat(
            [
                *(g.float().reshape(-1) for g in grads),
                torch.stack(pieces).to(device),
                torch.tensor([1.0 if stop else 0.0], device=device),
            ]
        )
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        if packed[-1].item() > 0:
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingCancelled
        offset = 0
        for parameter, grad in zip(self._trainable, grads, strict=True):
            size = grad.numel()
            parameter.grad = packed[offset : offset + size].view_as(grad).to(grad.dtype).clone()
            offset += size
        return float(packed[offset : offset + len(group)].sum())

    def _validate(self, epoch: int) -> ValidationScore | None:
        score = super()._validate(epoch) if self.rank.is_leader else None
        outcome = _broadcast((score, self.best_epoch, self.stopped), self.rank)
        assert outcome is not None
        if not self.rank.is_leader:
            score, self.best_epoch, self.stopped = outcome
            if score is not None:
                self.validation_scores.append(score)
        return score


class Leader:
    """Rank 0's trainer factory: sends the job to the other ranks, then trains with them.

    `TrainingRunner` builds its trainer through this instead of `PromptTrainer`, so the run
    store, checkpoints, validation and the run's record work as in one process.
    """

    def __init__(self, rank: Rank) -> None:
        self.rank = rank
        self.sent = False

    def __call__(
        self,
        loaded: LoadedModel,
        examples: Sequence[Example],
        config: TrainingConfig,
        *,
        validation: Sequence[Example] = (),
        cancel: threading.Event | None = None,
    ) -> PromptTrainer:
        self.send(Job(base_model=loaded.name, training=list(examples), config=config))
        return DataParallelTrainer(
            loaded, examples, config, rank=self.rank, validation=validation, cancel=cancel
        )

    def send(self, job: Job | None) -> None:
        """Tell the other ranks what to train (None: nothing, the run ended before training)."""
        if not self.sent:
            self.sent = True
            _broadcast(job, self.rank)


def follow(rank: Rank, models: ModelCache, *, model: str | None = None) -> bool:
    """What a rank other than 0 does: wait for the job, then train its share to the end.

    `model`, the base model the run is expected to tune, is loaded first, while rank 0 loads
    it too, so the wait for the job (a collective, under the group's timeout) is not spent
    loading. Returns False when the leader sent no job (its run ended before training).
    """
    if model is not None:
        models.get_sync(model)
    job: Job | None = _broadcast(None, rank)
    if job is None:
        return False
    loaded = models.get_sync(job.base_model)
    trainer = DataParallelTrainer(loaded, job.training, job.config, rank=rank)
    try:
        trainer.train()
    except TrainingCancelled:
        logger.info("Rank %d: the run was stopped", rank.rank)
    return True
